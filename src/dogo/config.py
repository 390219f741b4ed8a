"""The run configuration: one typed, validated schema, loaded from YAML with dotted overrides.

A config file looks like (every key optional except ``train.models``)::

    name: fmnist-dogo
    seed: 0
    dataset: {name: fashion-mnist, image_size: 32}
    train:
      epochs: 20
      batch_size: 256
      models:                       # the cohort; one entry = the single-model SSL baseline
        - {objective: simclr, backbone: resnet18, width: 0.25, distill_weight: 1.0}
        - {objective: simclr, backbone: resnet18}
    distill: {temperature: 0.1, reduction: official, views: independent}
    logging: {log_every: 50, save_every: 10}

Unknown keys are errors that name the key and the nearest valid one; values are checked for
type and range before any work starts. ``load_config`` also reads the reference's own YAML
files (see :mod:`dogo.reference_config`).
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dogo.errors import ConfigError
from dogo.registry import nearest


class Schema(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Schema):
    name: str = Field("digits", description="dataset registry name (see `dogo datasets`)")
    root: str | None = Field(None, description="folder holding the files; else $DOGO_DATA and system locations")
    split: str = Field("train", description="split used for pretraining")
    eval_split: str | None = Field("test", description="labelled split for the online kNN monitor and probes")
    image_size: int = Field(32, ge=8, le=1024, description="side of the square training views in pixels")
    download: bool = Field(False, description="download from the public URL when missing (checksummed)")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options, e.g. {limit: 1000}")
    store: Literal["auto", "on", "off"] = Field(
        "auto", description="read from a memory-mapped image store (`dogo prepare`) shared by all processes: on "
        "(prepared on first use), off (decode into memory), auto: a prepared store if there is one, else memory "
        "unless a folder/list split decodes to 1 GiB or more")
    store_dir: str | None = Field(None, description="folder of image stores (default $DOGO_DATA/stores, "
                                  "else ~/.cache/dogo/stores)")

    @field_validator("store", mode="before")
    @classmethod
    def _bool_to_choice(cls, value: Any) -> Any:  # YAML reads on/off as booleans
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class OptimizerConfig(Schema):
    name: Literal["adam", "adamw", "sgd", "lars"] = "adam"
    lr: float = Field(3e-4, gt=0, le=10)
    weight_decay: float = Field(1e-6, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD and LARS only")

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ScheduleConfig(Schema):
    name: Literal["constant", "cosine"] = Field("constant", description="per-step learning-rate schedule")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0, in epochs")
    min_lr: float = Field(0.0, ge=0, description="final learning rate of the cosine schedule")


class PeerConfig(Schema):
    name: str | None = Field(None, description="label in logs and reports (default: backbone@width)")
    objective: str = Field("simclr", description="SSL objective: simclr | simsiam")
    backbone: str = Field("resnet18", description="backbone registry name")
    width: float = Field(1.0, gt=0, le=8, description="channel width multiplier")
    n_proj: int | None = Field(None, ge=1, description="projection size (simclr 128, simsiam 2048)")
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature (simclr)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ssl_weight: float = Field(1.0, ge=0, description="weight of this peer's own SSL loss")
    distill_weight: float = Field(1.0, ge=0, description="lambda: weight of this peer's KL term")
    trainable: bool = Field(
        True, description="false: a frozen peer (no optimiser, no gradient, BatchNorm in eval mode) that "
        "still teaches the others through the KL term",
    )

    def label(self) -> str:
        if self.name:
            return self.name
        width = "" if self.width == 1 else f"x{self.width:g}"
        return f"{self.backbone}{width}-{self.objective}"


class DistillConfig(Schema):
    temperature: float = Field(0.1, gt=0, description="tau of the cross-view similarity softmax")
    reduction: Literal["official", "batchmean"] = Field(
        "official", description="official: sum over the NxN entries / N^2 (the reference); batchmean: / N"
    )
    views: Literal["independent", "shared"] = Field(
        "independent", description="independent: each peer draws its own two views (the reference)"
    )


class TrainConfig(Schema):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    models: list[PeerConfig] = Field(default_factory=lambda: [PeerConfig()], min_length=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device runs it fast (measured), else fp32 on CPU and "
        "fp16 (with a GradScaler per peer) on CUDA; fp16 is for CUDA GPUs without bf16 and refused on CPU"
    )
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = Field(False, description="torch.compile the backbones")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    allocator: Literal["auto", "retain", "system"] = Field(
        "auto", description="retain: keep freed memory for the next step instead of returning it to the OS "
        "(glibc; no page faults per step, measured +5-10 % bf16 and +40 % fp32 on CPU); system: libc's defaults; "
        "auto: retain for CPU training on Linux",
    )
    concurrent_peers: Literal["auto", "on", "off"] = Field(
        "auto", description="run the peers' forward and backward side by side, a thread and a share of the cores "
        "each (measured +7 % for two ResNet-18s on a 2-core CPU); auto: on CPU, in one process, without compile, "
        "for peers of the same backbone and width",
    )
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (smoke runs)")
    nonfinite: Literal["stop", "skip"] = Field("stop", description="on a non-finite loss: stop or skip the step")
    sync_batchnorm: Literal["auto", "on", "off"] = Field(
        "auto",
        description="distributed runs only: BatchNorm statistics over the global batch. auto: in the heads "
        "(SimCLR's global BN; SimSiam's heads too); on: every BN layer, backbones included (the same "
        "numbers as one process with the global batch); off: per-rank statistics",
    )
    dist_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend under torchrun: auto = nccl on CUDA, gloo on CPU"
    )

    @field_validator("channels_last", "sync_batchnorm", "concurrent_peers", mode="before")
    @classmethod
    def _bool_to_choice(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class LoggingConfig(Schema):
    log_every: int = Field(50, ge=1, description="steps between metrics.jsonl lines")
    save_every: int = Field(10, ge=0, description="epochs between checkpoints/epoch-N.pt (0: never)")
    save_every_steps: int = Field(0, ge=0, description="steps between mid-epoch checkpoints (0: never)")
    knn_every: int = Field(1, ge=0, description="epochs between online kNN evaluations (0: never)")
    knn_k: int = Field(200, ge=1)
    knn_temperature: float = Field(0.1, gt=0)
    monitor_limit: int | None = Field(
        10000, ge=1, description="images of each monitor split (train bank and eval queries) used for kNN"
    )
    tensorboard: bool = True
    progress: bool = True
    keep_last: int | None = Field(None, ge=0, description="keep only the newest K checkpoints/epoch-N.pt (None: all)")
    keep_previous: bool = Field(False, description="keep checkpoints/last.prev.pt after the run has finished")


class EvalConfig(Schema):
    dataset: DatasetConfig | None = Field(None, description="labelled dataset for probes (default: the training one)")
    linear: dict[str, Any] = Field(default_factory=dict, description="linear-probe settings (see `dogo evaluate --help`)")
    cache_max_mb: float | None = Field(1024, ge=0, description="cap of RUN_DIR/cache/features in MB; the least "
                                       "recently used files go first (None: no cap)")


class RunConfig(Schema):
    name: str = Field("run", description="run name; the default run directory is runs/<name>-<timestamp>")
    seed: int = Field(0, ge=0)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_cohort(self) -> "RunConfig":
        from dogo.models import BACKBONES
        from dogo.objectives import OBJECTIVES

        for i, peer in enumerate(self.train.models):
            for key, registry in (("backbone", BACKBONES), ("objective", OBJECTIVES)):
                value = getattr(peer, key)
                if value not in registry:
                    raise ValueError(
                        f"train.models.{i}.{key}: unknown {registry.kind} {value!r}"
                        f"{nearest(value, registry.names())}; choose one of {', '.join(registry.names())}"
                    )
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys, got {type(data).__name__}")
    return data


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.models.0.lr=1e-3'`` -> (['train', 'models', '0', 'lr'], 0.001)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads '1e-3' as a string; a number is meant
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set a dotted path inside nested dicts/lists, creating missing mappings."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        dotted = ".".join(path[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise ConfigError(f"override {'.'.join(path)}: {dotted} is not an index of a list of {len(node)} "
                                  f"(use 0..{len(node) - 1}, or {len(node)} to append an entry)")
            if int(part) == len(node):  # one past the end appends: train.models.1=... adds a peer
                node.append(value if last else {})
                node = node[-1]
                continue
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[:depth])} is a value, not a section")


def valid_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (list items as ``.0``), for 'did you mean' hints."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        for candidate in (annotation, *args):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys += valid_keys(candidate, dotted + ".")
            inner = getattr(candidate, "__args__", ())
            for item in inner:
                if isinstance(item, type) and issubclass(item, BaseModel):
                    keys += valid_keys(item, dotted + ".0.")
    return keys


def _explain(error: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's report into one line naming the key, the value and what is allowed."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        generic = [k.replace(".0.", ".N.") for k in valid_keys()]
        wanted = ".".join("N" if p.isdigit() else p for p in key.split("."))
        close = difflib.get_close_matches(wanted, generic, n=1, cutoff=0.6)
        if not close:  # compare the last part only, within the same section
            section = wanted.rpartition(".")[0]
            siblings = [k for k in generic if k.rpartition(".")[0] == section]
            leaf = difflib.get_close_matches(wanted, siblings, n=1, cutoff=0.0)
            close = leaf
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{source}: unknown key {key!r}{hint}")
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    where = f"{key}: " if key else ""
    return ConfigError(f"{source}: {where}{message}{shown}")


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a RunConfig; errors become one-line ConfigErrors."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_config(path: str | Path | None, overrides: list[str] = (), *, warn=warnings.warn) -> RunConfig:
    """Load a dogo (or reference) YAML file, apply ``key=value`` overrides, validate.

    Reference-schema files are translated by :func:`dogo.reference_config.from_reference`; the
    keys the reference itself ignores produce one warning through ``warn``.
    """
    from dogo.reference_config import from_reference, is_reference_config

    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    if is_reference_config(data):
        data, notes = from_reference(data, source)
        if notes:
            warn(f"{source}: " + "; ".join(notes))
    if path is not None and "name" not in data:
        data["name"] = Path(path).stem
    if overrides:
        # Overrides apply on top of the validated file, defaults filled in (so train.models.0 exists).
        data = build_config(data, source).dump()
        for text in overrides:
            apply_override(data, *parse_override(text))
    return build_config(data, source)
