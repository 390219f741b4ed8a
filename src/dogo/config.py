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
        - {objective: simsiam, backbone: resnet18, objective_options: {projector_layers: 2}}
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


#: Upper bound of counts (epochs, steps, batch size): large enough for any real run, small enough
#: that arithmetic on it stays exact and nothing tries to precompute a billion of anything.
MAX_COUNT = 10_000_000


class Schema(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: an infinite temperature or warm-up passes every range check (inf > 0)
    # and then trains nothing or overflows an int(); refuse it here, naming the key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    name: Literal["constant", "cosine", "reference-cosine"] = Field(
        "constant", description="per-step learning-rate schedule. cosine: one half-cosine from lr to min_lr over "
        "the run; reference-cosine: the reference's CosineAnnealingLR(T_max=epochs, eta_min=min_lr) stepped once "
        "per batch, a cosine between lr and min_lr with a period of 2 x t_max steps",
    )
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_COUNT, description="linear warm-up from 0, in epochs")
    min_lr: float = Field(0.0, ge=0, description="final learning rate of cosine; eta_min of reference-cosine")
    t_max: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="reference-cosine: T_max in steps (default: the number of epochs, as the reference)"
    )


class PeerConfig(Schema):
    name: str | None = Field(None, description="label in logs, metrics.jsonl keys (peer/<name>/loss) and reports, "
                             "and for --peer (default: <backbone>[x<width>]-<objective>); no '/', not a number, not 'all'")
    objective: str = Field("simclr", description="SSL objective: simclr | simsiam | byol | moco | barlow_twins | vicreg")
    backbone: str = Field("resnet18", description="backbone registry name")
    width: float = Field(1.0, gt=0, le=8, description="channel width multiplier")
    n_proj: int | None = Field(None, ge=1, le=65536, description="projection size (simclr 128, simsiam 2048)")
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature (simclr)")
    objective_options: dict[str, Any] = Field(
        default_factory=dict, description="the objective's own settings, checked against it when the config is "
        "read: simclr {hidden: 512, gather: true}; simsiam {projector_layers: 3, pred_hidden: 512}",
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ssl_weight: float = Field(1.0, ge=0, description="weight of this peer's own SSL loss")
    distill_weight: float = Field(1.0, ge=0, description="lambda: weight of this peer's KL term")
    trainable: bool = Field(
        True, description="false: a frozen peer (no optimiser, no gradient, BatchNorm in eval mode) that "
        "still teaches the others through the KL term",
    )
    init_from: str | None = Field(
        None, description="RUN_DIR[#peer]: start from that run's trained peer (last checkpoint; peer by name or "
        "index, default 0); with trainable: false, offline distillation from it",
    )

    @field_validator("name")
    @classmethod
    def _peer_name(cls, value: str | None) -> str | None:
        # A name keys metrics.jsonl (peer/<name>/...) and is accepted by --peer next to indices.
        if value is not None and ("/" in value or value.isdigit() or value in ("", "all")):
            raise ValueError(f"a peer name has no '/' and is neither a number nor 'all' (got {value!r}): it keys "
                             "metrics.jsonl and --peer, which also take indices")
        return value

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
    epochs: int = Field(10, ge=1, le=MAX_COUNT)
    batch_size: int = Field(256, ge=2, le=MAX_COUNT)
    models: list[PeerConfig] = Field(default_factory=lambda: [PeerConfig()], min_length=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device runs it fast (measured), else fp32 on CPU and "
        "fp16 (with a GradScaler per peer) on CUDA; fp16 is for CUDA GPUs without bf16 and refused on CPU"
    )
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = Field(False, description="torch.compile the backbones")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    num_threads: int | None = Field(None, ge=1, le=4096, description="torch CPU threads (default: all cores)")
    allocator: Literal["auto", "retain", "system"] = Field(
        "auto", description="retain: keep freed memory for the next step instead of returning it to the OS "
        "(glibc; no page faults per step); system: libc's defaults; auto: retain for CPU training on Linux",
    )
    concurrent_peers: Literal["auto", "on", "off"] = Field(
        "auto", description="on: run the peers' forward and backward side by side, a thread and a share of the "
        "cores each (CPU, one process, no compile; not bit-reproducible run to run); auto and off: one peer "
        "after another",
    )
    max_steps: int | None = Field(None, ge=1, le=MAX_COUNT, description="stop after this many steps (smoke runs)")
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

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # Only the devices dogo trains on; whether one exists here is checked by
        # dogo.runtime.resolve_device before any work starts.
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
            raise ValueError("unknown device; use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("channels_last", "sync_batchnorm", "concurrent_peers", mode="before")
    @classmethod
    def _bool_to_choice(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class MlflowConfig(Schema):
    tracking_uri: str | None = Field(None, description="where runs go: sqlite:///mlflow.db (a local store), "
                                     "http://host:5000 (a server); default: $MLFLOW_TRACKING_URI, else MLflow's own")
    experiment: str = Field("dogo", min_length=1, description="MLflow experiment (created when missing)")


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
    mlflow: MlflowConfig | None = Field(None, description="also log to MLflow (pip install 'dogo[mlflow]'): "
                                        "{tracking_uri: sqlite:///mlflow.db, experiment: dogo}; {} for the defaults; "
                                        "off when absent")
    progress: bool = True
    keep_last: int | None = Field(None, ge=0, description="keep only the newest K checkpoints/epoch-N.pt (None: all)")
    keep_previous: bool = Field(False, description="keep checkpoints/last.prev.pt after the run has finished")


class EvalConfig(Schema):
    dataset: DatasetConfig | None = Field(None, description="labelled dataset for probes (default: the training one)")
    linear: dict[str, Any] = Field(default_factory=dict, description="linear-probe settings (see `dogo evaluate --help`)")
    cache_max_mb: float | None = Field(1024, ge=0, description="cap of RUN_DIR/cache/features in MB; the least "
                                       "recently used files go first (None: no cap)")

    @field_validator("linear")
    @classmethod
    def _probe_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Checked now, against the probe's own schema, rather than when `dogo evaluate` runs
        # after hours of training.
        from dogo.evaluate.base import PROTOCOL_SETTINGS
        from dogo.evaluate.linear import ProbeSettings

        try:
            ProbeSettings.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            known = ", ".join(sorted(PROTOCOL_SETTINGS["linear"].model_fields))
            if first["type"] == "extra_forbidden":
                raise ValueError(f"unknown probe setting {key!r}{nearest(key, known.split(', '))}; known: {known}") from None
            raise ValueError(f"probe setting {key}: {first['msg']} (got {first.get('input')!r})") from None
        return value


#: Settings that never change what is trained (where it runs, how it logs, what is evaluated): free to
#: differ on resume, and ignored when a report groups runs that differ only in their seed.
RUNTIME_KEYS = ("name", "dataset.root", "dataset.download", "dataset.eval_split", "dataset.store", "dataset.store_dir",
                "train.device",
                "train.num_threads", "train.compile", "train.dist_backend", "logging", "eval")


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


def peer_labels(models: list[PeerConfig] | list[dict[str, Any]]) -> list[str]:
    """Every peer's label (its name, else backbone x width - objective), repeats numbered: ['a#0', 'a#1']."""
    labels = []
    for model in models:
        peer = model if isinstance(model, PeerConfig) else PeerConfig.model_construct(**{
            k: v for k, v in model.items() if k in PeerConfig.model_fields})
        labels.append(PeerConfig.label(peer))
    return [f"{label}#{i}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


class RunConfig(Schema):
    name: str = Field("run", min_length=1, max_length=100, description="run name; the default run directory is runs/<name>-<timestamp> "
                      "(no path separators, so the run stays under runs/)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="random seed (a signed 64-bit integer, >= 0)")
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
            raise ValueError("a run name is one folder name: no '/', '\\', control characters, '.', '..' or "
                             "surrounding spaces")
        return value

    @model_validator(mode="after")
    def _check_cohort(self) -> "RunConfig":
        from dogo.models import BACKBONES
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
                options = objective_options(peer.objective, peer.objective_options, f"train.models.{i}.objective_options")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if options != peer.objective_options:
                peer.objective_options = options
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
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    data = parse_yaml(text, str(path))
    if data is None or not text.strip():
        raise ConfigError(f"{path}: the file is empty; a config needs at least train.models (see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys, got {type(data).__name__}")
    return data


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> data with :class:`dogo.strict_yaml.StrictLoader`; errors name ``source``."""
    from dogo.strict_yaml import StrictLoader, check_size

    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    check_size(data, source)
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
