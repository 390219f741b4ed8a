"""Class 2, deleting (issue 25): dogo removes only what it made, through :func:`dogo.guards.ownership.remove_owned`.

:data:`DELETERS` lists every command that removes something, each with a case where what it would
remove is not dogo's: a symbolic link into a folder of the user's, or a folder without the marker
dogo writes in the folders it makes. Each is refused in one line naming the path and why it was
left, and every file around (the user's folder behind the link included) keeps its hash. A new
command that deletes joins by adding itself to :data:`DELETERS`.

The same family, by outcome: :data:`GOES_ON` (a command that removes as it goes, keep_last, leaves what
is not dogo's with one warning naming it and goes on), :data:`FAILED_EARLY` (a run that fails in its first
step takes its folder and the empty folders its ``--out`` made, never one that was there before) and
:data:`OVER_AN_EXTRACTION` (a download extracted over a folder or a file of the user's).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dogo.cli import main
from guarded import TINY_QUICKSTART, World, digits_config, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot
from test_robustness import never_checkpointed


def user_folder(tmp: Path) -> Path:
    """A folder of the user's, with a file in it: what a link must never lead dogo into."""
    folder = tmp / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "thesis.txt").write_text("years of work")
    (folder / "cache.pt").write_bytes(b"not dogo's")
    return folder


def _clean_linked_cache(w: World, tmp: Path) -> list[str]:
    shutil.rmtree(w.run / "cache")
    os.symlink(user_folder(tmp), w.run / "cache")
    return ["clean", str(w.run), "--cache"]


def _clean_linked_checkpoint(w: World, tmp: Path) -> list[str]:
    os.symlink(user_folder(tmp) / "thesis.txt", w.run / "checkpoints" / "epoch-1.pt")
    return ["clean", str(w.run), "--checkpoints"]


def _clean_unmarked_run(w: World, tmp: Path) -> list[str]:
    (w.run / ".dogo").unlink()  # a run of a dogo older than the markers, or a folder that looks like one
    shutil.copy(w.run / "checkpoints" / "last.pt", w.run / "checkpoints" / "epoch-1.pt")
    return ["clean", str(w.run)]


def _prepare_force_over_a_folder(w: World, tmp: Path) -> list[str]:
    folder = user_folder(tmp)
    return ["prepare", "digits", "--out", str(folder), "--force"]


def _prepare_force_over_a_stale_unmarked_store(w: World, tmp: Path) -> list[str]:
    (w.store / ".dogo").unlink()
    meta = json.loads((w.store / "store.json").read_text())
    (w.store / "store.json").write_text(json.dumps({**meta, "format": "someone-elses"}))
    return ["prepare", "digits", "--out", str(w.store), "--force"]


def _prepare_over_a_stale_old_copy(w: World, tmp: Path) -> list[str]:
    (w.store / "store.json").write_text((w.store / "store.json").read_text().replace('"digest": "', '"digest": "0'))
    user_folder(tmp).rename(w.store.with_name(w.store.name + ".old"))  # the name dogo swaps an old store to
    return ["prepare", "digits", "--out", str(w.store), "--force"]


def _rerun_linked_arm(w: World, tmp: Path) -> list[str]:
    shutil.rmtree(w.study / "a")
    os.symlink(user_folder(tmp), w.study / "a")
    return ["study", str(w.study_file), "--out", str(w.study), "--rerun", "a", "--no-report"]


def _rerun_a_run_that_is_a_link(w: World, tmp: Path) -> list[str]:
    run = w.study / "a" / "seed-0"
    shutil.rmtree(run)
    os.symlink(user_folder(tmp), run)
    (w.study / "a" / "seed-0.json").unlink()  # not trained: the study would start it afresh
    return ["study", str(w.study_file), "--out", str(w.study), "--no-report"]


def _reuse_unmarked_first_epoch(w: World, tmp: Path) -> list[str]:
    run = never_checkpointed(tmp / "left")
    (run / ".dogo").unlink()
    return ["pretrain", str(w.config), "--out", str(run)]


DELETERS: dict[str, tuple[Callable[[World, Path], list[str]], str]] = {
    "clean-cache-is-a-link": (_clean_linked_cache, "cache: left as it is (dogo clean): a symbolic link to"),
    "clean-checkpoint-is-a-link": (_clean_linked_checkpoint, "epoch-1.pt: left as it is (dogo clean): a symbolic"),
    "clean-run-without-marker": (_clean_unmarked_run, "without the .dogo marker"),
    "prepare-force-over-a-users-folder": (_prepare_force_over_a_folder, "dogo did not make it"),
    "prepare-force-over-a-foreign-store": (
        _prepare_force_over_a_stale_unmarked_store,
        "left as it is (--force rebuilds only a store dogo made)",
    ),
    "prepare-force-next-to-a-users-old": (_prepare_over_a_stale_old_copy, "store.old: left as it is"),
    "study-rerun-arm-is-a-link": (_rerun_linked_arm, "a: left as it is (--rerun a): a symbolic link"),
    "study-run-is-a-link": (_rerun_a_run_that_is_a_link, "seed-0: left as it is"),
    "pretrain-out-reuse-without-marker": (_reuse_unmarked_first_epoch, "without the .dogo marker"),
}


@pytest.mark.parametrize("name", list(DELETERS))
def test_what_dogo_did_not_make_is_left_naming_it(name, world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = world.copy(tmp_path)
    make, expect = DELETERS[name]
    argv = [*make(copy, tmp_path), "-q"]
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    line = assert_one_line_error(code, err, expect, argv[0])
    assert "remove it yourself" in line or "remove the link yourself" in line, line
    assert_nothing_lost(before, snapshot(tmp_path))


# ------------------------------------------------------------------------- left with a warning, the command goes on


def _keep_last_meets_links(w: World, tmp: Path) -> list[str]:
    """A run keeping one epoch checkpoint, whose epoch-1.pt was moved to the user's folder and linked back, and
    whose epoch-2.pt (not written yet) is a link to a file of the user's; resumed to train two more epochs."""
    config = digits_config(epochs=1, max_steps=None, batch_size=64)
    config["dataset"]["options"] = {"limit": 128}  # two steps an epoch
    config["logging"].update(save_every=1, keep_last=1)
    (tmp / "keep.yaml").write_text(yaml.safe_dump(config))
    run = tmp / "kept-run"
    code = main(["pretrain", str(tmp / "keep.yaml"), "--out", str(run), "-q"])
    assert code == 0
    mine = user_folder(tmp)
    shutil.move(run / "checkpoints" / "epoch-1.pt", mine / "epoch-1.pt")
    os.symlink(mine / "epoch-1.pt", run / "checkpoints" / "epoch-1.pt")
    os.symlink(mine / "thesis.txt", run / "checkpoints" / "epoch-2.pt")
    return ["pretrain", "--resume", str(run), "train.epochs=3"]


#: each command that removes things as it goes, with a case where one of them is not dogo's: it is left as it
#: is with a warning naming it (said once), the command goes on to its end, and nothing of the user's changes
GOES_ON: dict[str, tuple[Callable[[World, Path], list[str]], list[str]]] = {
    "keep-last-epoch-checkpoints-are-links": (
        _keep_last_meets_links,
        [
            "kept-run/checkpoints/epoch-1.pt: left as it is (logging.keep_last): a symbolic link to",
            "kept-run/checkpoints/epoch-2.pt: not written: a symbolic link to",
            "kept-run/checkpoints/epoch-2.pt: left as it is (logging.keep_last): a symbolic link to",
        ],
    ),
}


@pytest.mark.parametrize("name", list(GOES_ON))
def test_what_dogo_did_not_make_is_left_with_a_warning_and_the_command_goes_on(name, world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    make, expect = GOES_ON[name]
    argv = [*make(copy, tmp_path), "-q"]
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert "Traceback" not in err and len(warned) == len(expect), err  # once each, however many epochs met it
    for part in expect:
        assert any(part in line for line in warned), (part, err)
    after = snapshot(tmp_path)
    theirs = [k for k, v in before.items() if k.startswith("mine") or v.startswith("link:")]
    assert theirs and all(after.get(k) == before[k] for k in theirs), "a link or a file of the user's changed"


# ------------------------------------------------------------------------------ a run that fails in its first step

#: each command that makes a run directory, with --out several folders below one that exists (``had``, empty,
#: the user's): when the run fails in its first step, its folder goes and so do the folders dogo made above it,
#: but ``had`` stays
FAILED_EARLY: dict[str, Callable[[World, Path], list[str]]] = {
    "pretrain": lambda w, tmp: ["pretrain", str(w.config), "--out", str(tmp / "had" / "a" / "b" / "run")],
    "quickstart": lambda w, tmp: ["quickstart", "--out", str(tmp / "had" / "a" / "b" / "qs"), *TINY_QUICKSTART],
}


@pytest.mark.parametrize("name", list(FAILED_EARLY))
def test_a_run_that_fails_early_takes_the_folders_it_made_and_no_other(name, world, tmp_path, capsys, monkeypatch):
    import dogo.training.trainer
    from dogo.core.errors import DataError

    def failing_step(*args, **kwargs):
        raise DataError("the batch was unreadable")

    copy = world.copy(tmp_path)
    (tmp_path / "had").mkdir()  # the user's (empty) folder: dogo did not make it, so it stays
    argv = [*FAILED_EARLY[name](copy, tmp_path), "-q"]
    before = snapshot(tmp_path)
    monkeypatch.setattr(dogo.training.trainer, "training_step", failing_step)
    code, _out, err = run_cli(argv, capsys)
    monkeypatch.undo()
    line = assert_one_line_error(code, err, "the batch was unreadable", argv[0])
    assert "was removed: the run failed before its first checkpoint" in line, line
    assert f"{tmp_path / 'had' / 'a'}, made for it" in line, line  # the folders above it are named
    assert_nothing_lost(before, snapshot(tmp_path))  # a and a/b gone; had kept
    assert (tmp_path / "had").is_dir()


# ------------------------------------------------------------------------------ what dogo made still goes


def test_what_dogo_made_is_removed(world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    shutil.copy(copy.run / "checkpoints" / "last.pt", copy.run / "checkpoints" / "epoch-1.pt")
    code, out, err = run_cli(["clean", str(copy.run)], capsys)
    assert code == 0 and "removed 2 item(s)" in out, err
    assert not (copy.run / "cache").exists() and not (copy.run / "checkpoints" / "epoch-1.pt").exists()
    meta = json.loads((copy.store / "store.json").read_text())
    (copy.store / "store.json").write_text(json.dumps({**meta, "digest": "stale"}))
    code, _, err = run_cli(["prepare", "digits", "--out", str(copy.store), "--force", "-q"], capsys)
    assert code == 0, err
    assert json.loads((copy.store / "store.json").read_text())["digest"] != "stale"
    assert not copy.store.with_name("store.old").exists() and (copy.store / ".dogo").is_file()


def test_a_study_rerun_removes_its_arm_and_a_legacy_study_is_adopted(world, tmp_path, capsys, monkeypatch):
    """--rerun removes the arm's runs inside a study dogo made; a study of an older dogo (no marker) is
    adopted when continued, so that the same works there."""
    copy = world.copy(tmp_path)
    (copy.study / ".dogo").unlink()
    (copy.study / "a" / "notes.txt").write_text("inside the arm's folder: goes with it")
    import dogo.study.runner

    trained = []
    monkeypatch.setattr(dogo.study.runner.Runner, "run_all", lambda self: trained.append(self.runs) or 0)
    code, _, err = run_cli(
        ["study", str(copy.study_file), "--out", str(copy.study), "--rerun", "a", "--no-report", "-q"], capsys
    )
    assert code == 0, err
    assert not (copy.study / "a").exists() and trained
    assert json.loads((copy.study / ".dogo").read_text())["made_by"].startswith("adopted by dogo study")


def test_cache_eviction_acts_only_on_a_cache_dogo_made(tmp_path):
    from dogo.guards.ownership import mark
    from dogo.runs.disk import cap_cache

    mine = user_folder(tmp_path)
    cache = tmp_path / "features"
    cache.mkdir()
    mark(cache, "cache")
    (cache / "a.pt").write_bytes(b"x" * 2_000_000)
    os.symlink(mine / "cache.pt", cache / "b.pt")  # an entry that is a link: never followed, never removed
    os.symlink(mine, cache / "sub")
    before = snapshot(tmp_path)
    assert [p.name for p in cap_cache(cache, 0)] == ["a.pt"]
    after = snapshot(tmp_path)
    assert {k for k in before if after.get(k) != before[k]} == {"features/a.pt"}
    with pytest.warns(UserWarning, match="dogo did not make this folder"):
        assert cap_cache(mine, 0) == []
    os.symlink(cache, tmp_path / "link-to-cache")
    with pytest.warns(UserWarning, match="dogo did not make this folder"):
        assert cap_cache(tmp_path / "link-to-cache", 0) == []
    assert (mine / "cache.pt").read_bytes() == b"not dogo's"


def _users_file(tmp: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("years of work")


#: what the user has where the downloaded archive's top-level folder goes: how to make it, and what the line says
OVER_AN_EXTRACTION: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "a folder of the user's": (lambda tmp, target: user_folder(tmp).rename(target), "left as it is: a folder"),
    "a file of the user's": (_users_file, "left as it is: a file of 13 bytes"),  # no marker: checked by its bytes
}


@pytest.mark.parametrize("had", list(OVER_AN_EXTRACTION))
def test_a_download_is_not_extracted_over_what_dogo_did_not_extract(had, world, tmp_path, capsys, monkeypatch):
    """pretrain with dataset.download: the archive's folder replaces an earlier extraction only when dogo made
    it (marker ``download``); a folder or a file of the user's by that name is left, in one line naming it. (Its
    own test, not a :data:`DELETERS` case: the download is served by replacing the dataset's table for this
    test.)"""
    from dogo.data import DATASETS
    from dogo.data.base import locate
    from test_guards_outputs import _stl10

    monkeypatch.delenv("DOGO_DATA", raising=False)
    if locate(DATASETS.get("stl10"), None) is not None:
        pytest.skip("a system copy of stl10 would be found before downloading")
    served, data = tmp_path / "served", tmp_path / "data"
    served.mkdir()
    data.mkdir()
    _stl10(served, monkeypatch)
    make, expect = OVER_AN_EXTRACTION[had]
    make(tmp_path, data / "stl10_binary")  # the name of the archive's folder
    argv = ["pretrain", str(world.config), "--out", str(tmp_path / "run"), "-q"]
    argv += ["dataset.name=stl10", f"dataset.root={data}", "dataset.download=true"]
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    line = assert_one_line_error(code, err, f"{data / 'stl10_binary'}: {expect}", "pretrain")
    assert "dogo did not extract" in line and "remove it yourself" in line, line
    # the archive downloaded (and verified) is kept; nothing of the user's folder changed
    assert_nothing_lost(before, snapshot(tmp_path), may_create=("data/stl10_binary.tar.gz",))


def test_markers_name_what_made_the_folder(world):
    for folder, kind, command in (
        (world.run, "run", "dogo pretrain"),
        (world.store, "store", "dogo prepare"),
        (world.run / "cache" / "features", "cache", "dogo evaluate"),
    ):
        note = json.loads((folder / ".dogo").read_text())
        assert note["kind"] == kind and note["made_by"].startswith(command), note
        assert {"pid", "created", "dogo"} <= set(note)
    assert yaml.safe_load((world.run / "config.yaml").read_text())["name"] == "tiny"
