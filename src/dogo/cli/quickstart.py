"""``dogo quickstart``: SimCLR alone vs the same model in a DoGo cohort, on digits, in minutes.

Trains the packaged ``configs/quickstart.yaml`` cohort (a width-1/4 ResNet-18 student with a
width-1/2 peer) and the student alone with the same settings, then scores both students (and
the peer) with the linear probe and weighted kNN, and prints one table.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from dogo.config import load_config
from dogo.core import console
from dogo.evaluate.runner import evaluate_run
from dogo.runs.layout import RunDir
from dogo.runs.rundir import check_new_run_dir, prepare_run_dir
from dogo.training.trainer import Trainer


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``dogo/configs/<name>.yaml``)."""
    return Path(str(resources.files("dogo") / "configs" / f"{name}.yaml"))


def packaged_configs() -> dict[str, str]:
    """Every config shipped with dogo: name -> its first comment line (or "")."""
    folder = resources.files("dogo") / "configs"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = next((line.lstrip("# ").strip() for line in entry.read_text().splitlines() if line.strip()), "")
            out[entry.name[:-len(".yaml")]] = first if not first.startswith(("name:", "dataset:")) else ""
    return out


def resolve_config_path(path: str) -> str:
    """A path as given when it exists, else a packaged config's name (``quickstart``, ``fmnist-dogo.yaml``)."""
    if Path(path).exists():
        return path
    name = Path(path).name.removesuffix(".yaml")
    if "/" not in path.replace("\\", "/").removeprefix("configs/") and name in packaged_configs():
        return str(packaged_config(name))
    return path


def mean_images_per_s(run_dir: Path) -> float:
    rates = [row["images_per_s"] for row in map(json.loads, RunDir(run_dir).metrics.read_text().splitlines())
             if "images_per_s" in row]
    return sum(rates[1:] or rates) / max(1, len(rates[1:] or rates))  # the first window includes warm-up


def run_quickstart(out: Path | None, overrides: list[str]) -> list[dict]:
    """Both runs under ``out`` (``out/simclr``, ``out/dogo``; default ``runs/quickstart-<timestamp>``)."""
    path = packaged_config("quickstart")
    if out is None:
        out = Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    for method in ("simclr", "dogo"):  # refuse before training anything
        check_new_run_dir(out / method)
    dogo = load_config(path, overrides)
    alone = dogo.model_copy(deep=True)
    alone.train.models = alone.train.models[:1]
    rows = []
    for method, config in (("simclr", alone), ("dogo", dogo)):
        config.name = f"quickstart-{method}"
        run_dir = prepare_run_dir(config, out / method)
        console.info(f"[{method}] pretraining {len(config.train.models)} peer(s) -> {run_dir}")
        trainer = Trainer(config, run_dir, log=console.info)
        trainer.fit()
        speed = mean_images_per_s(run_dir)
        linear = evaluate_run(run_dir, "linear", [], peer="all")
        knn = evaluate_run(run_dir, "knn", [], peer="all")
        for lin, kn in zip(linear, knn):
            rows.append({"model": lin["peer_label"], "method": method if method == "simclr" else f"dogo ({len(config.train.models)} peers)",
                         "linear_top1": lin["summary"]["linear"], "knn_top1": kn["summary"]["knn"], "images_per_s": speed})
    print()
    print(f"{'model':<12} {'method':<16} {'linear acc':>10} {'kNN acc':>8} {'images/s':>9}")
    for row in rows:
        print(f"{row['model']:<12} {row['method']:<16} {row['linear_top1']:>9.1f}% "
              f"{row['knn_top1']:>7.1f}% {row['images_per_s']:>9.0f}")
    print(f"\nruns in {out}; images/s counts each image once (two views through every peer of the run)")
    return rows
