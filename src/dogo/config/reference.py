"""Read the reference's two YAML schemas onto dogo's (docs/reference.md §7).

* ``dogo`` branch (``config/template.yaml``): ``train.models[]`` with ``name`` (the objective),
  ``backbone``, ``optimizer``, ``temperature``, ``n_proj``; ``train.KL_temperature``;
  ``train.criterion_weight`` of which only entries 2.. (one lambda per model) are applied.
* ``main`` branch (``config/simclr.yaml`` / ``simsiam.yaml``): a single model described at the
  top of ``train`` (``model``, ``backbone``, ``temperature``, ``n_proj``, ``criterion_weight``
  whose entry 0 multiplies the SSL loss).

The translation keeps what the reference's code *does* with each key, not what the key says:

* official KL reduction; lambdas from ``criterion_weight[2:]`` (dogo branch);
* dogo branch: NT-Xent at 0.5 whatever ``temperature`` says, Adam whatever ``optimizer.name``
  says (the code hard-codes both);
* ``scheduler: true``: the reference's per-batch ``CosineAnnealingLR(T_max=epochs, eta_min=3e-4)``
  (``schedule.name: reference-cosine``), flat at the default lr 3e-4 and periodic otherwise;
* main branch ``simsiam``: the real SimSiam loss with the main branch's 2-layer projector;
* normalisation with the reference's statistics keyed on the image size (``dataset.normalization: reference``).

Where the reference ignores a key, or where dogo differs from what its value suggests, the
notes (one warning) say so, naming only keys that are present. A key the reference does not
know is an error naming the nearest valid one.
"""

from __future__ import annotations

from typing import Any

from dogo.core.errors import ConfigError
from dogo.core.registry import nearest

#: Keys of each block, as the reference reads them.
TRAIN_KEYS = {
    "models",
    "model",
    "backbone",
    "temperature",
    "n_proj",
    "momentum",
    "criterion_weight",
    "epochs",
    "dataset",
    "batchsize",
    "KL_temperature",
    "optimizer",
    "save_dir",
    "num_workers",
}
MODEL_KEYS = {"name", "backbone", "optimizer", "temperature", "n_proj"}
OPTIMIZER_KEYS = {"name", "lr", "weight_decay", "momentum", "scheduler"}
DATASET_KEYS = {"name", "data_dir", "img_size", "classes"}
EVAL_KEYS = {
    "model",
    "backbone",
    "n_proj",
    "dataset",
    "epochs",
    "batchsize",
    "optimizer",
    "model_path",
    "num_workers",
}
TOP_KEYS = {"train", "eval"}
#: The reference's eta_min of its (optional) cosine annealing.
REFERENCE_ETA_MIN = 3e-4
#: NT-Xent temperature hard-coded on the reference's dogo branch.
REFERENCE_DOGO_TEMPERATURE = 0.5
#: The optimiser the reference's dogo branch always builds.
REFERENCE_OPTIMIZER = "adam"
#: Linear layers of the SimSiam projector on the reference's main branch (its dogo branch: 3).
MAIN_SIMSIAM_PROJECTOR_LAYERS = 2


#: Keys of ``train`` that only the reference's schemas have: one of them marks a file as the reference's.
MARKERS = ("batchsize", "criterion_weight", "KL_temperature", "model", "dataset", "save_dir")
#: Where dogo's own schema keeps what each marker means (for the message that names the decision).
DOGO_NAMES = {
    "batchsize": "train.batch_size",
    "criterion_weight": "train.models.N.distill_weight",
    "KL_temperature": "distill.temperature",
    "model": "train.models.N.objective",
    "dataset": "dataset (at the top)",
    "save_dir": "--out",
}


def reference_marker(data: dict[str, Any]) -> str | None:
    """The key that makes ``data`` a reference-schema file (``train.batchsize``), or None for dogo's own.

    The file is read as the schema more of whose own keys it has: the reference's (keys of
    ``train`` dogo's schema does not have: ``batchsize``, ``criterion_weight``...) against dogo's
    (``name``, ``dataset``, ``logging``... at the top, ``batch_size``, ``precision``... in
    ``train``, ``objective``, ``width``... in a model entry). In a dogo config, ``batchsize`` is
    then a typo of ``train.batch_size`` and dogo's schema names it as one; in a reference file, a
    stray ``batch_size`` is the reference's unknown key. Keys neither schema knows decide nothing.
    """
    from dogo.config.run import RunConfig
    from dogo.config.training import PeerConfig, TrainConfig

    train = data.get("train")
    if not isinstance(train, dict):
        return None
    theirs = [key for key in (*MARKERS, *sorted(TRAIN_KEYS)) if key in train and key not in TrainConfig.model_fields]
    if not any(key in MARKERS for key in theirs):
        return None
    models = train.get("models")
    if not isinstance(models, list):
        models = []
    ours = (
        len(set(data) & (set(RunConfig.model_fields) - TOP_KEYS))
        + len(set(train) & (set(TrainConfig.model_fields) - TRAIN_KEYS))
        + sum(len(set(m) & (set(PeerConfig.model_fields) - MODEL_KEYS)) for m in models if isinstance(m, dict))
    )
    return f"train.{theirs[0]}" if len(set(theirs)) > ours else None


def is_reference_config(data: dict[str, Any]) -> bool:
    """True for a file in either reference schema (see :func:`reference_marker`)."""
    return reference_marker(data) is not None


def schema_note(marker: str) -> str:
    """Why a file was read as the reference's schema, and the key dogo's own schema has instead."""
    key = marker.removeprefix("train.")
    return (
        f"read as the reference's schema because of {marker}; if this is a dogo config, "
        f"dogo's own schema calls it {DOGO_NAMES.get(key, key)}"
    )


def _check_keys(block: Any, allowed: set[str], where: str, source: str) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(block).__name__}")
    for key in block:
        if key not in allowed:
            raise ConfigError(
                f"{source}: unknown key {where}.{key}{nearest(str(key), sorted(allowed))} "
                f"in a reference-schema config; remove it or correct its name"
            )
    return block


def _dataset(block: Any, where: str, source: str, notes: list[str]) -> dict[str, Any]:
    block = _check_keys(block, DATASET_KEYS, where, source)
    out: dict[str, Any] = {}
    if "name" in block:
        out["name"] = block["name"]
    if "data_dir" in block:
        out["root"] = block["data_dir"]
    if "img_size" in block:
        out["image_size"] = block["img_size"]
    if "classes" in block:
        notes.append(f"{where}.classes is ignored (dogo reads the class count from the data)")
    return out


def _number(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {where} must be a number, got {value!r}")
    return float(value)


def _optimizer(
    block: Any, where: str, source: str, notes: list[str], branch: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    block = _check_keys(block, OPTIMIZER_KEYS, where, source)
    optimizer = {k: block[k] for k in ("name", "lr", "weight_decay", "momentum") if k in block}
    if branch == "dogo":
        # The dogo branch builds Adam(lr, weight_decay) whatever the block says.
        optimizer.pop("momentum", None)
        name = optimizer.pop("name", REFERENCE_OPTIMIZER)
        if str(name).lower() != REFERENCE_OPTIMIZER:
            notes.append(
                f"{where}.name={name} ignored: the reference's dogo branch always builds Adam, so dogo trains "
                f"with Adam (in dogo's own schema, train.models.N.optimizer.name chooses adam, adamw, sgd or lars)"
            )
        if "momentum" in block:
            notes.append(f"{where}.momentum ignored (Adam has none)")
    schedule: dict[str, Any] = {}
    if block.get("scheduler"):
        lr = _number(block.get("lr", REFERENCE_ETA_MIN), f"{where}.lr", source)
        schedule = {"name": "reference-cosine", "min_lr": REFERENCE_ETA_MIN}
        if lr != REFERENCE_ETA_MIN:
            notes.append(
                f"{where}.scheduler: the reference steps "
                f"CosineAnnealingLR(T_max=epochs, eta_min={REFERENCE_ETA_MIN:g}) "
                f"once per batch, so the rate swings between lr={lr:g} and {REFERENCE_ETA_MIN:g} with a period of "
                f"2 x epochs batches; dogo does the same (schedule.name: reference-cosine). For one cosine from lr "
                f"to min_lr over the whole run, use dogo's own schema: schedule: {{name: cosine, min_lr: ...}}"
            )
    return optimizer, schedule


def _peer(block: dict[str, Any], where: str, source: str, notes: list[str], branch: str) -> dict[str, Any]:
    objective = str(block.get("name", block.get("model", "simclr"))).lower()
    peer: dict[str, Any] = {"objective": objective}
    for key in ("backbone", "n_proj"):
        if key in block:
            peer[key] = block[key]
    if branch == "main":
        if "temperature" in block:
            peer["temperature"] = block["temperature"]
    elif "temperature" in block:
        # The dogo branch's NT-Xent hard-codes 0.5 and never reads the key.
        peer["temperature"] = REFERENCE_DOGO_TEMPERATURE
        if _number(block["temperature"], f"{where}.temperature", source) != REFERENCE_DOGO_TEMPERATURE:
            notes.append(
                f"{where}.temperature={block['temperature']} ignored: the reference's dogo branch hard-codes "
                f"NT-Xent's temperature {REFERENCE_DOGO_TEMPERATURE}, so dogo trains at {REFERENCE_DOGO_TEMPERATURE} "
                f"(in dogo's own schema, train.models.N.temperature sets it)"
            )
    if "optimizer" in block:
        peer["optimizer"], schedule = _optimizer(block["optimizer"], f"{where}.optimizer", source, notes, branch)
        if schedule:
            peer["schedule"] = schedule
    if objective == "simsiam" and branch == "main":
        peer["objective_options"] = {"projector_layers": MAIN_SIMSIAM_PROJECTOR_LAYERS}
        notes.append(
            f"{where}: simsiam trains the real SimSiam loss (the reference's main branch trained NT-Xent), "
            f"with the main branch's {MAIN_SIMSIAM_PROJECTOR_LAYERS}-layer projector"
        )
    return peer


def _ignored(block: dict[str, Any], where: str, reasons: dict[str, str]) -> list[str]:
    """One note per reason, naming only the keys of ``reasons`` that ``block`` has."""
    by_reason: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        if key in block:
            by_reason.setdefault(reason, []).append(f"{where}.{key}")
    return [f"{', '.join(keys)} ignored ({reason})" for reason, keys in by_reason.items()]


def _eval(block: Any, source: str, notes: list[str]) -> dict[str, Any]:
    block = _check_keys(block, EVAL_KEYS, "eval", source)
    out: dict[str, Any] = {}
    if "dataset" in block:
        out["dataset"] = _dataset(block["dataset"], "eval.dataset", source, notes)
    linear: dict[str, Any] = {}
    if "epochs" in block:
        linear["epochs"] = block["epochs"]
    if "batchsize" in block:
        linear["batch_size"] = block["batchsize"]
    if "optimizer" in block:
        opt = _check_keys(block["optimizer"], OPTIMIZER_KEYS, "eval.optimizer", source)
        for key in ("lr", "weight_decay", "momentum"):
            if key in opt:
                linear[key] = opt[key]
        if "name" in opt:
            linear["solver"] = str(opt["name"]).lower()
        if opt.get("scheduler"):
            linear["schedule"] = "cosine"
    if linear:
        out["linear"] = linear
    reading = "dogo evaluate reads the encoder from the run directory"
    notes += _ignored(
        block,
        "eval",
        {
            "model": reading,
            "backbone": reading,
            "n_proj": reading,
            "model_path": reading,
            "num_workers": "dogo loads the data in-process",
        },
    )
    return out


def from_reference(data: dict[str, Any], source: str = "config") -> tuple[dict[str, Any], list[str]]:
    """Translate a reference-schema dict into dogo's schema; return it with the notes to warn."""
    _check_keys(data, TOP_KEYS, "<top>", source)
    train = _check_keys(data["train"], TRAIN_KEYS, "train", source)
    notes: list[str] = []
    branch = "dogo" if "models" in train else "main"

    if branch == "dogo":
        models = train["models"]
        if not isinstance(models, list) or not models:
            raise ConfigError(f"{source}: train.models must be a non-empty list of models")
        peers = [
            _peer(_check_keys(m, MODEL_KEYS, f"train.models.{i}", source), f"train.models.{i}", source, notes, branch)
            for i, m in enumerate(models)
        ]
    else:
        single: dict[str, Any] = {
            k: train[k] for k in ("model", "backbone", "temperature", "n_proj", "optimizer") if k in train
        }
        peers = [_peer(single, "train", source, notes, branch)]

    weights = train.get("criterion_weight")
    if weights is not None:
        if not isinstance(weights, list) or not all(isinstance(w, (int, float)) for w in weights):
            raise ConfigError(f"{source}: train.criterion_weight must be a list of numbers, got {weights!r}")
        if branch == "dogo":
            lambdas = weights[2:]
            if len(lambdas) < len(peers):
                raise ConfigError(
                    f"{source}: train.criterion_weight needs one KL weight per model after its first two "
                    f"entries ({len(peers)} models, got {weights})"
                )
            for peer, weight in zip(peers, lambdas, strict=False):  # weights beyond the models are unused
                peer["distill_weight"] = weight
            notes.append("train.criterion_weight[0:2] ignored (the reference never applies them)")
        else:
            peers[0]["ssl_weight"] = weights[0]
            if len(weights) > 1:
                notes.append("train.criterion_weight[1:] ignored (the reference never applies them)")

    out: dict[str, Any] = {"train": {"models": peers}, "distill": {"reduction": "official"}}
    if "epochs" in train:
        out["train"]["epochs"] = train["epochs"]
    if "batchsize" in train:
        out["train"]["batch_size"] = train["batchsize"]
    if "KL_temperature" in train:
        out["distill"]["temperature"] = train["KL_temperature"]
    # The reference normalises with statistics keyed on the image size, not the data's own.
    out["dataset"] = {
        **(_dataset(train["dataset"], "train.dataset", source, notes) if "dataset" in train else {}),
        "normalization": "reference",
    }
    notes += _ignored(
        train,
        "train",
        {
            "momentum": "the reference never uses it",
            "save_dir": "dogo writes to the run directory given by --out",
            "num_workers": "dogo augments in-process",
        },
    )
    if "eval" in data:
        out["eval"] = _eval(data["eval"], source, notes)
    return out, notes
