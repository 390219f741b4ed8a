"""dogo study: planning, resuming after a kill, refusing edited arms, and the report's paired differences."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dogo.cli import main
from dogo.core.errors import ConfigError
from dogo.study import check_arms, load_study, plan_runs, read_record, run_study
from dogo.study.figures import panels
from dogo.study.records import settings_key
from dogo.study.report import load_study_results, paired_difference, write_study_report
from dogo.study.runner import Runner

STUDY = """
name: tiny
compare_to: alone
seeds: [0, 1]
base:
  dataset: {name: digits, image_size: 8, options: {limit: 128}}
  train:
    epochs: 2
    batch_size: 32
    precision: fp32
    models:
      - {name: student, backbone: resnet18, width: 0.0625, distill_weight: 100}
  logging: {log_every: 2, save_every: 0, knn_k: 10, tensorboard: false, monitor_limit: 64}
arms:
  - name: alone
  - name: dogo
    overrides:
      train.models.1: {name: peer, backbone: resnet18, width: 0.125, distill_weight: 1}
evaluate:
  protocols:
    knn: {k: 10}
"""


def write_study(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_plan_runs_seed_by_seed_within_arms_of_the_same_seeds(tmp_path):
    text = STUDY.replace("evaluate:", "  - {name: extra, seeds: [5]}\nevaluate:")
    study, arms = load_study(write_study(tmp_path, text))
    runs = plan_runs(study, arms, tmp_path / "out")
    assert [(r.arm, r.seed) for r in runs] == [("alone", 0), ("dogo", 0), ("alone", 1), ("dogo", 1), ("extra", 5)]
    assert arms["dogo"]["train"]["models"][1]["width"] == 0.125  # index 1 appended a peer
    assert runs[1].config["seed"] == 0 and runs[1].run_dir == tmp_path / "out" / "dogo" / "seed-0"


def test_eta_takes_each_arms_median_run_from_every_finished_record(tmp_path):
    study, arms = load_study(write_study(tmp_path))
    runs = plan_runs(study, arms, tmp_path / "out")  # alone 0, dogo 0, alone 1, dogo 1

    def finish(run, train, evaluate):
        record = {
            "trained": True,
            "train_seconds": train,
            "eval_seconds": {"knn": evaluate},
            "evaluations": {"knn": settings_key("knn", {"k": 10})},
        }
        run.record_path.parent.mkdir(parents=True, exist_ok=True)
        run.record_path.write_text(json.dumps(record))

    runner = Runner(study, tmp_path / "out", runs, say=lambda _: None)
    assert runner._eta() == ""  # nothing finished: no estimate
    finish(runs[0], 50.0, 10.0)  # alone: 60 s, an earlier process's
    assert runner._eta() == "; about 3m00s to go for the other 3 (median run of each arm so far)"
    finish(runs[1], 280.0, 20.0)  # dogo: 300 s
    assert runner._eta() == "; about 6m00s to go for the other 2 (median run of each arm so far)"


@pytest.mark.parametrize(
    "change, message",
    [
        ("compare_to: nobody", "compare_to 'nobody' is not an arm"),
        ("arms: [{name: a}, {name: a}]", "used twice"),
        ("evaluate: {protocols: {linaer: {}}}", "linaer"),
        ("evaluate: {protocols: {knn: {kk: 3}}}", "kk"),
        ("seeds: []", "seeds"),
    ],
)
def test_bad_study_files_are_one_line_errors(tmp_path, change, message):
    data = yaml.safe_load(STUDY)
    data.update(yaml.safe_load(change))
    if "compare_to" not in change and data.get("compare_to") not in [a["name"] for a in data["arms"]]:
        data.pop("compare_to")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_study(path)


def test_an_edited_arm_is_refused_unless_rerun(tmp_path):
    _study, arms = load_study(write_study(tmp_path))
    out = tmp_path / "out"
    (out / "arms").mkdir(parents=True)
    for name, config in arms.items():
        (out / "arms" / f"{name}.yaml").write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "seed"}))
    check_arms(out, arms, [])  # unchanged: fine
    arms["dogo"]["distill"]["temperature"] = 0.5
    with pytest.raises(ConfigError, match=r"arm 'dogo' changed .*distill.temperature.*--rerun dogo"):
        check_arms(out, arms, [])
    check_arms(out, arms, ["dogo"])


def test_a_setting_added_to_dogo_since_is_not_an_edit_of_the_arm(tmp_path):
    _study, arms = load_study(write_study(tmp_path))
    out = tmp_path / "out"
    (out / "arms").mkdir(parents=True)
    for name, config in arms.items():  # saved by an older dogo that had no logging.keep_previous
        older = {k: v for k, v in config.items() if k != "seed"}
        older["logging"] = {k: v for k, v in older["logging"].items() if k != "keep_previous"}
        (out / "arms" / f"{name}.yaml").write_text(yaml.safe_dump(older))
    check_arms(out, arms, [])  # the new setting takes its default on both sides
    arms["alone"]["logging"]["keep_previous"] = True  # a value other than the default is an edit
    with pytest.raises(ConfigError, match=r"arm 'alone' changed .*logging.keep_previous"):
        check_arms(out, arms, [])


def _study_process(study_path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dogo", "study", str(study_path), "--out", str(out), "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_killed_study_resumes_without_redoing_finished_work(tmp_path):
    study_path = write_study(tmp_path)
    out = tmp_path / "study"
    first_record = out / "alone" / "seed-0.json"
    process = _study_process(study_path, out)
    deadline = time.monotonic() + 240
    while not read_record(first_record).get("evaluations") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the next run (dogo seed 0) is under way now
    process.send_signal(signal.SIGKILL)  # no clean-up at all; its child dies with it (PR_SET_PDEATHSIG)
    process.wait()
    assert read_record(first_record)["trained"]
    mtime = first_record.stat().st_mtime_ns

    assert main(["study", str(study_path), "--out", str(out), "--no-report"]) == 0
    assert first_record.stat().st_mtime_ns == mtime  # finished work is never redone
    for arm in ("alone", "dogo"):
        for seed in (0, 1):
            record = read_record(out / arm / f"seed-{seed}.json")
            assert record["trained"] and set(record["evaluations"]) == {"knn"}
            assert (out / arm / f"seed-{seed}" / "eval" / "knn-peer0.json").is_file()
            assert record["attempts"][-1]["commit"]

    # The killed run ends with the numbers of an uninterrupted one.
    fresh = tmp_path / "fresh"
    fresh_path = tmp_path / "fresh.yaml"
    fresh_path.write_text(STUDY.replace("seeds: [0, 1]", "seeds: [0]"))
    assert main(["study", str(fresh_path), "--out", str(fresh), "--only", "dogo", "--no-report"]) == 0
    killed = json.loads((out / "dogo" / "seed-0" / "eval" / "knn-peer0.json").read_text())["summary"]
    assert killed == json.loads((fresh / "dogo" / "seed-0" / "eval" / "knn-peer0.json").read_text())["summary"]

    # A seed added to an arm runs alone; the others are left as they are.
    study_path.write_text(STUDY.replace("  - name: alone", "  - {name: alone, seeds: [0, 1, 2]}"))
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*.json")}
    assert main(["study", str(study_path), "--out", str(out)]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert read_record(out / "alone" / "seed-2.json")["trained"]
    assert (out / "report" / "report.md").is_file()


def _study_of_fakes(root: Path, arms: list[dict], protocols: dict, name: str = "hand") -> Path:
    """``root/study``: a study of seeds 0, 1, 2 compared to ``alone``, its study.yaml and arms/ written as
    ``dogo study`` writes them, for :func:`_fake_run` to fill with runs."""
    study = root / "study"
    (study / "arms").mkdir(parents=True)
    (study / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "base": {},
                "seeds": [0, 1, 2],
                "compare_to": "alone",
                "arms": arms,
                "evaluate": {"protocols": protocols},
            }
        )
    )
    return study


def _fake_run(
    study: Path,
    arm: str,
    seed: int,
    linear: float,
    knn_curve: list[float],
    *,
    train_seconds: float = 60.0,
    evaluated: bool = True,
    shift: dict | None = None,
) -> None:
    run = study / arm / f"seed-{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "train": {"models": [{"name": "student"}]}}))
    rows = [{"epoch": e + 1, "step": e + 1, "peer/0/knn_top1": v} for e, v in enumerate(knn_curve)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {"protocol": "linear", "peer": 0, "summary": {"linear": linear}}
    (run / "eval" / "linear-peer0.json").write_text(json.dumps(result))
    if shift is not None:
        (run / "eval" / "shift-peer0.json").write_text(json.dumps({"protocol": "shift", "peer": 0, **shift}))
    command = f"dogo pretrain {study}/{arm}/seed-{seed}.yaml --out {study}/{arm}/seed-{seed} train.num_threads=2"
    record = {
        "arm": arm,
        "seed": seed,
        "trained": True,
        "train_seconds": train_seconds,
        "evaluations": {"linear": settings_key("linear", {})} if evaluated else {},
        "attempts": [{"commit": "abc", "seconds": train_seconds, "command": command}],
        "machine": {"cpu": "CPU", "cores": 2, "torch": "2.x", "dogo": "0.1.0"},
    }
    (study / arm / f"seed-{seed}.json").write_text(json.dumps(record))


def test_report_paired_differences_equal_a_hand_computation(tmp_path):
    study = _study_of_fakes(tmp_path, [{"name": "alone"}, {"name": "dogo"}], {"linear": {}})
    alone, dogo = [70.0, 72.0, 71.0], [71.0, 74.0, 74.0]  # differences 1, 2, 3
    for seed in range(3):
        _fake_run(study, "alone", seed, alone[seed], [50.0, 60.0])
        _fake_run(study, "dogo", seed, dogo[seed], [52.0, 63.0])
    _, arms = load_study_results(study)
    by_seed = {a.name: {s: n["linear"] for s, n in a.numbers.items()} for a in arms}
    diff = paired_difference(by_seed["dogo"], by_seed["alone"])
    # By hand: mean 2, sample std 1, n 3, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138.
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(2.0)
    assert diff["low"] == pytest.approx(2.0 - 2.484138, abs=1e-5) and diff["high"] == pytest.approx(4.484138, abs=1e-5)
    page = write_study_report(study, tmp_path / "docs" / "RESULTS.md").read_text()
    assert "+2.0 [-0.5, +4.5]" in page
    assert "| linear | 71.0 ± 1.0 | 73.0 ± 1.7 |" in page
    assert (tmp_path / "docs" / "RESULTS-figures" / "knn.png").is_file()
    assert "Runs done: **6 of 6**" in page
    # the kNN monitor's last epoch is +3.0 on every seed: resolved; linear's interval holds 0
    assert (
        "- `dogo` vs `alone` (n = 3 seeds): higher on kNN monitor (training) (+3.0); "
        "no difference the interval can resolve on the other one."
    ) in page


def test_report_says_plainly_when_no_difference_or_every_difference_is_resolved(tmp_path):
    study = _study_of_fakes(tmp_path, [{"name": "alone"}, {"name": "noise"}, {"name": "longer"}], {"linear": {}})
    for seed, (alone, noise) in enumerate([(70.0, 71.0), (72.0, 71.0), (71.0, 72.0)]):
        _fake_run(study, "alone", seed, alone, [50.0, 60.0])
        _fake_run(study, "noise", seed, noise, [50.0, 59.0 + seed])  # monitor: -1, 0, +1
        _fake_run(study, "longer", seed, alone + 4.0, [50.0, 65.0])
    page = write_study_report(study, tmp_path / "RESULTS.md").read_text()
    assert "- `noise` vs `alone` (n = 3 seeds): no difference the interval can resolve on any of the 2 numbers." in page
    assert "- `longer` vs `alone` (n = 3 seeds): higher on linear (+4.0), kNN monitor (training) (+5.0)." in page


def test_report_counts_partly_evaluated_runs_apart_and_gives_its_commands(tmp_path):
    study = _study_of_fakes(
        tmp_path, [{"name": "alone"}, {"name": "untrained"}], {"linear": {}, "shift": {"severities": [1, 5]}}
    )
    shift = {
        "clean_top1": 70.0,
        "severity_mean_top1": {"1": 65.0, "5": 60.0},
        "image_px": 8,
        "no_effect": {"gaussian_blur": [1]},
        "summary": {"shift mCA": 62.5},
    }
    for seed, seconds in enumerate([60.0, 120.0, 600.0]):
        _fake_run(study, "alone", seed, 70.0, [50.0, 60.0], train_seconds=seconds, shift=shift)
        _fake_run(study, "untrained", seed, 72.0, [55.0], evaluated=seed < 2)
    for seed, speeds in enumerate([[100.0, 120.0, 130.0], [20.0, 30.0, 200.0], [90.0, 95.0, 99.0]]):
        with open(study / "alone" / f"seed-{seed}" / "metrics.jsonl", "a") as metrics:
            metrics.writelines(json.dumps({"step": i, "images_per_s": v}) + "\n" for i, v in enumerate(speeds))
    for seed in range(3):  # the study's protocols: linear and shift
        record = read_record(study / "alone" / f"seed-{seed}.json")
        record["evaluations"]["shift"] = settings_key("shift", {"severities": [1, 5]})
        (study / "alone" / f"seed-{seed}.json").write_text(json.dumps(record))
    page = write_study_report(study, tmp_path / "RESULTS.md").read_text()
    # untrained: linear, not shift, in every record (none for seed 2), so none of its runs is finished.
    assert "Runs done: **3 of 6** (and 3 partly evaluated)" in page
    assert "| `untrained` |  | 0 of 3 (+3 partly evaluated) |" in page
    # minutes: the median run, (fastest–slowest); images/s: the fastest run's median step
    assert "| `alone` |  | 3 of 3 | 2.0 (1.0–10.0) | 0.0 | 120 |" in page
    assert "| `untrained` |  | 0 of 3 (+3 partly evaluated) | 1.0 | 0.0 | – |" in page
    assert "dogo version(s): 0.1.0" in page
    assert "- gaussian_blur: no effect at 8 px (severity 1)" in page
    assert "- `shift`:\n  - `severities=[1, 5]`: severities 1..5\n" in page  # each given setting with its meaning
    # --out: the folder the runs recorded they were trained in, not a guess from the study's name
    assert f"`dogo study {study}/study.yaml --out {study} --publish {study}`" in page
    assert (f"`dogo evaluate {study}/alone/seed-0 --protocol shift --peer 0 'severities=[1, 5]'`") in page


def test_paired_difference_of_one_seed_has_no_interval():
    diff = paired_difference({0: 2.0, 1: 5.0}, {0: 1.0})
    assert diff["n"] == 1 and diff["mean"] == 1.0 and math.isnan(diff["low"])
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_report_refuses_a_folder_that_is_neither_run_nor_study(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not missing.exists()


def test_a_fresh_machine_restores_published_runs_instead_of_retraining(tmp_path):
    study_path = write_study(tmp_path, STUDY.replace("seeds: [0, 1]", "seeds: [0]"))
    first, published = tmp_path / "first", tmp_path / "published"
    assert (
        main(
            [
                "study",
                str(study_path),
                "--out",
                str(first),
                "--only",
                "alone",
                "--publish",
                str(published),
                "--no-report",
            ]
        )
        == 0
    )
    record = (published / "alone" / "seed-0.json").read_bytes()

    lines: list[str] = []
    fresh = tmp_path / "fresh"  # another machine: only the published files are there
    run_study(study_path, fresh, only=["alone"], publish_to=published, say=lines.append)
    assert any(line.startswith("restored 1 finished run") for line in lines)
    assert not any(line.startswith(("training", "evaluating")) for line in lines)
    assert (fresh / "alone" / "seed-0.json").read_bytes() == record
    assert (fresh / "alone" / "seed-0" / "eval" / "knn-peer0.json").is_file()
    assert load_study_results(fresh)  # the report reads restored runs like local ones

    # An arm edited since it was published is still refused.
    original = study_path.read_text()
    study_path.write_text(original.replace("epochs: 2", "epochs: 3"))
    with pytest.raises(ConfigError, match="arm 'alone' changed"):
        run_study(study_path, tmp_path / "third", only=["alone"], publish_to=published, say=lines.append)
    # That refused start restored the published arms into its folder and marked it as a study's: the edit undone,
    # the next start takes that folder on (it once refused it as "not a study directory").
    study_path.write_text(original)
    lines.clear()
    run_study(study_path, tmp_path / "third", only=["alone"], publish_to=published, say=lines.append)
    assert not any(line.startswith(("training", "evaluating")) for line in lines), lines
    assert (tmp_path / "third" / "alone" / "seed-0.json").read_bytes() == record


def test_a_folder_that_is_not_a_studys_is_refused_in_one_line(tmp_path, capsys):
    study_path = write_study(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own")
    assert main(["study", str(study_path), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{mine}: exists and is not a study directory: it is a folder of other files" in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # nothing written into it


def test_report_draws_the_main_comparison_and_the_ablations_in_two_panels(tmp_path):
    study = _study_of_fakes(
        tmp_path,
        [{"name": "alone"}, {"name": "dogo"}, {"name": "lambda-1", "seeds": [0, 1]}],
        {"linear": {}},
        name="panels",
    )
    for seed in range(3):
        _fake_run(study, "alone", seed, 70.0, [50.0, 60.0])
        _fake_run(study, "dogo", seed, 71.0, [51.0, 61.0])
        if seed < 2:
            _fake_run(study, "lambda-1", seed, 69.0, [49.0, 59.0])
    _, arms = load_study_results(study)
    groups = [(name, [a.name for a in members]) for name, members in panels(arms, [0, 1, 2], "alone")]
    assert groups == [("main comparison", ["alone", "dogo"]), ("ablations", ["alone", "lambda-1"])]
    page = write_study_report(study, tmp_path / "RESULTS.md").read_text()
    assert "Left: the main comparison (the study's seeds); right: the ablations, with `alone` drawn again." in page
    import matplotlib.image

    height, width = matplotlib.image.imread(tmp_path / "RESULTS-figures" / "knn.png").shape[:2]
    assert width > 2.5 * height  # two panels side by side
    # every arm on the study's seeds: one panel, as before
    assert [n for n, _ in panels(arms[:2], [0, 1, 2], "alone")] == [""]


def test_an_arm_saved_with_the_old_peer_level_temperature_is_not_an_edit(tmp_path):
    """Arms saved before method defaults moved into each method recorded SimCLR's 0.5 on the peer;
    today's config leaves it unset (the method's own 0.5): the same arm. Another value is an edit."""
    import yaml

    from dogo.config import build_config
    from dogo.study.runner import check_arms

    raw = {"dataset": {"name": "digits"}, "train": {"models": [{"name": "student", "objective": "simclr"}]}}
    config = build_config(raw, "arm").dump()
    assert config["train"]["models"][0]["temperature"] is None
    saved = yaml.safe_load(yaml.safe_dump(config))
    saved["train"]["models"][0].update(temperature=0.5, n_proj=128)
    (tmp_path / "arms").mkdir()
    (tmp_path / "arms" / "a.yaml").write_text(yaml.safe_dump(saved))
    check_arms(tmp_path, {"a": config}, [])
    edited = yaml.safe_load(yaml.safe_dump(config))
    edited["train"]["models"][0]["temperature"] = 0.2
    with pytest.raises(ConfigError, match="temperature"):
        check_arms(tmp_path, {"a": edited}, [])
