"""The whole run's config (:class:`RunConfig`) with its ``dataset``, ``logging`` and ``eval`` sections, and
the dotted-key helpers that compare runs (:data:`RUNTIME_KEYS`, :func:`flatten`, :func:`under`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from dogo.config.base import Schema
from dogo.config.probe import ProbeSettings
from dogo.config.training import DistillConfig, TrainConfig
from dogo.core.errors import ConfigError
from dogo.core.registry import nearest


class Normalization(Schema):
    """Per-channel statistics the views and the evaluation transform normalise with (RGB, in [0, 1] units)."""

    mean: list[float] = Field(description="3 values (or 1, for all three channels)")
    std: list[float] = Field(description="3 values > 0 (or 1, for all three channels)")

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _three(cls, value: Any, info: ValidationInfo) -> Any:
        values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(values, (list, tuple)) or len(values) not in (1, 3):
            raise ValueError(f"{info.field_name} takes 3 numbers (R, G, B) or 1 for all three")
        values = list(values) * (3 if len(values) == 1 else 1)
        if info.field_name == "std" and any(isinstance(v, (int, float)) and v <= 0 for v in values):
            raise ValueError("std values must be > 0")
        return values


#: ``dataset.normalization`` choices besides explicit statistics.
NORMALIZATION_CHOICES = ("data", "reference")


class DatasetConfig(Schema):
    name: str = Field(default="digits", description="dataset registry name (see `dogo datasets`)")
    root: str | None = Field(default=None, description="folder holding the files; else $DOGO_DATA and system locations")
    split: str = Field(default="train", description="split used for pretraining")
    eval_split: str | None = Field(default="test", description="labelled split for the online kNN monitor and probes")
    image_size: int = Field(default=32, ge=8, le=1024, description="side of the square training views in pixels")
    download: bool = Field(default=False, description="download from the public URL when missing (checksummed)")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="reader options, e.g. {limit: 1000}, typed per "
        "reader (dogo.data.options; limit on folders and lists: a class-balanced subset, seed 0)",
    )
    store: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="read from a memory-mapped image store (`dogo prepare`) shared by all processes: on "
        "(prepared on first use), off (decode into memory), auto: a prepared store if there is one, else memory "
        "unless a folder/list split decodes to 1 GiB or more",
    )
    store_dir: str | None = Field(
        default=None, description="folder of image stores (default $DOGO_DATA/stores, else ~/.cache/dogo/stores)"
    )
    normalization: Literal["data", "reference"] | Normalization = Field(
        default="data",
        description="what views and evaluation normalise with: data (per-channel mean and std of the "
        "training split, computed when a run starts and recorded in its config.yaml as {mean, std}), reference "
        "(the reference's statistics keyed on image_size: 32 px CIFAR-10's, 64 Tiny-ImageNet's, 96 0.5, else "
        "ImageNet's), or {mean: [r, g, b], std: [r, g, b]}",
    )

    @field_validator("normalization", mode="before")
    @classmethod
    def _normalization_choice(cls, value: Any) -> Any:
        if (isinstance(value, str) and value not in NORMALIZATION_CHOICES) or not isinstance(
            value, (str, dict, Normalization)
        ):
            raise ValueError(
                f"choose {' or '.join(NORMALIZATION_CHOICES)}, or give {{mean: [r, g, b], std: [r, g, b]}}"
            )
        if isinstance(value, dict):  # one error naming the key, not one per member of the union
            try:
                return Normalization.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{key}: {first['msg'].removeprefix('Value error, ')}") from None
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _bool_to_choice(cls, value: Any) -> Any:  # YAML reads on/off as booleans
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("options")
    @classmethod
    def _reader_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from dogo.data import dataset_options  # typed per reader (dogo.data.options)

        try:
            dataset_options(info.data.get("name", ""), value, if_known=True)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class MlflowConfig(Schema):
    tracking_uri: str | None = Field(
        default=None,
        description="where runs go: sqlite:///mlflow.db (a local store), "
        "http://host:5000 (a server); default: $MLFLOW_TRACKING_URI, else MLflow's own",
    )
    experiment: str = Field(default="dogo", min_length=1, description="MLflow experiment (created when missing)")
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="seconds MLflow has to answer each call (the first makes a new local store's tables)",
    )
    on_error: Literal["stop", "continue"] = Field(
        default="stop",
        description="MLflow failing or not answering: stop (before any training, when it fails at the start) "
        "or continue without it",
    )


class LoggingConfig(Schema):
    log_every: int | None = Field(
        default=None,
        ge=1,
        description="steps between metrics.jsonl lines (default: by the run's "
        "length, every step of a run of up to 200 steps, at most every 50)",
    )
    save_every: int = Field(default=10, ge=0, description="epochs between checkpoints/epoch-N.pt (0: never)")
    save_every_steps: int = Field(default=0, ge=0, description="steps between mid-epoch checkpoints (0: never)")
    knn_every: int = Field(default=1, ge=0, description="epochs between online kNN evaluations (0: never)")
    knn_k: int = Field(default=200, ge=1)
    knn_temperature: float = Field(default=0.1, gt=0)
    monitor_limit: int | None = Field(
        default=10000, ge=1, description="images of each monitor split (train bank and eval queries) used for kNN"
    )
    tensorboard: bool = True
    mlflow: MlflowConfig | None = Field(
        default=None,
        description="also log to MLflow (pip install 'dogo[mlflow]'): "
        "{tracking_uri: sqlite:///mlflow.db, experiment: dogo}; {} for the defaults; "
        "off when absent",
    )
    progress: bool = True
    keep_last: int | None = Field(
        default=None, ge=0, description="keep only the newest K checkpoints/epoch-N.pt (None: all)"
    )
    keep_previous: bool = Field(default=False, description="keep checkpoints/last.prev.pt after the run has finished")


class EvalConfig(Schema):
    dataset: DatasetConfig | None = Field(
        default=None, description="labelled dataset for probes (default: the training one)"
    )
    linear: dict[str, Any] = Field(
        default_factory=dict, description="linear-probe settings (see `dogo evaluate --help`)"
    )
    cache_max_mb: float | None = Field(
        default=1024,
        ge=0,
        description="cap of RUN_DIR/cache/features in MB; the least recently used files go first (None: no cap)",
    )

    @field_validator("linear")
    @classmethod
    def _probe_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked now, against the probe's own schema, rather than when `dogo evaluate` runs
        # after hours of training.
        try:
            ProbeSettings.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            known = ", ".join(sorted(ProbeSettings.model_fields))
            if first["type"] == "extra_forbidden":
                raise ValueError(
                    f"unknown probe setting {key!r}{nearest(key, known.split(', '))}; known: {known}"
                ) from None
            raise ValueError(f"probe setting {key}: {first['msg']} (got {first.get('input')!r})") from None
        return value


#: Settings that never change what is trained (where it runs, how it logs, what is evaluated): free to
#: differ on resume, and ignored when a report groups runs that differ only in their seed.
RUNTIME_KEYS = (
    "name",
    "dataset.root",
    "dataset.download",
    "dataset.eval_split",
    "dataset.store",
    "dataset.store_dir",
    "train.device",
    "train.num_threads",
    "train.compile",
    "train.dist_backend",
    "logging",
    "eval",
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists of dicts) -> {dotted key: leaf}; a list of dicts also gives its length."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out[prefix[:-1]] = f"{len(value)} entries"
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = value
    return out


def under(key: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or inside one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


class RunConfig(Schema):
    name: str = Field(
        default="run",
        min_length=1,
        max_length=100,
        description="run name; the default run directory is runs/<name>-<timestamp> "
        "(no path separators, so the run stays under runs/)",
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="random seed (a signed 64-bit integer, >= 0)")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # The name becomes a folder under runs/: it must stay one plain folder name there.
        if value.strip() in (".", "..") or value != value.strip() or re.search(r"[/\\\x00-\x1f]", value):
            raise ValueError(
                "a run name is one folder name: no '/', '\\', control characters, '.', '..' or surrounding spaces"
            )
        return value

    @model_validator(mode="after")
    def _check_cohort(self) -> RunConfig:
        from dogo.models import BACKBONES, backbone_options
        from dogo.objectives import OBJECTIVES, objective_options

        for i, peer in enumerate(self.train.models):
            for key, registry in (("backbone", BACKBONES), ("objective", OBJECTIVES)):
                value = getattr(peer, key)
                if value not in registry:
                    raise ValueError(
                        f"train.models.{i}.{key}: unknown {registry.kind} {value!r}"
                        f"{nearest(value, registry.names())}; choose one of {', '.join(registry.names())}"
                    )
            try:
                options = objective_options(
                    peer.objective, peer.objective_options, f"train.models.{i}.objective_options"
                )
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if options != peer.objective_options:
                peer.objective_options = options
            try:
                options = backbone_options(peer.backbone, peer.backbone_options, f"train.models.{i}.backbone_options")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if options != peer.backbone_options:
                peer.backbone_options = options
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
