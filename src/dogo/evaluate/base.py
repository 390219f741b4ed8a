"""What every evaluation protocol shares: the registries, settings parsing, seeds, result dicts.

A protocol is one module with a pydantic settings class and a ``run`` function registered with
:func:`dogo.evaluate.inputs.protocol` (which fills the registries kept here)::

    @protocol("linear", LinearSettings)
    def run(encoder, train, test, settings, *, image_size, device, feature_cache) -> dict: ...

``PROTOCOLS.get(name)`` returns ``run``; ``PROTOCOL_SETTINGS[name]`` its settings class.
``run`` returns a JSON-able dict made by :func:`make_result`: the numbers, the full settings,
the dogo version and a ``summary`` ({column label: accuracy}) that the report tabulates.
Accuracies are percentages (0-100) everywhere in ``dogo.evaluate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import torch
import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

import dogo
from dogo.config.probe import ProtocolSettings
from dogo.core.errors import ConfigError, DataError
from dogo.core.registry import Registry, nearest

if TYPE_CHECKING:
    from dogo.data import ImageDataset

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_SETTINGS",
    "CommaList",
    "ProtocolSettings",
    "Rate",
    "aggregate",
    "derive_seed",
    "labelled",
    "make_result",
    "num_classes_of",
    "parse_settings",
]

PROTOCOLS: Registry[Callable[..., dict]] = Registry("evaluation protocol")
PROTOCOL_SETTINGS: dict[str, type[ProtocolSettings]] = {}


def _split_commas(value: Any) -> Any:
    """Let ``key=0.01,0.1`` on the command line mean a list (YAML ``[0.01, 0.1]`` works too)."""
    if isinstance(value, str):
        return [yaml.safe_load(part) for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return value


T = TypeVar("T")

#: ``list[X]`` that also takes ``key=a,b`` (a comma-separated string) or a single value.
CommaList = Annotated[list[T], BeforeValidator(_split_commas)]
#: A rate or fraction in [0, 1].
Rate = Annotated[float, Field(ge=0, le=1)]


def parse_settings(name: str, overrides: Mapping[str, Any] | Sequence[str] = ()) -> ProtocolSettings:
    """Validated settings of protocol ``name`` from ``{key: value}`` or CLI ``["key=value", ...]``.

    String values are read as YAML (``lr=1e-3``, ``finetune=true``, ``rates=[0.2,0.4]``); list
    settings also take ``rates=0.2,0.4``. Raises :class:`ConfigError` naming the bad key.
    """
    cls = PROTOCOL_SETTINGS.get(name)
    if cls is None:
        PROTOCOLS.get(name)  # raises the registry's "unknown protocol ... did you mean" error
        # unreachable: protocol() registers both
        raise ConfigError(f"protocol {name!r} has no settings class; register it with the @protocol decorator")
    values: dict[str, Any] = {}
    if isinstance(overrides, Mapping):
        values.update(overrides)
    else:
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{name} setting {item!r} is not key=value; write it as key=value, e.g. k=20")
            try:
                values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                raise ConfigError(
                    f"{name} setting {item!r}: its value is not valid YAML; close its brackets or quote it"
                ) from None
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        known = sorted(cls.model_fields)
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(settings)"
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}{nearest(key, known)}")
            elif e["type"] == "missing":
                problems.append(f"{key}: required, and not given")
            else:
                problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"bad {name} settings: {'; '.join(problems)}; known keys: {', '.join(known)}") from None


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, e.g. ``derive_seed(seed, "fewshot", 0.01, draw)``.

    Unlike ``seed + draw`` it never makes two different (seed, draw) pairs collide, and each
    part (fraction, rate, corruption) gets a stream of its own whatever else runs first.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def labelled(dataset: ImageDataset, role: str) -> torch.Tensor:
    """The labels of ``dataset``, or a :class:`DataError` if it has none."""
    if dataset.labels is None:
        raise DataError(
            f"the {role} split of {dataset.name!r} ({dataset.source}) has no labels; "
            "evaluation needs a labelled split (e.g. train/test, not unlabeled)"
        )
    return dataset.labels


def num_classes_of(*datasets: ImageDataset) -> int:
    """Number of classes: the class-name list when there is one, else 1 + the largest label."""
    for ds in datasets:
        if ds.classes:
            return len(ds.classes)
    return 1 + max(int(ds.labels.max()) for ds in datasets if ds.labels is not None)


def make_result(
    name: str,
    settings: BaseModel,
    *,
    train: ImageDataset,
    test: ImageDataset,
    image_size: int,
    summary: Mapping[str, float],
    variant: str | None = None,
    **numbers: Any,
) -> dict:
    """The JSON-able result dict of one protocol run.

    ``summary`` holds the headline accuracies, keyed by the column label the report shows
    (e.g. ``{"linear": 91.2}``); ``variant`` (e.g. the transfer dataset) goes into the file
    name given by :func:`dogo.evaluate.save_result` so that variants do not overwrite each other.
    """
    return {
        "protocol": name,
        "variant": variant,
        "dogo_version": dogo.__version__,
        "settings": settings.model_dump(mode="json"),
        "train_dataset": train.name,
        "test_dataset": test.name,
        "image_size": image_size,
        "summary": {k: float(v) for k, v in summary.items()},
        **numbers,
    }


def aggregate(draws: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Per key: the list over draws, and ``<key>_mean`` / ``<key>_std`` (sample std, 0 for one).

    Keys missing from the draws (e.g. ``finetune_top1`` when not fine-tuning) are left out.
    """
    out: dict[str, Any] = {}
    for key in keys:
        values = [d[key] for d in draws if d.get(key) is not None]
        if not values:
            continue
        t = torch.tensor(values, dtype=torch.float64)
        out[key] = values
        out[f"{key}_mean"] = float(t.mean())
        out[f"{key}_std"] = float(t.std()) if len(values) > 1 else 0.0
    return out


def add_draws_row(
    rows: list[dict[str, Any]],
    summary: dict[str, float],
    label: str,
    draws: list[dict[str, Any]],
    finetune: bool,
    keys: Sequence[str] = ("test_top1", "finetune_top1"),
    **fields: Any,
) -> None:
    """Append one budget's row (``fields``, mean/std of ``keys`` over the draws, the draws) and its
    summary columns ``label`` (probe) and, when fine-tuning, ``label`` with ``-ft`` after its first word."""
    row = {**fields, **aggregate(draws, list(keys)), "draws": draws}
    rows.append(row)
    summary[label] = row["test_top1_mean"]
    if finetune:
        first, _, rest = label.partition(" ")
        summary[f"{first}-ft {rest}"] = row["finetune_top1_mean"]
