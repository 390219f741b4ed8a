"""``dogo quickstart``: SimCLR alone vs the same model in a DoGo cohort, on digits, in minutes.

Trains the packaged ``configs/quickstart.yaml`` cohort (a width-1/4 ResNet-18 student with a
width-1/2 peer) and the student alone with the same settings, then scores both students (and
the peer) with the linear probe and weighted kNN, and prints one table.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from dogo.config import RunConfig, load_config
from dogo.core import console
from dogo.evaluate.runner import evaluate_run
from dogo.guards.ownership import missing_folders, remove_empty
from dogo.runs.layout import RunDir
from dogo.runs.rundir import check_new_run_dir, prepare_run_dir, removed_if_it_fails_early
from dogo.training.trainer import Trainer


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``dogo/configs/<name>.yaml``)."""
    return Path(str(resources.files("dogo") / "configs" / f"{name}.yaml"))


def packaged_configs() -> dict[str, str]:
    """Every config shipped with dogo: name -> the first sentence of its header comment (or "")."""
    folder = resources.files("dogo") / "configs"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out[entry.name[: -len(".yaml")]] = first_sentence(entry.read_text())
    return out


#: The end of a sentence: a full stop before a space or the end of the text (not "et al." or "e.g.").
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.(?=\s|$)")


def first_sentence(text: str) -> str:
    """The first sentence of a config's header comment (its leading ``#`` lines), whole."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    comment = " ".join(part for part in header if part)
    end = _SENTENCE_END.search(comment)
    return comment[: end.end()] if end else comment


def resolve_config_path(path: str) -> str:
    """A path as given when it exists, else a packaged config's name (``quickstart``, ``fmnist-dogo.yaml``)."""
    if Path(path).exists():
        return path
    name = Path(path).name.removesuffix(".yaml")
    if "/" not in path.replace("\\", "/").removeprefix("configs/") and name in packaged_configs():
        return str(packaged_config(name))
    return path


def mean_images_per_s(run_dir: Path) -> float:
    """A run's training speed from its metrics rows (the first, warm-up, left out)."""
    from dogo.training.summary import mean_images_per_s as mean_rate
    from dogo.training.summary import read_rows

    return mean_rate(read_rows(RunDir(run_dir).metrics, [])) or 0.0


def how_to_run_dogo(example: str) -> list[str]:
    """How to call ``dogo`` from this shell: it may live in a virtual environment that is not active."""
    import shutil
    import sys

    here = Path(sys.prefix) / "bin" / "dogo"
    found = shutil.which("dogo")
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return [f"dogo is on your PATH; next, for example: dogo {example}"]
    if not here.exists():
        return [f"next, for example: python -m dogo {example}"]
    try:
        venv = Path(os.path.relpath(sys.prefix))
    except ValueError:  # another drive (Windows)
        venv = Path(sys.prefix)
    venv = Path(sys.prefix) if str(venv).startswith("..") else venv
    return [
        f"dogo is installed in {venv}, which this shell has not activated. Run the README's commands after",
        f"  . {venv / 'bin' / 'activate'}",
        f"or call dogo by its path: {venv / 'bin' / 'dogo'} {example}",
    ]


def default_out(root: Path = Path("runs")) -> Path:
    """``runs/quickstart`` (the folder the README's next commands name), else ``runs/quickstart-2``, ``-3``..."""
    out, n = root / "quickstart", 2
    while out.exists():
        out, n = root / f"quickstart-{n}", n + 1
    return out


def run_quickstart(out: Path | None, overrides: list[str]) -> list[dict]:
    """Both runs under ``out`` (``out/simclr``, ``out/dogo``; default :func:`default_out`)."""
    path = packaged_config("quickstart")
    if out is None:
        out = default_out()
    for method in ("simclr", "dogo"):  # refuse before training anything
        check_new_run_dir(out / method)
    dogo = load_config(path, overrides)
    alone = dogo.model_copy(deep=True)
    alone.train.models = alone.train.models[:1]
    made = missing_folders(out)
    try:
        return _both(out, alone, dogo)
    except BaseException:
        remove_empty(made)  # a run that failed was removed: so are the folders made for both, if nothing is in them
        raise


def _both(out: Path, alone: RunConfig, dogo: RunConfig) -> list[dict]:
    """Train and probe the student alone, then the cohort, under ``out``; print the table; returns its rows."""
    rows = []
    for method, config in (("simclr", alone), ("dogo", dogo)):
        config.name = f"quickstart-{method}"
        # as dogo pretrain: data and cohort set up (a cohort that cannot fit refused) before the folder is made
        trainer = Trainer(config, out / method, log=console.info)
        run_dir = prepare_run_dir(config, out / method)
        console.info(f"[{method}] pretraining {len(config.train.models)} peer(s) -> {run_dir}")
        with removed_if_it_fails_early(run_dir, console.info):
            trainer.fit()
        speed = mean_images_per_s(run_dir)
        linear = evaluate_run(run_dir, "linear", [], peer="all")
        knn = evaluate_run(run_dir, "knn", [], peer="all")
        for lin, kn in zip(linear, knn, strict=True):
            rows.append(
                {
                    "model": lin["peer_label"],
                    "method": method if method == "simclr" else f"dogo ({len(config.train.models)} peers)",
                    "linear_top1": lin["summary"]["linear"],
                    "knn_top1": kn["summary"]["knn"],
                    "images_per_s": speed,
                }
            )
    print()
    print(f"{'model':<12} {'method':<16} {'linear acc':>10} {'kNN acc':>8} {'images/s':>9}")
    for row in rows:
        print(
            f"{row['model']:<12} {row['method']:<16} {row['linear_top1']:>9.1f}% "
            f"{row['knn_top1']:>7.1f}% {row['images_per_s']:>9.0f}"
        )
    print(f"\nruns in {out}; images/s counts each image once (two views through every peer of the run)")
    print(
        "\n".join(
            [
                "",
                *how_to_run_dogo(f"evaluate {out / 'dogo'} --protocol linear"),
                'Your own images: the README\'s "Your own images" section.',
            ]
        )
    )
    return rows
