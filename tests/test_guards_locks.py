"""Class 3, one writer at a time (issue 25): the lock of every folder a command writes (:mod:`dogo.guards.locks`).

:data:`LOCKERS` lists every command that writes a folder, with the folder it holds. With another
process holding that folder, the command is refused in one line naming the holder's pid and
command line, and nothing around changes. Two processes started at the same moment on one store:
exactly one writes it, the other is told who holds it, and the store that reads as complete is the
winner's, whole. A new command joins by adding itself to :data:`LOCKERS`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from guarded import TINY_QUICKSTART, World, digits_config, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot
from test_robustness import never_checkpointed

# Each: (argv, the folder the command holds), for a world copied into tmp.
LOCKERS: dict[str, Callable[[World, Path], tuple[list[str], Path]]] = {
    "pretrain-resume": lambda w, tmp: (["pretrain", "--resume", str(w.run), "train.max_steps=3"], w.run),
    "pretrain-out-first-epoch-left": lambda w, tmp: (
        ["pretrain", str(w.config), "--out", str(tmp / "left")],
        never_checkpointed(tmp / "left"),
    ),
    "evaluate": lambda w, tmp: (["evaluate", str(w.run), "--protocol", "knn", "k=3"], w.run / "cache"),
    "clean": lambda w, tmp: (["clean", str(w.run)], w.run),
    "clean-while-evaluating": lambda w, tmp: (["clean", str(w.run), "--cache"], w.run / "cache"),
    "prepare": lambda w, tmp: (
        ["prepare", "imagefolder", "--root", str(w.photos), "--image-size", "8", "--out", str(tmp / "store2")],
        tmp / "store2.partial",
    ),
    "study": lambda w, tmp: (["study", str(w.study_file), "--out", str(w.study)], w.study),
    "study-publish": lambda w, tmp: (
        ["study", str(w.study_file), "--out", str(w.study), "--publish", str(tmp / "out" / "published")],
        tmp / "out" / "published",
    ),
    "report": lambda w, tmp: (["report", str(w.run), "--out", str(tmp / "out")], tmp / "out"),
    "report-study": lambda w, tmp: (["report", str(w.study), "--out", str(tmp / "out" / "s.md")], tmp / "out"),
    "export": lambda w, tmp: (
        ["export", str(w.run), "--format", "torchscript", "--out", str(tmp / "out" / "e.ts")],
        tmp / "out",
    ),
    "embed": lambda w, tmp: (
        ["embed", str(w.run), "--data", str(w.photos), "--out", str(tmp / "out" / "f.npy")],
        tmp / "out",
    ),
    # pretrain preparing an image store (dataset.store): the store's work folder while it is written
    "pretrain-dataset-store": lambda w, tmp: (
        ["pretrain", str(store_config(w, tmp)), "--out", str(tmp / "new-run")],
        tmp / "stores" / "digits-train.partial",
    ),
    # bench reads its config's data through the same dataset.store: it prepares (and holds) the store as pretrain does
    "bench-dataset-store": lambda w, tmp: (
        ["bench", str(store_config(w, tmp)), "--steps", "1", "--no-ceiling", "--no-reference"],
        tmp / "stores" / "digits-train.partial",
    ),
    "quickstart": lambda w, tmp: (
        ["quickstart", "--out", str(tmp / "quickstart"), *TINY_QUICKSTART],
        tmp / "quickstart" / "simclr",
    ),
}


def store_config(w: World, tmp: Path) -> Path:
    """The world's run config with an image store prepared under ``tmp/stores`` (dataset.store: on)."""
    config = digits_config()
    config["dataset"].update(store="on", store_dir=str(tmp / "stores"))
    (tmp / "store.yaml").write_text(yaml.safe_dump(config))
    return tmp / "store.yaml"


HOLDER = (
    "import sys, time; from dogo.guards.locks import hold; hold(sys.argv[1], create=True); "
    "print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def held():
    """Start a process that holds a folder (named ``dogo-holder`` in its command line); yields start(folder)."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder), "dogo-holder"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("name", list(LOCKERS))
def test_a_held_folder_is_refused_naming_the_holder(name, world, tmp_path, capsys, held):
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    argv, folder = LOCKERS[name](copy, tmp_path)
    owner = held(folder)
    before = snapshot(tmp_path)
    code, _out, err = run_cli([*argv, "-q"], capsys)
    line = assert_one_line_error(code, err, f"in use by process {owner.pid}", argv[0])
    assert "dogo-holder" in line and str(folder) in line, line  # who holds it, and which folder
    assert_nothing_lost(before, snapshot(tmp_path))


RACER = """
import sys, time
from pathlib import Path
from dogo.data import load_dataset
from dogo.data.store import identity, prepare_store
from dogo.core.errors import DogoError

store, start = Path(sys.argv[1]), float(sys.argv[2])

def slow():  # a long decode: the other process arrives while this one writes
    time.sleep(2.0)
    return load_dataset("digits", split="test")

time.sleep(max(0.0, start - time.time()))
try:
    prepare_store(store, slow, identity("digits", "test", {}), "d1")
    print("wrote")
except DogoError as exc:
    print("refused:", exc)
"""


def test_two_processes_at_the_same_moment_one_writes_the_other_is_told(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    store = tmp_path / "stores" / "digits-test"
    start = time.time() + 8  # both have imported torch by then
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(store), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    lines = sorted((out.strip() for out, _ in outputs), key=lambda line: line != "wrote")
    assert all(p.returncode == 0 for p in procs), outputs
    assert lines[0] == "wrote" and lines[1].startswith("refused: "), lines
    winner = next(p.pid for p, (out, _) in zip(procs, outputs, strict=True) if out.strip() == "wrote")
    assert f"in use by process {winner}" in lines[1] and "racer.py" in lines[1]
    from dogo.data.store import identity, open_store

    data = open_store(store, identity("digits", "test", {}), "d1")  # whole: the winner's
    assert len(data) == 360 and sorted(p.name for p in store.parent.iterdir()) == ["digits-test"]
    assert json.loads((store / ".dogo").read_text())["kind"] == "store"


def test_a_new_run_directory_raced_by_two_processes(tmp_path):
    """prepare_run_dir from two processes at the same moment: one run directory, one refusal naming the other."""
    code = (
        "import sys, time; from pathlib import Path; from dogo.config import load_config; "
        "from dogo.runs.rundir import prepare_run_dir; from dogo.core.errors import DogoError; "
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()));\n"
        "try:\n    prepare_run_dir(load_config(sys.argv[1]), sys.argv[2]); time.sleep(3); print('made')\n"
        "except DogoError as exc:\n    print('refused:', exc)"
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_config()))
    start = time.time() + 6
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "c.yaml"), str(tmp_path / "run"), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = sorted((p.communicate(timeout=300)[0].strip() for p in procs), key=lambda line: line != "made")
    assert outputs[0] == "made" and outputs[1].startswith("refused: "), outputs
    assert "in use by process" in outputs[1] or "already exists" in outputs[1], outputs
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".dogo", "checkpoints", "config.yaml"]
