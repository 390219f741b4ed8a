"""Read the reference's two YAML schemas onto dogo's (REFERENCE.md §7).

* ``dogo`` branch (``config/template.yaml``): ``train.models[]`` with ``name`` (the objective),
  ``backbone``, ``optimizer``, ``temperature``, ``n_proj``; ``train.KL_temperature``;
  ``train.criterion_weight`` of which only entries 2.. (one lambda per model) are applied.
* ``main`` branch (``config/simclr.yaml`` / ``simsiam.yaml``): a single model described at the
  top of ``train`` (``model``, ``backbone``, ``temperature``, ``n_proj``, ``criterion_weight``
  whose entry 0 multiplies the SSL loss).

The translation keeps the reference's *effective* semantics: official KL reduction, lambdas from
``criterion_weight[2:]``, a cosine schedule to eta_min 3e-4 when ``scheduler`` is set (flat at the
default lr). Keys the reference reads and ignores are accepted and reported in one warning; a key
it does not know is an error naming the nearest valid one.
"""

from __future__ import annotations

from typing import Any

from dogo.errors import ConfigError
from dogo.registry import nearest

#: Keys of each block, as the reference reads them.
TRAIN_KEYS = {
    "models", "model", "backbone", "temperature", "n_proj", "momentum", "criterion_weight",
    "epochs", "dataset", "batchsize", "KL_temperature", "optimizer", "save_dir", "num_workers",
}
MODEL_KEYS = {"name", "backbone", "optimizer", "temperature", "n_proj"}
OPTIMIZER_KEYS = {"name", "lr", "weight_decay", "momentum", "scheduler"}
DATASET_KEYS = {"name", "data_dir", "img_size", "classes"}
EVAL_KEYS = {
    "model", "backbone", "n_proj", "dataset", "epochs", "batchsize", "optimizer", "model_path",
    "num_workers",
}
TOP_KEYS = {"train", "eval"}
#: The reference's eta_min of its (optional) cosine annealing.
REFERENCE_ETA_MIN = 3e-4
#: NT-Xent temperature hard-coded on the reference's dogo branch.
REFERENCE_DOGO_TEMPERATURE = 0.5


def is_reference_config(data: dict[str, Any]) -> bool:
    """True for a file in either reference schema (dogo's own keeps ``dataset`` at the top)."""
    train = data.get("train")
    markers = {"batchsize", "criterion_weight", "KL_temperature", "model", "dataset", "save_dir"}
    return isinstance(train, dict) and bool(markers & set(train))


def _check_keys(block: Any, allowed: set[str], where: str, source: str) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(block).__name__}")
    for key in block:
        if key not in allowed:
            raise ConfigError(
                f"{source}: unknown key {where}.{key}{nearest(str(key), sorted(allowed))} "
                f"in a reference-schema config"
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


def _optimizer(block: Any, where: str, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    block = _check_keys(block, OPTIMIZER_KEYS, where, source)
    optimizer = {k: block[k] for k in ("name", "lr", "weight_decay", "momentum") if k in block}
    schedule: dict[str, Any] = {}
    if block.get("scheduler"):
        # The reference anneals to eta_min 3e-4: at its default lr 3e-4 that is a flat schedule.
        schedule = {"name": "cosine", "min_lr": min(REFERENCE_ETA_MIN, float(block.get("lr", 3e-4)))}
    return optimizer, schedule


def _peer(block: dict[str, Any], where: str, source: str, notes: list[str], branch: str) -> dict[str, Any]:
    objective = block.get("name", block.get("model", "simclr"))
    peer: dict[str, Any] = {"objective": str(objective).lower()}
    for key in ("backbone", "n_proj"):
        if key in block:
            peer[key] = block[key]
    if "temperature" in block:
        peer["temperature"] = block["temperature"]
        if branch == "dogo" and float(block["temperature"]) != REFERENCE_DOGO_TEMPERATURE:
            notes.append(
                f"{where}.temperature={block['temperature']} is honoured (the reference's dogo branch "
                f"ignores it and always uses {REFERENCE_DOGO_TEMPERATURE})"
            )
    if "optimizer" in block:
        peer["optimizer"], schedule = _optimizer(block["optimizer"], f"{where}.optimizer", source)
        if schedule:
            peer["schedule"] = schedule
    if peer["objective"] == "simsiam" and branch == "main":
        notes.append(f"{where}: simsiam trains the real SimSiam loss (the reference's main branch trained NT-Xent)")
    return peer


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
    ignored = sorted({"model", "backbone", "n_proj", "model_path", "num_workers"} & set(block))
    if ignored:
        notes.append(
            "eval." + ", eval.".join(ignored) + " ignored (dogo evaluate reads the encoder from the run directory)"
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
        single = {k: train[k] for k in ("model", "backbone", "temperature", "n_proj", "optimizer") if k in train}
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
            for peer, weight in zip(peers, lambdas):
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
    if "dataset" in train:
        out["dataset"] = _dataset(train["dataset"], "train.dataset", source, notes)
    ignored = [k for k in ("momentum", "save_dir", "num_workers") if k in train]
    if ignored:
        notes.append(
            "train." + ", train.".join(ignored) + " ignored (momentum is never used by the reference; "
            "dogo writes to the run directory given by --out and augments in-process)"
        )
    if "eval" in data:
        out["eval"] = _eval(data["eval"], source, notes)
    return out, notes
