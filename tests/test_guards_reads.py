"""Class 4, verified on read (issue 25): every file dogo reads back is checked for what its content must satisfy.

:data:`REFUSED` damages a file in a way its hash does not catch (the file is rewritten whole, with
a matching hash) and runs each command that reads it: one line naming the file and what is wrong,
nothing changed. :data:`REDONE` damages what dogo can redo or go without: the command goes on,
says so, and a report lists what it left out. :data:`PUBLISHED` damages a file of a folder of
published results that a study would copy back: it is named, and what it held is redone. A new reader
joins by adding a case.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dogo.evaluate.results import record_hash
from dogo.runs.checkpoint import load_checkpoint, save_checkpoint
from guarded import World, build_world, digits_config, run_cli
from test_bad_inputs import assert_nothing_lost, assert_one_line_error, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """The shared world, its run also keeping its weights at step 2 (train.keep_at)."""
    root = tmp_path_factory.mktemp("world")
    made = build_world(root / "base")
    config = root / "kept.yaml"
    config.write_text(yaml.safe_dump(digits_config(keep_at=[2])))
    threads = torch.get_num_threads()
    shutil.rmtree(made.run)
    from dogo.cli import main

    assert main(["pretrain", str(config), "--out", str(made.run), "-q"]) == 0
    assert main(["evaluate", str(made.run), "--protocol", "knn", "k=5", "-q"]) == 0
    torch.set_num_threads(threads)
    return made


def rewrite_checkpoint(path: Path, change: Callable[[dict], None]) -> None:
    """Change a checkpoint's content and save it again: whole, with a matching hash."""
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path, state)


def cut_first_conv(state: dict) -> None:
    weights = state["peers"][0]
    key = next(k for k in weights if k.startswith("encoder.") and weights[k].ndim == 4)
    weights[key] = weights[key][:-1]


def nan_weights(state: dict) -> None:
    weights = state["peers"][0]
    key = next(k for k in weights if k.startswith("encoder.") and weights[k].is_floating_point())
    weights[key] = weights[key].clone().fill_(float("nan"))


def one_peer_too_many(state: dict) -> None:
    state["peers"] = state["peers"] * 2


def _checkpoint_case(change, command: str) -> Callable[[World, Path], list[str]]:
    def make(w: World, tmp: Path) -> list[str]:
        rewrite_checkpoint(w.run / "checkpoints" / "last.pt", change)
        return {
            "evaluate": ["evaluate", str(w.run), "--protocol", "knn", "k=3"],
            "export": ["export", str(w.run), "--format", "torchscript", "--out", str(tmp / "e.ts")],
            "embed": ["embed", str(w.run), "--data", str(w.photos), "--out", str(tmp / "f.npy")],
        }[command]

    return make


def _resume_nan_weights(w: World, tmp: Path) -> list[str]:
    rewrite_checkpoint(w.run / "checkpoints" / "last.pt", nan_weights)
    return ["pretrain", "--resume", str(w.run), "train.max_steps=3"]


def _init_from_nan_weights(w: World, tmp: Path) -> list[str]:
    rewrite_checkpoint(w.run / "checkpoints" / "last.pt", nan_weights)
    cfg = digits_config()
    cfg["train"]["models"][0]["init_from"] = str(w.run)
    (tmp / "init.yaml").write_text(yaml.safe_dump(cfg))
    return ["pretrain", str(tmp / "init.yaml"), "--out", str(tmp / "new")]


def _init_from_nan_encoder(w: World, tmp: Path) -> list[str]:
    """A peer of another objective takes the encoder only: its tensors are checked as the whole peer's are."""
    rewrite_checkpoint(w.run / "checkpoints" / "last.pt", nan_weights)
    cfg = digits_config()
    cfg["train"]["models"][0].update(objective="byol", objective_options={"hidden": 16}, init_from=str(w.run))
    (tmp / "init.yaml").write_text(yaml.safe_dump(cfg))
    return ["pretrain", str(tmp / "init.yaml"), "--out", str(tmp / "new")]


def _kept_replaced(w: World, tmp: Path) -> list[str]:
    shutil.copy(w.run / "checkpoints" / "last.pt", w.run / "checkpoints" / "step-2.pt")
    return ["evaluate", str(w.run), "--at", "2", "--protocol", "knn", "k=3"]


def _store_labels_out_of_range(w: World, tmp: Path) -> list[str]:
    stores = tmp / "stores"
    stores.mkdir()
    shutil.copytree(w.store, stores / "digits-train")
    labels = np.load(stores / "digits-train" / "labels.npy")
    np.save(stores / "digits-train" / "labels.npy", labels + 90)
    cfg = digits_config()
    cfg["dataset"].update(store="on", store_dir=str(stores))
    (tmp / "store.yaml").write_text(yaml.safe_dump(cfg))
    return ["pretrain", str(tmp / "store.yaml"), "--out", str(tmp / "new")]


def _arm_settings_damaged(w: World, tmp: Path) -> list[str]:
    (w.study / "arms" / "a.yaml").write_text("train: [unclosed\n")
    return ["study", str(w.study_file), "--out", str(w.study)]


PEER, NAN = "resnet18x0.0625-simclr", "108 non-finite value(s)"  # the tiny run's peer; its first conv, all NaN

REFUSED: dict[str, tuple[Callable[[World, Path], list[str]], str]] = {
    "evaluate-checkpoint-of-another-shape": (_checkpoint_case(cut_first_conv, "evaluate"), "in the file, the config"),
    "export-checkpoint-of-another-shape": (_checkpoint_case(cut_first_conv, "export"), "in the file, the config"),
    "embed-checkpoint-of-another-shape": (_checkpoint_case(cut_first_conv, "embed"), "in the file, the config"),
    "evaluate-nan-weights": (_checkpoint_case(nan_weights, "evaluate"), "non-finite value(s)"),
    "export-nan-weights": (_checkpoint_case(nan_weights, "export"), "non-finite value(s)"),
    "resume-nan-weights": (_resume_nan_weights, f"last.pt: peer 0 ({PEER}): encoder.conv1.weight holds {NAN}"),
    "init-from-nan-weights": (_init_from_nan_weights, f"last.pt: peer 0 ({PEER}): encoder.conv1.weight holds {NAN}"),
    "init-from-nan-encoder": (_init_from_nan_encoder, f"last.pt: peer 0 ({PEER}) encoder: conv1.weight holds {NAN}"),
    "evaluate-peer-count": (_checkpoint_case(one_peer_too_many, "evaluate"), "holds the weights of 2 peer(s)"),
    "export-peer-count": (_checkpoint_case(one_peer_too_many, "export"), "a number of peers other than"),
    "evaluate-kept-weights-replaced": (_kept_replaced, "step-2.pt: not the file"),
    "pretrain-store-labels-out-of-range": (_store_labels_out_of_range, "labels.npy: labels run from 90 to 99"),
    "study-arm-settings-damaged": (_arm_settings_damaged, "a.yaml: not readable YAML"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_content_that_is_not_what_it_must_be_is_refused_naming_the_file(name, world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    make, expect = REFUSED[name]
    argv = [*make(copy, tmp_path), "-q"]
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, expect, argv[0])
    assert_nothing_lost(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------ what dogo can redo or leave out


def _result_out_of_range(w: World) -> Path:
    path = w.run / "eval" / "knn-peer0.json"
    record = json.loads(path.read_text())
    record["summary"] = {key: 250.0 for key in record["summary"]}
    record["sha256"] = record_hash(record)  # whole, and the hash agrees: only its content says it is wrong
    path.write_text(json.dumps(record))
    return path


def test_a_report_lists_what_it_left_out(world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    bad = _result_out_of_range(copy)
    with (copy.run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 9, "peer/0/lo\n[1, 2]\n')
    with pytest.warns(UserWarning) as caught:
        code, _, err = run_cli(["report", str(copy.run), "--out", str(tmp_path / "rep"), "-q"], capsys)
    assert code == 0, err
    text = (tmp_path / "rep" / "report.md").read_text()
    section = text[text.index("## Missing or unreadable") :]
    assert f"`{bad}`: skipping damaged or unreadable result: summary" in section and "not an accuracy" in section
    assert "metrics.jsonl`: 2 unreadable line(s)" in section
    assert any(str(bad) in str(w.message) for w in caught)


def test_a_study_report_lists_runs_without_their_results(world, tmp_path, capsys):
    copy = world.copy(tmp_path)
    (copy.study / "a" / "seed-0" / "eval" / "knn-peer0.json").unlink()
    record = json.loads((copy.study / "a" / "seed-0.json").read_text())
    (copy.study / "a" / "seed-0.json").write_text(json.dumps({**record, "evaluations": {}}))
    code, _, err = run_cli(["report", str(copy.study), "--out", str(tmp_path / "s.md"), "-q"], capsys)
    assert code == 0, err
    text = (tmp_path / "s.md").read_text()
    assert "`a` seed 0: not evaluated with knn at the study's settings" in text


@pytest.mark.parametrize("damage", ["torn-record", "record-of-wrong-types", "result-file-gone", "run-folder-gone"])
def test_a_study_redoes_what_its_records_claim_but_its_files_do_not_hold(damage, world, tmp_path, capsys, monkeypatch):
    import dogo.study.runner

    copy = world.copy(tmp_path)
    record_path = copy.study / "a" / "seed-0.json"
    if damage == "torn-record":
        record_path.write_text(record_path.read_text()[:30])
    elif damage == "record-of-wrong-types":
        record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "trained": "yes"}))
    elif damage == "result-file-gone":
        (copy.study / "a" / "seed-0" / "eval" / "knn-peer0.json").unlink()
    else:
        shutil.rmtree(copy.study / "a" / "seed-0")
    children = []

    def child(self, args, log_path):
        children.append(args[0])
        return 0

    monkeypatch.setattr(dogo.study.runner.Runner, "_child", child)
    with pytest.warns(UserWarning, match="seed-0.json"):
        code, _, err = run_cli(["study", str(copy.study_file), "--out", str(copy.study), "--no-report", "-q"], capsys)
    assert code == 0, err
    assert children == (["evaluate"] if damage == "result-file-gone" else ["pretrain", "evaluate"]), children


def test_a_damaged_progress_record_restarts_the_store(tmp_path):
    from dogo.data import load_dataset
    from dogo.data.store import identity, open_store, prepare_store

    store = tmp_path / "s"
    (tmp_path / "s.partial").mkdir()
    from dogo.guards.ownership import mark

    mark(tmp_path / "s.partial", "store")
    (tmp_path / "s.partial" / "progress.json").write_text('{"digest": "d", "done": "many"}')
    with pytest.warns(UserWarning, match="progress.json: its count of decoded images"):
        prepare_store(store, lambda: load_dataset("digits", split="test"), identity("digits", "test", {}), "d")
    assert len(open_store(store)) == 360


# ------------------------------------------------------------------------------ published results copied back


def _torn(path: Path) -> None:
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def _wrong_types(path: Path) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), "trained": "yes"}))


def _out_of_range(path: Path) -> None:
    record = json.loads(path.read_text())
    record["summary"] = {key: 250.0 for key in record["summary"]}
    record["sha256"] = record_hash(record)  # whole, and the hash agrees: only its content says it is wrong
    path.write_text(json.dumps(record))


def _not_a_mapping(path: Path) -> None:
    path.write_text("- just\n- a list\n")


#: a file of a folder of published results (``dogo study --publish``) damaged, and a study continued from it in a
#: new folder (another machine): the file that the study would copy back, how it is damaged, and what the study
#: then runs (a run that is not restored is trained and evaluated again; an arm's settings or its FLOPs not
#: restored are written again from the study file, measured again)
PUBLISHED: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    "record-torn": ("a/seed-0.json", _torn, ["pretrain", "evaluate"]),
    "record-of-wrong-types": ("a/seed-0.json", _wrong_types, ["pretrain", "evaluate"]),
    "result-torn": ("a/seed-0/eval/knn-peer0.json", _torn, ["pretrain", "evaluate"]),
    "result-out-of-range": ("a/seed-0/eval/knn-peer0.json", _out_of_range, ["pretrain", "evaluate"]),
    "run-config-torn": ("a/seed-0/config.yaml", _torn, ["pretrain", "evaluate"]),
    "run-config-not-a-mapping": ("a/seed-0/config.yaml", _not_a_mapping, ["pretrain", "evaluate"]),
    "arm-settings-torn": ("arms/a.yaml", lambda p: p.write_text("train: [unclosed\n"), []),
    "arm-settings-not-a-mapping": ("arms/a.yaml", _not_a_mapping, []),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_a_damaged_published_file_is_named_and_redone_never_copied_back(name, world, tmp_path, capsys, monkeypatch):
    import dogo.study.runner
    from dogo.study.publish import publish

    copy = world.copy(tmp_path)
    published = publish(copy.study, tmp_path / "published")
    relative, damage, expect = PUBLISHED[name]
    damage(published / relative)
    children = []

    def child(self, args, log_path):
        children.append(args[0])
        return 0

    monkeypatch.setattr(dogo.study.runner.Runner, "_child", child)
    damaged = (published / relative).read_bytes()
    fresh = tmp_path / "fresh"
    argv = ["study", str(copy.study_file), "--out", str(fresh), "--publish", str(published), "--no-report", "-q"]
    with pytest.warns(UserWarning, match=re.escape(str(published / relative))):
        code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert children == expect, children
    assert not (fresh / relative).exists() or (fresh / relative).read_bytes() != damaged  # never copied back
