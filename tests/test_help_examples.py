"""Every example of every `dogo COMMAND --help` runs as written, from a folder holding what the examples
name: the runs quickstart and pretrain's own examples make, a photo folder, a clone of the reference's
config, a study file, and tiny datasets where the examples read real ones (Fashion-MNIST, CIFAR-10,
ImageNet under ``$DOGO_DATA`` or ``~``).

The arguments are the examples' own; only the work is small. Configs read by `pretrain`, `quickstart`
and `bench` take one step of batch 16 with peers at width 1/16 (:func:`smaller`), and `bench` times one
step without torch.compile or the reference stand-in (a fixed full-size ResNet-18 in a child process,
which `tests/test_bench.py` covers). `torchrun ... -m dogo ARGS` runs ``dogo ARGS`` in this process
(8 GPUs are not here); `> FILE` and ``VAR=value`` prefixes are applied as a shell would.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shlex
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from dogo.cli import _parser, main
from formats import cifar10_files, write_idx, write_png

ROOT = Path(__file__).resolve().parent.parent
#: The order the examples run in: each command's examples after those that make what they read.
ORDER = (
    "quickstart",
    "configs",
    "pretrain",
    "datasets",
    "prepare",
    "evaluate",
    "export",
    "embed",
    "study",
    "report",
    "bench",
    "clean",
)

STUDY = """
name: fashion-mnist
compare_to: student-alone
seeds: [0]
base:
  dataset: {name: fashion-mnist, image_size: 8}
  train: {epochs: 1, batch_size: 16, precision: fp32, models: [{name: student, backbone: resnet18, width: 0.0625}]}
  logging: {save_every: 0, knn_every: 0, tensorboard: false}
arms:
  - name: student-alone
  - name: dogo
    overrides: {train.models.1: {name: peer, backbone: resnet18, width: 0.0625, distill_weight: 1}}
evaluate: {protocols: {knn: {k: 5}}}
"""


def examples() -> list[tuple[str, str]]:
    """(command, example line) of every --help, in :data:`ORDER`."""
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert set(commands) == set(ORDER)
    found = []
    for name in ORDER:
        lines = [line.strip() for line in (commands[name].epilog or "").splitlines()]
        found += [
            (name, line)
            for line in lines
            if line.split(" ", 1)[0] in ("dogo", "torchrun") or line.startswith("DOGO_DATA=")
        ]
    return found


def test_every_command_that_takes_at_has_an_at_example():
    """`--at STEP` (the weights kept at a step) is shown, and so run below, on every command that takes it."""
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    taking = {
        name for name, parser in commands.items() if any("--at" in action.option_strings for action in parser._actions)
    }
    shown = {command for command, line in examples() if "--at" in shlex.split(line, comments=True)}
    assert taking == {"evaluate", "export", "embed"} and shown == taking


def smaller(load):
    """``load_config`` whose configs train one step of batch 16 with peers at width 1/16."""

    def load_config(path, overrides=(), **kwargs):
        config = load(path, overrides, **kwargs)
        config.train.max_steps, config.train.batch_size = 1, min(config.train.batch_size, 16)
        config.train.keep_at = [step for step in config.train.keep_at if step <= 1]
        for peer in config.train.models:
            peer.width = 0.0625
        config.logging.knn_every, config.logging.tensorboard = 0, False
        config.eval.linear = {**config.eval.linear, "epochs": 2}
        return config

    return load_config


def smaller_bench(run_bench):
    def bench(config, steps=5, warmup=2, **kwargs):
        kwargs.update(split_steps=1, ceiling_steps=1, ceiling_compile=False, reference=False, memory_reference=False)
        return run_bench(config, steps=1, warmup=0, **kwargs)

    return bench


def write_data(here: Path, home: Path) -> None:
    """Tiny copies of what the examples read, where they look for it."""
    rng = np.random.default_rng(0)
    fmnist = here / "data" / "fashion-mnist"  # $DOGO_DATA/fashion-mnist
    fmnist.mkdir(parents=True)
    for prefix, count in (("train", 48), ("t10k", 32)):
        write_idx(fmnist / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), False)
        write_idx(fmnist / f"{prefix}-labels-idx1-ubyte", np.arange(count, dtype=np.uint8) % 10, False)
    files, _, _ = cifar10_files(rng, per_batch=8)
    for folder in (here / "data" / "cifar10", home / "data" / "cifar10", here / "data"):  # $DOGO_DATA, ~, ./data
        (folder / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(content)
    for i in range(4):
        pixels = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
        write_png(home / "ilsvrc" / "train" / f"n0000{i % 2}" / f"{i}.JPEG", pixels)  # PNG bytes: PIL reads either
        for split in ("train", "test"):
            write_png(here / "photos" / split / ("cat" if i % 2 else "dog") / f"{i}.png", pixels)
    (here / "reference" / "config").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "reference" / "template.yaml", here / "reference" / "config")
    (here / "studies").mkdir()
    (here / "studies" / "fashion-mnist.yaml").write_text(STUDY)
    (here / "configs").symlink_to(ROOT / "configs")


def run_example(line: str, here: Path, home: Path) -> tuple[int, str]:
    """One example as a shell would run it: ``VAR=value`` prefixes, ``~``, globs, ``> FILE``."""
    words = shlex.split(line, comments=True)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = os.path.expanduser(value)
    if words[0] == "torchrun":  # the launcher's processes are not here: dogo's own arguments, in this process
        words = ["dogo", *words[words.index("dogo") + 1 :]]
    target = None
    if ">" in words:
        target = words[words.index(">") + 1]
        words = words[: words.index(">")]
    argv = []
    for word in words[1:]:
        word = os.path.expanduser(word)
        argv += sorted(glob.glob(word)) if "*" in word else [word]
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            code = main(argv)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if target is not None:
        (here / target).write_text(out.getvalue())
    return code, out.getvalue()


@pytest.mark.slow
def test_every_help_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import dogo.bench.run
    from dogo.core import console

    here, home = tmp_path / "here", tmp_path / "home"
    here.mkdir()
    write_data(here, home)
    monkeypatch.chdir(here)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOGO_DATA", str(here / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(dogo.config, "load_config", smaller(dogo.config.load_config))
    monkeypatch.setattr(dogo.cli.quickstart, "load_config", smaller(dogo.cli.quickstart.load_config))
    monkeypatch.setattr(dogo.bench.run, "run_bench", smaller_bench(dogo.bench.run.run_bench))
    failed = []
    for command, line in examples():
        code, out = run_example(line, here, home)
        err = capsys.readouterr().err
        console.set_verbosity(console.NORMAL)
        if code == 2 and "needs pip install 'dogo[onnx]'" in line and "pip install 'dogo[onnx]'" in err:
            continue  # the optional extra is not installed here: the one-line error that says so
        if code != 0:
            failed.append(
                f"dogo {command}: {line}\n  exit {code}: {err.strip().splitlines()[-1:] if err else out[-200:]}"
            )
    assert not failed, "\n".join(failed)
    assert (here / "runs" / "quickstart" / "dogo" / "checkpoints" / "last.pt").is_file()
    assert json.loads((here / "bench.json").read_text())["images_per_s"] > 0
    assert (here / "docs" / "RESULTS.md").is_file() and (here / "student.py").is_file()
    assert (here / "untrained.safetensors").is_file() and (here / "untrained.py").is_file()  # --at 0
    assert (here / "untrained.npy").is_file()
