"""Reader options (``dataset.options``): one pydantic model per kind of reader.

A reader's :class:`~dogo.data.base.DatasetSpec` names its model (``options=FolderOptions``).
:func:`check_options` validates a mapping against it, both when a config is read (so a typo in
``dataset.options`` is an error before any work starts) and in :func:`dogo.data.load_dataset`.
An unknown key is a one-line :class:`~dogo.core.errors.ConfigError` naming the dataset, the key and the
nearest valid one. Options set to ``None`` count as not given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from dogo.core.errors import ConfigError
from dogo.core.registry import nearest

#: Seed of the class-balanced subset ``limit`` takes on readers whose files come grouped by class.
#: Fixed, so that a limited dataset is a function of its options alone: the training split, the
#: evaluation readers and a prepared image store of a run all hold the same images.
LIMIT_SEED = 0

LONG_TAIL_KEYS = ("n_max", "n_min", "gamma")


class LongTail(BaseModel):
    """The long-tail rule's parameters (:mod:`dogo.data.longtail`); unset ones keep their defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_max: StrictInt | None = Field(default=None, ge=1, description="images kept of the first class")
    n_min: StrictInt | None = Field(default=None, ge=1, description="images kept of the last class")
    gamma: float | None = Field(default=None, gt=0, description="steepness of the tail")

    @field_validator("gamma", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            raise ValueError(f"long_tail.gamma must be a number, got {value!r}")
        return value


class DatasetOptions(BaseModel):
    """Options every reader takes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    limit: StrictInt | None = Field(
        default=None,
        ge=1,
        description="keep N images. Readers whose files come grouped by class (image folders, file lists) take a "
        f"class-balanced subset: as equal a number per class as the classes allow, drawn with the fixed seed "
        f"{LIMIT_SEED} (the same images for training, evaluation and stores), kept in file order. Readers whose "
        "files are already shuffled (IDX, CIFAR, STL-10, digits) keep the first N.",
    )
    long_tail: bool | LongTail | None = Field(
        default=None, description="true or {n_max, n_min, gamma}: subsample long-tailed (CIFAR-10-Imbalanced's rule)"
    )
    bad_files: Literal["refuse", "skip"] | None = Field(
        default=None, description="what folder and list readers do with files they cannot decode"
    )

    @field_validator("long_tail", mode="before")
    @classmethod
    def _long_tail(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if key not in LONG_TAIL_KEYS:
                    raise ValueError(
                        f"unknown long_tail key {key!r}{nearest(str(key), list(LONG_TAIL_KEYS))}; "
                        f"accepted: {', '.join(LONG_TAIL_KEYS)}"
                    )
        elif value is not None and not isinstance(value, bool):
            raise ValueError(f"long_tail must be true or a mapping of {', '.join(LONG_TAIL_KEYS)}")
        return value


class ImageFileOptions(DatasetOptions):
    """Readers that decode image files (folders, file lists)."""

    image_size: StrictInt | None = Field(
        default=None, ge=1, description="side the images are resized and cropped to (default 64)"
    )


class FileListOptions(ImageFileOptions):
    """The generic ``filelist`` reader."""

    list_file: str | None = Field(default=None, description="the 'path label' list under root; may contain {split}")


def check_options(name: str, model: type[DatasetOptions], options: Any) -> dict[str, Any]:
    """``options`` validated against ``model`` for dataset ``name``; returns the ones given (not None).

    Raises ConfigError: ``fashion-mnist: unknown option 'limt' (did you mean 'limit'?); fashion-mnist
    takes: limit, long_tail, bad_files``, or ``<name>: option limit: <what is wrong> (got 0)``.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{name}: options must be a mapping, got {type(options).__name__}")
    valid = list(model.model_fields)
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{name}: unknown option {key!r}{nearest(str(key), valid)}; {name} takes: {', '.join(valid)}"
            )
    given = {key: value for key, value in options.items() if value is not None}
    try:
        model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"][:1])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: option {key}: {message} (got {first.get('input')!r})") from None
    return given
