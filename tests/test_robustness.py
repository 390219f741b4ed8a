"""The bad-input catalogue, grown by class (issue 13): one parametrised family per class of fault.

Each family fixes a class at its root, so its cases are examples, not the list: cases named in
the issue and cases nobody listed. Cases that fit the catalogue's contract (exit 2, one line
``dogo CMD: error: ...``, no traceback, nothing under ``tmp_path`` changed or created) are in
:data:`CASES` and run by :func:`test_bad_input_by_class`; the rest need a second process, a
real step of training or a look at what was recomputed, and follow as their own families.

Classes: 1 exceptions that are not dogo's own, 2 two processes on one run directory, 3 stored
bytes read back, 4 append-only logs after a crash, 5 files that are not what their name says,
6 paths that leave their folder, 7 inputs the schema should refuse, 8 a first step that fails.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dogo.cli import main
from dogo.config import load_config
from dogo.data.safetar import safe_extract
from dogo.evaluate.features import FeatureCache
from dogo.evaluate.results import load_results, save_result
from dogo.guards.ownership import mark
from dogo.runs import runlock
from dogo.runs.rundir import prepare_run_dir
from dogo.training.trainer import Trainer
from test_bad_inputs import (
    assert_nothing_lost,
    assert_one_line_error,
    config,
    idx_dataset,
    member,
    png,
    pretrain,
    run_cli,
    snapshot,
    tarball,
    write_config,
)


@dataclass
class Bad:
    argv: list[str]
    expect: str
    command: str = "pretrain"
    may_create: tuple[str, ...] = ()


CASES: dict[tuple[int, str], Callable[..., Bad]] = {}


def case(cls: int, name: str):
    def register(fn):
        CASES[(cls, name)] = fn
        return fn

    return register


def filelist(tmp: Path, lines: list[str], list_file: str = "{split}.txt") -> Bad:
    for i in range(3):
        png(tmp / "list" / "img" / f"{i}.png")
    (tmp / "list" / "train.txt").write_text("\n".join(lines) + "\n")
    return Bad(
        pretrain(tmp, config({"name": "filelist", "root": str(tmp / "list"), "options": {"list_file": list_file}})), ""
    )


def images(tmp: Path, count: int = 8) -> Path:
    for i in range(count):
        png(tmp / "images" / "cat" / f"{i}.png")
    return tmp / "images"


def folder_case(tmp: Path, expect: str, **options) -> Bad:
    return Bad(pretrain(tmp, config({"name": "imagefolder", "root": str(tmp / "images"), "options": options})), expect)


# --- 1. exceptions that are not dogo's own


@case(1, "seed-beyond-64-bits")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "seed=18446744073709551617"), "seed: ")


@case(1, "infinite-warmup")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "train.models.0.schedule.warmup_epochs=.inf"), "warmup_epochs: ")


@case(1, "nan-learning-rate")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "train.models.0.optimizer.lr=.nan"), "optimizer.lr: ")


@case(1, "binary-config-file")
def _(tmp, **_):
    (tmp / "config.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfa")
    return Bad(["pretrain", str(tmp / "config.yaml"), "--out", str(tmp / "run")], "not a text file")


@case(1, "config-is-a-folder")
def _(tmp, **_):
    (tmp / "configs").mkdir()
    return Bad(["pretrain", str(tmp / "configs"), "--out", str(tmp / "run")], "Is a directory")


@case(1, "device-mps")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "train.device=mps"), "train.device: unknown device")


@case(1, "device-cuda-absent")
def _(tmp, **_):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return Bad(pretrain(tmp, config(), "train.device=cuda:3"), "no CUDA device")


@case(1, "out-name-too-long")
def _(tmp, **_):
    return Bad(["pretrain", str(write_config(tmp, config())), "--out", str(tmp / ("x" * 300))], "File name too long")


@case(1, "report-out-is-a-file")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run")
    (tmp / "afile").write_text("mine")
    return Bad(["report", str(run), "--out", str(tmp / "afile")], "afile", command="report")


@case(1, "evaluate-results-folder-is-a-file")
def _(tmp, digits_run, **_):
    run = shutil.copytree(digits_run, tmp / "run")
    shutil.rmtree(run / "eval")
    (run / "eval").write_text("not a folder")  # as a full disk would, the results cannot be written
    return Bad(["evaluate", str(run), "--protocol", "knn", "k=5"], "eval", command="evaluate")


# --- 5. files that are not what their name says


@case(5, "fifo-named-png")
def _(tmp, **_):
    os.mkfifo(images(tmp) / "cat" / "x.png")
    return folder_case(tmp, "x.png: not a regular file (a FIFO)", image_size=8)


@case(5, "device-named-png")
def _(tmp, **_):
    os.symlink("/dev/zero", images(tmp) / "cat" / "zero.png")
    return folder_case(tmp, "zero.png: not a regular file (a device file)", image_size=8)


@case(5, "dangling-link-named-png")
def _(tmp, **_):
    os.symlink(tmp / "gone.png", images(tmp) / "cat" / "gone.png")
    return folder_case(tmp, "gone.png: cannot read (No such file", image_size=8)


@case(5, "float-image")
def _(tmp, **_):
    Image.fromarray(np.ones((12, 12), dtype=np.float32)).save(images(tmp) / "cat" / "float.tiff")
    return folder_case(tmp, "float.tiff: 32-bit float image (mode F)", image_size=8)


@case(5, "image-size-needs-terabytes")
def _(tmp, **_):
    images(tmp)
    return folder_case(tmp, "of memory, more than the", image_size=100000)


@case(5, "fifo-in-a-file-list")
def _(tmp, **_):
    found = filelist(tmp, ["img/0.png 0", "img/pipe.png 1"])
    os.mkfifo(tmp / "list" / "img" / "pipe.png")
    found.expect = "pipe.png: not a regular file (a FIFO)"
    return found


# --- 6. paths that leave their folder


@case(6, "name-with-dotdot")
def _(tmp, **_):
    return Bad(["pretrain", str(write_config(tmp, {**config(), "name": ".."}))], "name: a run name is one folder name")


@case(6, "name-with-a-slash")
def _(tmp, **_):
    return Bad(["pretrain", str(write_config(tmp, config())), "name=../../escaped"], "name: a run name is one folder")


@case(6, "filelist-dotdot")
def _(tmp, **_):
    png(tmp / "outside.png")
    found = filelist(tmp, ["img/0.png 0", "../outside.png 1"])
    found.expect = "train.txt:2: image '../outside.png' leaves"
    return found


@case(6, "filelist-absolute")
def _(tmp, **_):
    png(tmp / "outside.png")
    found = filelist(tmp, [f"{tmp / 'outside.png'} 0"])
    found.expect = "train.txt:1: image"
    return found


@case(6, "list-file-outside")
def _(tmp, **_):
    (tmp / "outside.txt").write_text("img/0.png 0\n")
    found = filelist(tmp, ["img/0.png 0"], list_file="../outside.txt")
    found.expect = "list_file '../outside.txt' leaves"
    return found


@case(6, "list-file-bad-placeholder")
def _(tmp, **_):
    found = filelist(tmp, ["img/0.png 0"], list_file="{spilt}.txt")
    found.expect = "only {split} may be filled in"
    return found


@case(6, "report-mistyped-folder")
def _(tmp, runs, **_):
    return Bad(["report", str(tmp / "rnus" / "a")], "not a run directory", command="report")


@case(6, "evaluate-mistyped-folder")
def _(tmp, **_):
    return Bad(["evaluate", str(tmp / "rnus" / "a"), "--protocol", "knn"], "no such run directory", command="evaluate")


# --- 7. inputs the schema should refuse


@case(7, "infinite-distill-temperature")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "distill.temperature=.inf"), "distill.temperature: ")


@case(7, "infinite-simclr-temperature")
def _(tmp, **_):
    return Bad(
        pretrain(
            tmp,
            {
                **config(),
                "train": {
                    **config()["train"],
                    "models": [{"backbone": "resnet18", "width": 0.0625, "n_proj": 16, "temperature": float("inf")}],
                },
            },
        ),
        "temperature: ",
    )


@case(7, "duplicate-key")
def _(tmp, **_):
    text = yaml.safe_dump(config()) + "seed: 1\nseed: 2\n"
    return Bad(["pretrain", str(write_config(tmp, text)), "--out", str(tmp / "run")], "duplicate key 'seed'")


@case(7, "duplicate-nested-key")
def _(tmp, **_):
    text = "name: bad\ntrain:\n  epochs: 1\n  batch_size: 8\n  epochs: 5\n"
    return Bad(["pretrain", str(write_config(tmp, text)), "--out", str(tmp / "run")], "duplicate key 'epochs'")


@case(7, "empty-config")
def _(tmp, **_):
    return Bad(["pretrain", str(write_config(tmp, "")), "--out", str(tmp / "run")], "the file is empty")


@case(7, "comments-only-config")
def _(tmp, **_):
    return Bad(["pretrain", str(write_config(tmp, "# nothing yet\n")), "--out", str(tmp / "run")], "is empty")


@case(7, "unknown-probe-setting")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "eval.linear={epochz: 5}"), "unknown probe setting 'epochz'")


@case(7, "bad-probe-value")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "eval.linear={epochs: -1}"), "probe setting epochs")


@case(7, "alias-bomb")
def _(tmp, **_):
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
    )
    return Bad(
        ["pretrain", str(write_config(tmp, yaml.safe_dump(config()) + text)), "--out", str(tmp / "run")],
        "expands to more than",
    )


@case(7, "epochs-beyond-any-run")
def _(tmp, **_):
    return Bad(pretrain(tmp, config(), "train.epochs=100000000000"), "train.epochs: ")


# --- 8. a run directory left by a run that never checkpointed


@case(8, "resume-never-checkpointed")
def _(tmp, **_):
    run = never_checkpointed(tmp / "run")
    return Bad(["pretrain", "--resume", str(run)], f"start it again with `dogo pretrain CONFIG --out {run}`")


# ------------------------------------------------------------------------------ fixtures


def never_checkpointed(run: Path) -> Path:
    """What a run killed during its first epoch leaves behind (its marker says dogo made the folder)."""
    (run / "checkpoints").mkdir(parents=True)
    mark(run, "run")
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.1.host").write_bytes(b"\0" * 40)
    (run / "config.yaml").write_text(yaml.safe_dump(config()))
    (run / "metrics.jsonl").write_text('{"step": 1, "peer/0/loss": 4.2}\n{"step": 2, "pee')
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A 2-step run on scikit-learn's digits (labelled train and test splits), with its feature cache."""
    cfg = config({"name": "digits", "eval_split": "test"})
    path = write_config(tmp_path_factory.mktemp("config-digits"), cfg)
    run_dir = prepare_run_dir(load_config(path), tmp_path_factory.mktemp("run-digits") / "run")
    threads = torch.get_num_threads()
    Trainer(load_config(path), run_dir, log=lambda m: None).fit()
    runlock.release_all()
    assert main(["evaluate", str(run_dir), "--protocol", "knn", "k=5"]) == 0
    torch.set_num_threads(threads)
    return run_dir


# ------------------------------------------------------------------------------ the catalogue by class


@pytest.mark.parametrize("key", list(CASES), ids=[f"class{c}-{n}" for c, n in CASES])
def test_bad_input_by_class(key, tmp_path, capsys, monkeypatch, runs, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOGO_DATA", raising=False)
    extra = (
        {"digits_run": request.getfixturevalue("digits_run")}
        if "digits_run" in CASES[key].__code__.co_varnames or key[1].startswith("evaluate-results")
        else {}
    )
    found = CASES[key](tmp_path, runs=runs, **extra)
    capsys.readouterr()  # what building the fixtures printed
    before = snapshot(tmp_path)
    code, out, err = run_cli(found.argv, capsys)
    line = assert_one_line_error(code, err, found.expect, found.command)
    assert out == ""
    assert_nothing_lost(before, snapshot(tmp_path), found.may_create)
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists(), line


def test_every_class_has_a_family():
    counts = {c: sum(1 for k in CASES if k[0] == c) for c in (1, 5, 6, 7)}
    assert all(n >= 4 for n in counts.values()), counts


# ------------------------------------------------------------------------------ 1. bugs say so


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_says_it_is_a_bug(tmp_path, capsys, monkeypatch, debug):
    import dogo.cli.data

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(dogo.cli.data, "cmd_datasets", broken)
    code, _, err = run_cli(["datasets", *(["--debug"] if debug else [])], capsys)
    assert code == 1
    assert ("Traceback" in err) == debug
    assert err.splitlines()[0].startswith("dogo datasets: internal error (a bug in dogo")
    assert "TypeError: unsupported operand" in err and (debug or len(err.splitlines()) == 1)


def test_ctrl_c_before_training_starts(tmp_path, capsys, monkeypatch):
    import dogo.config

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dogo.config, "load_config", interrupted)
    code, _, err = run_cli(pretrain(tmp_path, config()), capsys)
    assert code == 130 and err == "dogo pretrain: interrupted\n"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ 2. one process per run


HOLDER = (
    "import sys; from dogo.runs.runlock import acquire; acquire(sys.argv[1]); "
    "print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def held(tmp_path):
    """Start a process that owns a run directory; yields (start(run) -> pid, stop())."""
    procs = []

    def start(run: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # waits, and closes its pipes


@pytest.mark.parametrize("second", ["resume", "resume-with-overrides", "out-of-a-first-epoch-run"])
def test_a_second_process_is_refused_naming_the_owner(second, tmp_path, capsys, runs, held):
    if second == "out-of-a-first-epoch-run":
        run = never_checkpointed(tmp_path / "run")
        argv = ["pretrain", str(write_config(tmp_path, config())), "--out", str(run)]
    else:
        run = shutil.copytree(runs["a"], tmp_path / "run")
        argv = ["pretrain", "--resume", str(run)] + (["train.epochs=3"] if second == "resume-with-overrides" else [])
    owner = held(run)
    before = snapshot(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, f"in use by process {owner.pid}")
    assert snapshot(tmp_path) == before


def test_a_killed_owner_leaves_no_stale_lock(tmp_path, capsys, runs, held):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    owner = held(run)
    assert runlock.is_locked(run) and runlock.owner_pid(run) == owner.pid
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert not runlock.is_locked(run)
    code, _, err = run_cli(["pretrain", "--resume", str(run)], capsys)
    assert code == 0, err


def test_the_lock_is_released_when_the_command_ends(tmp_path, capsys, runs):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    for _ in range(2):  # the same process twice: the first command gave the folder back
        code, _, err = run_cli(["pretrain", "--resume", str(run)], capsys)
        assert code == 0, err
    assert not runlock._HELD


# ------------------------------------------------------------------------------ 3. stored bytes verified


class Pixels(torch.nn.Module):
    feature_dim = 3 * 8 * 8

    def forward(self, x):
        return x.flatten(1)


def _damage(kind: str, path: Path, dataset) -> None:
    if kind == "flipped-byte":
        data = bytearray(path.read_bytes())
        stored = torch.load(path, weights_only=True)
        raw = stored["features"].numpy().tobytes()
        at = bytes(data).find(raw[:64])
        data[at + 100] ^= 0x40
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("wrong-shape", "no-hash", "wrong-labels"):
        stored = torch.load(path, weights_only=True)
        if kind == "wrong-shape":
            stored["features"] = stored["features"][:-3]
            stored["labels"] = stored["labels"][:-3]
        elif kind == "wrong-labels":
            stored["labels"] = (stored["labels"] + 1) % 10
        if kind != "no-hash":
            from dogo.evaluate.features import content_hash

            stored["sha256"] = content_hash(stored["features"], stored["labels"])  # consistent, yet wrong
        else:
            del stored["sha256"]
        torch.save(stored, path)
    elif kind == "foreign-pickle":
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize(
    "kind", ["flipped-byte", "truncated", "empty", "wrong-shape", "wrong-labels", "no-hash", "foreign-pickle"]
)
def test_a_damaged_feature_cache_is_recomputed_saying_so(kind, tmp_path):
    from dogo.data import load_dataset

    dataset = load_dataset("digits", split="test")
    cache = FeatureCache(tmp_path / "cache", "model")
    clean, labels = cache.get(Pixels(), dataset, "test", 8)
    (path,) = (tmp_path / "cache").glob("*.pt")
    _damage(kind, path, dataset)
    again = FeatureCache(tmp_path / "cache", "model")
    with pytest.warns(UserWarning, match="is damaged"):
        features, got = again.get(Pixels(), dataset, "test", 8)
    assert again.misses == 1 and torch.equal(features, clean) and torch.equal(got, labels)
    assert FeatureCache(tmp_path / "cache", "model").load(again.key(dataset, "test", 8), dataset) is not None


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path):
    from dogo.data import load_dataset

    dataset = load_dataset("digits", split="test")
    (tmp_path / "cache").write_text("a file where the folder should be")
    cache = FeatureCache(tmp_path / "cache" / "features", "model")
    with pytest.warns(UserWarning, match="continuing without it"):
        features, _ = cache.get(Pixels(), dataset, "test", 8)
    assert features.shape == (len(dataset), 192)


@pytest.mark.parametrize("damage", ["number-changed", "truncated", "not-json"])
def test_a_damaged_result_is_refused_saying_so(damage, tmp_path):
    path = save_result(tmp_path, 0, "knn", {"summary": {"top1": 91.25}, "top1": 91.25})
    text = path.read_text()
    path.write_text(
        {"number-changed": text.replace("91.25", "99.25"), "truncated": text[:40], "not-json": "\0\0\0"}[damage]
    )
    with pytest.warns(UserWarning, match="damaged|unreadable"):
        assert load_results(tmp_path) == []


def test_a_sound_result_reads_back(tmp_path):
    save_result(tmp_path, 1, "linear", {"summary": {"top1": 50.0}, "curve": (1.0, float("nan"))})
    (record,) = load_results(tmp_path)
    assert record["summary"] == {"top1": 50.0} and record["peer"] == 1


# ------------------------------------------------------------------------------ 4. logs after a crash


@pytest.mark.parametrize(
    "tear",
    ["torn-json-after-checkpoint", "cut-mid-line-before-checkpoint", "binary-junk", "shorter-at-a-line-boundary"],
)
def test_a_torn_metrics_log_is_cut_back_on_resume(tear, tmp_path, capsys, runs):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    metrics = run / "metrics.jsonl"
    text = metrics.read_bytes()
    lines = text.splitlines(keepends=True)
    if tear == "torn-json-after-checkpoint":
        metrics.write_bytes(text + b'{"step": 3, "peer/0/lo')
    elif tear == "cut-mid-line-before-checkpoint":
        metrics.write_bytes(text[:-7])
    elif tear == "binary-junk":
        metrics.write_bytes(text + b"\x00\xff" * 20)
    else:
        metrics.write_bytes(b"".join(lines[:-1]))
    code, _, err = run_cli(["pretrain", "--resume", str(run), "train.max_steps=3"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole
    assert rows[-1]["step"] == 3
    if tear in ("cut-mid-line-before-checkpoint", "shorter-at-a-line-boundary"):
        assert "shorter than its checkpoint recorded" in err
    if tear == "cut-mid-line-before-checkpoint":
        assert "cut a torn last line" in err


# ------------------------------------------------------------------------------ 5. decoding every mode


@pytest.mark.parametrize("mode", ["I;16", "I", "L", "LA", "P", "RGBA", "CMYK", "1"])
def test_every_pil_mode_decodes_to_8_bit_by_its_meaning(mode, tmp_path):
    from dogo.data.folder import decode_image

    ramp = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    if mode in ("I;16", "I"):  # a 16-bit PNG, and 16-bit values in a 32-bit TIFF
        wide = np.round(ramp * 65535).astype(np.uint16 if mode == "I;16" else np.int32)
        image = Image.fromarray(wide)
        path = tmp_path / ("wide.png" if mode == "I;16" else "wide.tiff")
    else:
        image = Image.fromarray(np.round(ramp * 255).astype(np.uint8)).convert(mode)
        path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    image.save(path)
    decoded = decode_image(path, 16).astype(int)
    assert decoded.shape == (3, 16, 16)
    if mode not in ("1", "P", "CMYK"):  # these quantise or re-map; they only need to decode
        np.testing.assert_allclose(decoded[0], np.round(ramp * 255), atol=1)


# ------------------------------------------------------------------------------ 6. staged extraction


@pytest.mark.parametrize("fault", ["disk-full-on-second-member", "read-only-on-first-member"])
def test_a_tar_refused_half_way_leaves_nothing(fault, tmp_path, monkeypatch):
    members = [(member("stl10_binary/a.bin"), b"a" * 100), (member("stl10_binary/b.bin"), b"b" * 100)]
    archive = tarball(tmp_path / "x.tar.gz", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    real, seen = tarfile.TarFile.makefile, []
    failing = 2 if fault == "disk-full-on-second-member" else 1
    code = errno.ENOSPC if failing == 2 else errno.EROFS

    def makefile(self, tarinfo, targetpath):
        seen.append(tarinfo.name)
        if len(seen) == failing:
            raise OSError(code, os.strerror(code))
        return real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", makefile)
    match = os.strerror(code)
    from dogo.core.errors import DataError

    with pytest.raises(DataError, match=match):
        safe_extract(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_a_tar_that_passes_is_moved_into_place(tmp_path):
    archive = tarball(tmp_path / "x.tar.gz", [(member("stl10_binary/a.bin"), b"a" * 10)])
    (tmp_path / "dest" / "stl10_binary").mkdir(parents=True)
    mark(tmp_path / "dest" / "stl10_binary", "download")  # an earlier extraction by dogo
    (tmp_path / "dest" / "stl10_binary" / "stale.bin").write_text("from an earlier extraction")
    safe_extract(archive, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").rglob("*")) == [".dogo", "a.bin", "stl10_binary"]


def test_a_tar_never_replaces_a_folder_dogo_did_not_extract(tmp_path):
    """Issue 25: extraction replaces only a folder its marker says dogo extracted; the user's is left whole."""
    archive = tarball(tmp_path / "x.tar.gz", [(member("stl10_binary/a.bin"), b"a" * 10), (member("b.txt"), b"b")])
    mine = tmp_path / "dest" / "stl10_binary"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own file")
    before = sorted(p.name for p in (tmp_path / "dest").rglob("*"))
    from dogo.core.errors import DataError

    with pytest.raises(DataError, match=r"stl10_binary: left as it is: .*dogo did not extract") as error:
        safe_extract(archive, tmp_path / "dest")
    assert "\n" not in str(error.value) and "x.tar.gz" in str(error.value)
    assert sorted(p.name for p in (tmp_path / "dest").rglob("*")) == before  # nothing replaced, nothing added
    assert (mine / "notes.txt").read_text() == "the user's own file"


# ------------------------------------------------------------------------------ 7. max_steps bounds the work


def test_max_steps_with_a_huge_epoch_count_precomputes_nothing(tmp_path, capsys):
    data = idx_dataset(tmp_path / "fmnist")
    argv = pretrain(tmp_path, config({"root": str(data)}), "train.epochs=10000000", "train.max_steps=1")
    started = time.process_time()
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert time.process_time() - started < 60  # a list of 80 million rates alone would take longer


def test_study_files_keep_their_merge_keys():
    from dogo.study import load_study

    for path in sorted(Path(__file__).parents[1].glob("studies/*.yaml")):
        load_study(path)


# ------------------------------------------------------------------------------ 8. a first step that fails


@pytest.mark.parametrize("failure", ["data-error", "non-finite", "ctrl-c", "disk-full-at-first-checkpoint"])
def test_a_failed_first_step_leaves_a_reusable_out(failure, tmp_path, capsys, monkeypatch):
    import dogo.training.trainer
    from dogo.core.errors import DataError

    data = idx_dataset(tmp_path / "fmnist")
    argv = pretrain(tmp_path, config({"root": str(data)}))
    real_step, real_write = dogo.training.trainer.training_step, os.write

    def failing_step(*args, **kwargs):
        if failure == "data-error":
            raise DataError("the batch was unreadable")
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        result, rates = real_step(*args, **kwargs)
        result.finite, result.bad_term = False, "peer 0 (x) loss"
        return result, rates

    def full(fd, payload):
        if ".last.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, payload)

    if failure == "disk-full-at-first-checkpoint":
        monkeypatch.setattr(os, "write", full)
    else:
        monkeypatch.setattr(dogo.training.trainer, "training_step", failing_step)
    code, _, err = run_cli(argv, capsys)
    monkeypatch.undo()
    assert code == (130 if failure == "ctrl-c" else 2), err
    assert "Traceback" not in err
    if failure != "ctrl-c":  # the run had started (its directory and device lines), then one error line
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
        assert errors[0].startswith("dogo pretrain: error: ") and "was removed: the run failed before its first" in err
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(argv, capsys)  # the same command again
    assert code == 0, err


def test_out_reuses_a_folder_left_by_a_killed_first_epoch(tmp_path, capsys):
    data = idx_dataset(tmp_path / "fmnist")
    never_checkpointed(tmp_path / "run")
    code, _, err = run_cli(pretrain(tmp_path, config({"root": str(data)})), capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not list((tmp_path / "run" / "tb").glob("events.out.tfevents.1.host"))
    assert all(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
