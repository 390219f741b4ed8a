"""Class 1, writing an output (issue 25): one helper, :mod:`dogo.guards.outputs`, under every command that writes.

Each family runs through :data:`guarded.WRITERS` (a new command joins by adding itself there) and
compares the hashes of every file around the command's folders before and after:

- a full disk while writing: one line naming the path and the bytes wanted, no temporary file
  left, the previous output intact; the same on one file a command writes after others
  (:data:`FILES`: kept weights, a study's figures, a store's ``images.npy``) and while downloading
  a dataset (:data:`DOWNLOADS`: a file, a tarball extracted); a resume's ``config.yaml`` and
  ``resume-log.jsonl`` line change together or not at all;
- the writers outside the helper on purpose (TensorBoard's event file, a study run's log; MLflow's
  store in ``test_guards_services``): one warning or one line naming it, no traceback;
- every kind of writer (text, JSON, ``torch.save``, numpy, safetensors, ONNX, a figure, a
  checkpoint, a stream written in pieces, a memory-mapped file) under the same fault, simulated
  twice: ``os.write`` (and ``posix_fallocate``) failing with ENOSPC, and a real file-size limit
  (``RLIMIT_FSIZE``) in a child process;
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


def full_disk(monkeypatch, part: str = "") -> None:
    """The disk is full for every file whose name holds ``part``: ``os.write`` to its temporary file (or to an
    append-only log, ``*.jsonl``, which grows in place) fails, and so does reserving its blocks up front
    (``posix_fallocate``: a download, an image store's ``images.npy``)."""
    real = os.write

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if (".tmp-" in target or target.endswith(".jsonl")) and part in os.path.basename(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    def reserve(fd, offset, length):
        if part in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "posix_fallocate", reserve)


def temporaries(snap: dict[str, str]) -> list[str]:
    """What a write in progress leaves: a temporary file, a store's work folder, an archive's staging folder."""
    return [p for p in snap if any(mark in p for mark in (".tmp-", ".partial", ".extract-"))]


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_full_disk_is_one_line_and_keeps_the_old_output(command, world, tmp_path, capsys, monkeypatch):
    needs(command)
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    argv = [*WRITERS[command](copy, tmp_path), "-q"]
    if not command.startswith(("pretrain", "quickstart")):  # (those two make new runs) the output exists already:
        # the failed write must leave it as it was
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


# ------------------------------------------------------------------------------ files the family above does not reach

#: each file a command writes after others (the disk that is full for every file stops the command at its first
#: one): the command that writes it, the name of the file the disk fills on, and whether the command has run
#: once already (the file exists then, and must be kept as it was; the photos change in between, so that
#: prepare --force rebuilds its store)
FILES = {
    "checkpoints/step-0.pt": ("pretrain-keep-at", "step-0.pt", False),
    "kept.json": ("pretrain-keep-at", "kept.json", False),
    "arms/a.flops.json": ("study-budgets", "a.flops.json", False),
    "budget figure": ("study-budgets", "budget-", True),
    # filled through a memory map in the store's work folder, its blocks reserved up front
    "store images.npy": ("prepare", "images.npy", True),
    # appended after the new config.yaml was written to its temporary file: neither may change without the other
    "resume-log.jsonl": ("pretrain-resume", "resume-log.jsonl", False),
}


@pytest.mark.parametrize("name", list(FILES))
def test_a_full_disk_on_one_file_is_one_line_naming_it(name, world, tmp_path, capsys, monkeypatch):
    command, part, again = FILES[name]
    copy = world.copy(tmp_path)
    (tmp_path / "out").mkdir()
    argv = [*WRITERS[command](copy, tmp_path), "-q"]
    if again:
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        add_photo(copy)
    before = snapshot(tmp_path)
    full_disk(monkeypatch, part)
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", argv[0])
    assert part in line and (BYTES.search(line) or "MB wanted" in line), line
    after = snapshot(tmp_path)
    assert not temporaries(after), sorted(after)  # no temporary file left
    assert all(after.get(k) == v for k, v in before.items()), "an earlier file changed"  # the old output kept


# ------------------------------------------------------------------------------ downloads


def _mnist(served: Path, monkeypatch) -> None:
    """A two-file MNIST (labels first) at file:// URLs in place of the public one."""
    import numpy as np

    from dogo.data import download as dl
    from test_data_download import idx_gz, md5

    rng = np.random.default_rng(0)
    files = {
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 40)),
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (40, 28, 28))),
    }
    for name, data in files.items():
        (served / name).write_bytes(data)
    monkeypatch.setitem(
        dl.RESOURCES, "mnist", tuple(dl.Resource(n, (served.as_uri() + "/" + n,), md5=md5(d)) for n, d in files.items())
    )


def _stl10(served: Path, monkeypatch) -> None:
    """An STL-10 tarball of one unlabeled image at a file:// URL in place of the public one."""
    from dogo.data import download as dl
    from test_data_download import md5, member, tar_gz

    payloads = {"stl10_binary/unlabeled_X.bin": bytes(range(256)) * 108}
    tarball = tar_gz([member(n) for n in payloads], payloads)
    (served / "stl10_binary.tar.gz").write_bytes(tarball)
    url = served.as_uri() + "/stl10_binary.tar.gz"
    monkeypatch.setitem(
        dl.RESOURCES, "stl10", (dl.Resource("stl10_binary.tar.gz", (url,), md5=md5(tarball), extract=True),)
    )


def _extraction_fails(monkeypatch) -> None:
    """The disk fills while a tarball is extracted (tarfile writes each member through ``copyfileobj``)."""
    import tarfile

    def copy(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tarfile, "copyfileobj", copy)


#: pretrain with ``dataset.download: true``: the dataset served, what the user had in the data folder (kept),
#: the overrides, the fault and the name the line names; a file written by the stream of every output, its size
#: reserved up front (posix_fallocate) or not (os.write), and a tarball extracted into a staging folder
DOWNLOADS = {
    "file, while writing": (_mnist, "mnist", {"train-labels-idx1-ubyte.gz": b"damaged"}, "write", "train-labels"),
    "file, at the reservation": (
        _mnist,
        "mnist",
        {"train-labels-idx1-ubyte.gz": b"damaged"},
        "reserve",
        "train-labels",
    ),
    "tarball, while extracting": (_stl10, "stl10", {"stl10_binary/class_names.txt": b"a\nb\n"}, "extract", "stl10"),
}


@pytest.mark.parametrize("name", list(DOWNLOADS))
def test_a_full_disk_while_downloading_is_one_line_and_keeps_what_was_there(name, world, tmp_path, capsys, monkeypatch):
    from dogo.data import DATASETS
    from dogo.data.base import locate

    serve, dataset, had, fault, named = DOWNLOADS[name]
    monkeypatch.delenv("DOGO_DATA", raising=False)
    if locate(DATASETS.get(dataset), None) is not None:
        pytest.skip(f"a system copy of {dataset} would be found before downloading")
    served, data = tmp_path / "served", tmp_path / "data"
    served.mkdir()
    serve(served, monkeypatch)
    for relative, content in had.items():
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_bytes(content)
    if dataset == "stl10":
        from dogo.guards.ownership import mark

        mark(data / "stl10_binary", "download")  # an earlier extraction, which this one would replace
    argv = [
        *("pretrain", str(world.config), "--out", str(tmp_path / "run"), "-q"),
        *(f"dataset.name={dataset}", f"dataset.root={data}", "dataset.download=true"),
    ]
    before = snapshot(tmp_path)
    if fault == "extract":
        _extraction_fails(monkeypatch)
    elif fault == "write":
        full_disk(monkeypatch, named)
        monkeypatch.setattr(os, "posix_fallocate", lambda fd, offset, length: None)  # reserved, then the disk fills
    else:
        full_disk(monkeypatch, named)
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", "pretrain")
    assert named in line and BYTES.search(line) and "free there" in line, line
    after = snapshot(tmp_path)
    assert not temporaries(after), sorted(after)
    # what the user had is kept; only a download that verified (the tarball, before its extraction) is new
    assert_nothing_lost(before, after, may_create=("data/stl10_binary.tar.gz",))


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


def test_a_resume_whose_config_cannot_be_renamed_leaves_its_log_as_it_was(world, tmp_path, capsys, monkeypatch):
    """--resume appends its resume-log.jsonl line before config.yaml is renamed into place: when the rename
    fails, the line is cut off again, so that the log never records a change config.yaml does not hold."""
    copy = world.copy(tmp_path)
    (copy.run / "resume-log.jsonl").write_text('{"step": 1}\n')  # an earlier resume's line: kept as it is
    real = os.replace

    def replace(source, target, *args, **kwargs):
        if str(target).endswith("config.yaml"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(source, target, *args, **kwargs)

    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "replace", replace)
    code, _out, err = run_cli(["pretrain", "--resume", str(copy.run), "train.max_steps=3", "-q"], capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", "pretrain")
    assert str(copy.run / "config.yaml") in line, line
    after = snapshot(tmp_path)
    assert not temporaries(after), sorted(after)
    assert all(after.get(k) == v for k, v in before.items()), "config.yaml or resume-log.jsonl changed"


# ------------------------------------------------------------------------------ writers outside the helper on purpose


def _tensorboard_fails(monkeypatch) -> None:
    """The disk fills under TensorBoard's event file (its writer thread writes through TensorBoard's GFile)."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gfile.GFile, "write", write)


def test_tensorboard_on_a_full_disk_is_one_warning_and_the_run_goes_on(world, tmp_path, capsys, monkeypatch):
    """tb/ is written by torch's SummaryWriter and its thread, not through the helper: a failure there is one
    warning naming the folder (no traceback from the thread), and the run trains to its end without TensorBoard."""
    pytest.importorskip("tensorboard")
    _tensorboard_fails(monkeypatch)
    run = tmp_path / "run"
    argv = ["pretrain", str(world.config), "--out", str(run), "logging.tensorboard=true", "-q"]
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {run / 'tb'}: cannot write TensorBoard's events"), err
    assert "No space left on device" in lines[0] and "going on without TensorBoard" in lines[0], err
    assert (run / "checkpoints" / "last.pt").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) > 1


def test_a_study_runs_log_on_a_full_disk_is_one_line_naming_it(world, tmp_path, capsys, monkeypatch):
    """A study run's log is its child's redirected stdout and stderr (the child writes it, not the helper); the
    study's own line at its head is the first write: on a full disk (/dev/full) one line naming the log."""
    import builtins

    import dogo.study.runner

    copy = world.copy(tmp_path)
    shutil.rmtree(copy.study / "a" / "seed-0")
    (copy.study / "a" / "seed-0.json").unlink()  # not trained: the study starts its child
    real = builtins.open

    def full(path, mode="r", *args, **kwargs):
        return real("/dev/full" if str(path).endswith(".log") else path, mode, *args, **kwargs)

    before = snapshot(tmp_path)
    monkeypatch.setattr(dogo.study.runner, "open", full, raising=False)
    argv = ["study", str(copy.study_file), "--out", str(copy.study), "--no-report", "-q"]
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "No space left on device", "study")
    assert f"{copy.study / 'a' / 'seed-0.log'}: cannot write" in line and BYTES.search(line), line
    after = snapshot(tmp_path)
    assert all(after.get(k) == v for k, v in before.items()), "a file of the study changed"


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


#: written in pieces rather than rendered whole: a download (its size known, so reserved up front, or not) and an
#: image store's images.npy (filled in place through a memory map, in a work folder renamed when whole)
PIECES = ["stream", "stream-reserved", "memmap"]
WRITER_KINDS = ["text", "json", "torch.save", "numpy", "safetensors", "onnx", "figure", "checkpoint", *PIECES]


def write_as(kind: str, target: Path, writers: dict[str, object]) -> None:
    """Write ``target`` as dogo writes that kind of content (``writers``: :func:`_writers`)."""
    import numpy as np

    from dogo.guards.outputs import Outputs, allocate, write_output
    from dogo.runs.checkpoint import save_checkpoint

    if kind == "checkpoint":
        save_checkpoint(target, {"w": torch.zeros(10_000)}, keep_previous=True)
    elif kind.startswith("stream"):
        chunks = [bytes(range(256)) * 64] * 4
        wanted = sum(map(len, chunks)) if kind == "stream-reserved" else None
        with Outputs() as out, out.stream(target, wanted=wanted) as stream:
            for chunk in chunks:
                stream.write(chunk)
    elif kind == "memmap":
        shape = (100, 1000)
        allocate(target, lambda p: np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=shape), wanted=100_000)
    else:
        write_output(target, writers[kind])


@pytest.mark.parametrize("kind", WRITER_KINDS)
def test_every_writer_on_a_full_disk(kind, tmp_path, monkeypatch):
    from dogo.core.errors import DogoError

    writers = _writers()
    if kind not in writers and kind not in ("checkpoint", *PIECES):
        pytest.skip(f"{kind} is not installed here")
    target = tmp_path / f"out.{kind}"
    if kind != "memmap":  # filled in place: a new file in a work folder, never over an old one
        target.write_bytes(b"what the user had")
    full_disk(monkeypatch)
    with pytest.raises(DogoError) as error:
        write_as(kind, target, writers)
    monkeypatch.undo()
    text = str(error.value)
    assert str(target) in text and "No space left on device" in text and "\n" not in text, text
    assert re.search(r"[\d.]+ (bytes|kB|MB)", text), text
    if kind == "memmap":
        assert list(tmp_path.iterdir()) == []  # not left half reserved
    else:
        assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file
        assert target.read_bytes() == b"what the user had"


CHILD = """
import json, resource, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from test_guards_outputs import PIECES, _writers, write_as
from dogo.core.errors import DogoError

folder = Path(sys.argv[1])
writers = _writers()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
report = {}
for kind in [*writers, "checkpoint", *PIECES]:
    target = folder / f"out.{kind}"
    if kind != "memmap":
        target.write_bytes(b"what the user had")
    try:
        write_as(kind, target, writers)
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
    assert {"text", "json", "torch.save", "numpy", "figure", "checkpoint", *PIECES} <= set(report)
    for kind, message in report.items():
        assert "File too large" in message and "\n" not in message, (kind, message)
        assert re.search(r"[\d.]+ (bytes|kB|MB)", message), (kind, message)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"out.{kind}" for kind in report if kind != "memmap")  # no temporary files
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
