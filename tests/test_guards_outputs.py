"""Class 1, writing an output (issue 25): one helper, :mod:`dogo.guards.outputs`, under every command that writes.

Each family runs through :data:`guarded.WRITERS` (a new command joins by adding itself there) and
compares the hashes of every file around the command's folders before and after:

- a full disk while writing: one line naming the path and the bytes wanted, no temporary file
  left, the previous output intact;
- every kind of writer (text, JSON, ``torch.save``, numpy, safetensors, ONNX, a figure, a
  checkpoint) under the same fault, simulated twice: ``os.write`` failing with ENOSPC, and a real
  file-size limit (``RLIMIT_FSIZE``) in a child process;
- an output over a run's own files, over an input of the command, over a folder or a link: refused
  in one line before any work;
- new files follow the umask.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from guarded import WRITERS, World, add_photo, needs, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot

BYTES = re.compile(r"cannot write [\d.]+ (bytes|kB|MB|GB)")


def full_disk(monkeypatch) -> None:
    """``os.write`` to any temporary output file fails as on a full disk."""
    real = os.write

    def write(fd, data):
        if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_full_disk_is_one_line_and_keeps_the_old_output(command, world, tmp_path, capsys, monkeypatch):
    needs(command)
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    argv = [*WRITERS[command](copy, tmp_path), "-q"]
    if not command.startswith("pretrain"):  # the output exists already: the failed write must leave it as it was
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        add_photo(copy)  # a store of the photos is stale now: prepare --force writes it again
    before = snapshot(tmp_path)
    full_disk(monkeypatch)
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", argv[0])
    assert BYTES.search(line) and "free there" in line, line
    assert_nothing_lost(before, snapshot(tmp_path))  # no temporary file, no half output, nothing replaced


# ------------------------------------------------------------------------------ the files of budgets, one by one

#: each file that weights kept at steps (train.keep_at) and a study with budgets write: the command that
#: writes it, the name of the file the disk fills on, and whether the command has run once already (the
#: file exists then, and must be kept as it was)
BUDGET_FILES = {
    "checkpoints/step-0.pt": ("pretrain-keep-at", "step-0.pt", False),
    "kept.json": ("pretrain-keep-at", "kept.json", False),
    "arms/a.flops.json": ("study-budgets", "a.flops.json", False),
    "budget figure": ("study-budgets", "budget-", True),
}


@pytest.mark.parametrize("name", list(BUDGET_FILES))
def test_a_full_disk_on_a_file_of_budgets_is_one_line_naming_it(name, world, tmp_path, capsys, monkeypatch):
    command, part, again = BUDGET_FILES[name]
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    argv = [*WRITERS[command](copy, tmp_path), "-q"]
    if again:
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
    before = snapshot(tmp_path)
    real = os.write

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if ".tmp-" in target and part in os.path.basename(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", argv[0])
    assert part in line and (BYTES.search(line) or "MB wanted" in line), line
    after = snapshot(tmp_path)
    assert not [p for p in after if ".tmp-" in p], sorted(after)  # no temporary file left
    assert all(after.get(k) == v for k, v in before.items()), "an earlier file changed"  # the old output kept


def test_a_full_disk_while_appending_to_metrics_is_one_line_and_leaves_whole_lines(
    world, tmp_path, capsys, monkeypatch
):
    """metrics.jsonl grows a line at a time (guards.outputs.Appender): the disk fills halfway through the
    second line; the command says so in one line naming the file, which keeps its first line whole."""
    real, appends = os.write, []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            appends.append(len(data))
            if len(appends) == 2:
                return real(fd, bytes(data[: len(data) // 2]))  # half of it lands, then the disk is full
            if len(appends) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    code, _out, err = run_cli(["pretrain", str(world.config), "--out", str(tmp_path / "run"), "-q"], capsys)
    monkeypatch.undo()
    metrics = tmp_path / "run" / "metrics.jsonl"
    line = assert_one_line_error(code, err, "No space left on device", "pretrain")
    assert str(metrics) in line and BYTES.search(line), line
    text = metrics.read_text()
    assert len(appends) >= 2 and text.endswith("\n") and len(text.splitlines()) == 1, text
    json.loads(text)  # the line before the full disk, whole


# ------------------------------------------------------------------------------ every writer, one fault


def _writers() -> dict[str, object]:
    """Each kind of content dogo writes, as the writer function :class:`~dogo.guards.outputs.Outputs` renders."""
    import numpy as np

    big = torch.arange(50_000, dtype=torch.float32)
    found = {
        "text": "x" * 200_000,
        "json": json.dumps({"values": list(range(40_000))}),
        "torch.save": lambda f: torch.save({"w": big}, f),
        "numpy": lambda f: np.save(f, big.numpy()),
    }
    try:
        from safetensors.torch import save

        found["safetensors"] = save({"w": big})
    except ImportError:
        pass
    try:
        import onnx  # noqa: F401

        model = torch.nn.Linear(300, 300)
        found["onnx"] = lambda f: torch.onnx.export(model, (torch.zeros(1, 300),), f, dynamo=False)
    except ImportError:
        pass

    def figure(f):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(12, 12))
        ax.imshow(np.random.default_rng(0).random((400, 400)))
        fig.savefig(f, format="png", dpi=100)
        plt.close(fig)

    found["figure"] = figure
    return found


WRITER_KINDS = ["text", "json", "torch.save", "numpy", "safetensors", "onnx", "figure", "checkpoint"]


@pytest.mark.parametrize("kind", WRITER_KINDS)
def test_every_writer_on_a_full_disk(kind, tmp_path, monkeypatch):
    from dogo.core.errors import DogoError
    from dogo.guards.outputs import write_output
    from dogo.runs.checkpoint import save_checkpoint

    writers = _writers()
    if kind not in writers and kind != "checkpoint":
        pytest.skip(f"{kind} is not installed here")
    target = tmp_path / f"out.{kind}"
    target.write_bytes(b"what the user had")
    full_disk(monkeypatch)
    with pytest.raises(DogoError) as error:
        if kind == "checkpoint":
            save_checkpoint(target, {"w": torch.zeros(1000)}, keep_previous=True)
        else:
            write_output(target, writers[kind])
    monkeypatch.undo()
    text = str(error.value)
    assert str(target) in text and "No space left on device" in text and "\n" not in text, text
    assert re.search(r"[\d.]+ (bytes|kB|MB)", text), text
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file
    assert target.read_bytes() == b"what the user had"


CHILD = """
import json, resource, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from test_guards_outputs import _writers
from dogo.runs.checkpoint import save_checkpoint
from dogo.core.errors import DogoError
from dogo.guards.outputs import write_output

folder = Path(sys.argv[1])
writers = _writers()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
report = {}
for kind in [*writers, "checkpoint"]:
    target = folder / f"out.{kind}"
    target.write_bytes(b"what the user had")
    try:
        if kind == "checkpoint":
            save_checkpoint(target, {"w": torch.zeros(10000)}, keep_previous=True)
        else:
            write_output(target, writers[kind])
        report[kind] = "written"
    except DogoError as exc:
        report[kind] = str(exc)
print(json.dumps(report))
"""


def test_every_writer_under_a_real_file_size_limit(tmp_path):
    """RLIMIT_FSIZE in a child process: the kernel refuses the bytes, as a full disk or a quota would."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    (tmp_path / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert {"text", "json", "torch.save", "numpy", "figure", "checkpoint"} <= set(report)
    for kind, message in report.items():
        assert "File too large" in message and "\n" not in message, (kind, message)
        assert re.search(r"[\d.]+ (bytes|kB|MB)", message), (kind, message)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"out.{kind}" for kind in report)  # no temporary files
    assert all((tmp_path / "out" / name).read_bytes() == b"what the user had" for name in names)


# ------------------------------------------------------------------------------ never over what the user had


def _export(w: World, out: Path, *more: str) -> list[str]:
    return ["export", str(w.run), "--format", "safetensors", "--out", str(out), *more]


REFUSED = {
    "export-over-config.yaml": (lambda w, tmp: _export(w, w.run / "config.yaml"), "one of the files of the dogo run"),
    "export-over-last.pt": (lambda w, tmp: _export(w, w.run / "checkpoints" / "last.pt"), "dogo run folder"),
    "export-over-its-checkpoint": (
        lambda w, tmp: _export(w, tmp / "x.pt", "--checkpoint", str(tmp / "x.pt")),
        "an input of this command",
    ),
    "export-over-a-link": (lambda w, tmp: _export(w, tmp / "link.safetensors"), "a symbolic link"),
    "export-over-a-folder": (lambda w, tmp: _export(w, w.photos), "it is a folder"),
    "embed-into-a-runs-eval": (
        lambda w, tmp: ["embed", str(w.run), "--data", str(w.photos), "--out", str(w.run / "eval" / "f.npy")],
        "dogo run folder",
    ),
    "report-into-checkpoints": (
        lambda w, tmp: ["report", str(w.run), "--out", str(w.run / "checkpoints")],
        "dogo run folder",
    ),
    "study-report-over-its-arms": (
        lambda w, tmp: ["report", str(w.study), "--out", str(w.study / "arms" / "a.md")],
        "dogo study folder",
    ),
    "prepare-over-its-images": (
        lambda w, tmp: [
            "prepare",
            "imagefolder",
            "--root",
            str(w.photos),
            "--image-size",
            "8",
            "--out",
            str(w.photos),
            "--force",
        ],
        "an input of this command",
    ),
    "prepare-over-a-run": (
        lambda w, tmp: ["prepare", "digits", "--out", str(w.run), "--force"],
        "a dogo run folder, not a store",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_an_output_over_what_the_user_had_is_refused(name, world, tmp_path, capsys):
    needs(name)
    copy = world.copy(tmp_path)
    shutil.copy(copy.run / "checkpoints" / "last.pt", tmp_path / "x.pt")
    (tmp_path / "mine.safetensors").write_text("the user's own file")
    os.symlink(tmp_path / "mine.safetensors", tmp_path / "link.safetensors")
    make, expect = REFUSED[name]
    argv = make(copy, tmp_path)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    line = assert_one_line_error(code, err, expect, argv[0])
    assert "not written" in line
    assert_nothing_lost(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------ the umask


def test_files_follow_the_umask(world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    before = set(snapshot(tmp_path))
    previous = os.umask(0o027)
    try:
        for command in ("pretrain", "evaluate", "export-torchscript", "embed-npy", "report", "prepare"):
            code, _, err = run_cli([*WRITERS[command](copy, tmp_path), "-q"], capsys)
            assert code == 0, (command, err)
    finally:
        os.umask(previous)
    made = [tmp_path / p for p in set(snapshot(tmp_path)) - before]
    assert any(p.name == "config.yaml" for p in made) and any(p.suffix == ".pt" for p in made)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made if not p.is_symlink()}
    wrong = {k: m for k, m in modes.items() if m != (oct(0o750) if (tmp_path / k).is_dir() else oct(0o640))}
    assert not wrong, wrong
