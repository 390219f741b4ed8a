"""Many budgets from one run: weights kept at chosen steps (``train.keep_at``), read back with ``--at``.

The step-N state of a longer run equals an N-step run bit for bit, in the default settings (precision
and layout ``auto``, one peer after another), for a DoGo cohort on a constant learning rate; and a
schedule that spans the run's length (cosine, BYOL's momentum) is named as the reason it does not.
"""

from __future__ import annotations

import json

import pytest
import torch

from dogo.cli import main
from dogo.config import build_config
from dogo.core.errors import ConfigError
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.kept import kept_steps
from dogo.runs.rundir import prepare_run_dir
from dogo.runs.runlock import release_all
from dogo.training.cohort import length_dependence
from dogo.training.trainer import Trainer


def config(**train) -> dict:
    return {
        "name": "budgets",
        "seed": 5,
        "dataset": {"name": "digits", "image_size": 8, "options": {"limit": 128}, "eval_split": None},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "num_threads": 1,
            **train,
            "models": [
                {"name": "student", "backbone": "resnet18", "width": 0.0625, "n_proj": 16, "distill_weight": 100},
                {"name": "peer", "backbone": "resnet18", "width": 0.125, "n_proj": 16},
            ],
        },
        "logging": {"log_every": 1, "save_every": 0, "knn_every": 0, "tensorboard": False, "progress": False},
    }


def train(run_dir, **train_settings):
    cfg = build_config(config(**train_settings), "test")
    trainer = Trainer(cfg, run_dir, log=lambda m: None)  # checks the config before the folder is made
    prepare_run_dir(cfg, run_dir)
    trainer.fit()
    release_all()
    return run_dir


def assert_same_peers(a: dict, b: dict) -> None:
    for peer_a, peer_b in zip(a["peers"], b["peers"], strict=True):
        assert peer_a.keys() == peer_b.keys()
        for key in peer_a:
            assert torch.equal(peer_a[key], peer_b[key]), key


def test_step_n_of_a_longer_run_is_an_n_step_run_bit_for_bit(tmp_path):
    long = train(tmp_path / "long", keep_at=[0, 3, 8])  # 4 steps an epoch, 8 in all
    assert sorted(kept_steps(long)) == [0, 3, 8]
    short = train(tmp_path / "short", max_steps=3)
    kept = load_checkpoint(long / "checkpoints" / "step-3.pt")
    assert kept["step"] == 3 and "optimizers" not in kept  # weights only: a small file
    assert_same_peers(kept, load_checkpoint(short / "checkpoints" / "last.pt"))
    assert_same_peers(
        load_checkpoint(long / "checkpoints" / "step-8.pt"), load_checkpoint(long / "checkpoints" / "last.pt")
    )
    untrained = load_checkpoint(long / "checkpoints" / "step-0.pt")  # the initialisation is a budget too
    assert untrained["step"] == 0
    with pytest.raises(AssertionError):
        assert_same_peers(untrained, kept)
    index = json.loads((long / "kept.json").read_text())["steps"]
    assert index["3"]["file"] == "checkpoints/step-3.pt" and len(index["3"]["sha256"]) == 64


def test_at_picks_the_kept_weights_and_names_the_steps_it_has(tmp_path, capsys):
    run = train(tmp_path / "run", keep_at=[0, 4])
    out = tmp_path / "at4.safetensors"
    pytest.importorskip("safetensors")
    assert main(["export", str(run), "--at", "4", "--format", "safetensors", "--out", str(out), "-q"]) == 0
    assert json.loads(out.with_name(out.name + ".json").read_text())["source_checkpoint"].endswith("step-4.pt")
    assert main(["export", str(run), "--at", "5", "--format", "safetensors", "--out", str(out), "-q"]) == 2
    assert "no weights kept at step 5; kept steps: 0, 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main(["export", str(run), "--at", "4", "--checkpoint", "last", "--format", "safetensors", "--out", str(out)])
    assert "not allowed with argument --at" in capsys.readouterr().err


def test_a_step_beyond_the_run_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"train.keep_at: step 9 is beyond the run's 8 steps"):
        train(tmp_path / "run", keep_at=[9])
    with pytest.raises(Exception, match="distinct steps"):
        build_config(config(keep_at=[3, 3]), "test")


def test_schedules_that_span_the_run_are_named(tmp_path):
    constant = build_config(config(), "test")
    assert length_dependence(constant, steps_per_epoch=4, steps=8) == []
    cosine = config()
    cosine["train"]["models"][0]["schedule"] = {"name": "cosine"}
    cosine["train"]["models"][1]["objective"] = "byol"
    reasons = length_dependence(build_config(cosine, "test"), steps_per_epoch=4, steps=8)
    assert reasons == [
        "student: the learning-rate schedule (cosine) spans the run's length",
        "peer: byol's momentum schedule spans the run's length",
    ]
    warmup = config()
    warmup["train"]["models"][0]["schedule"] = {"name": "constant", "warmup_epochs": 1}
    assert length_dependence(build_config(warmup, "test"), steps_per_epoch=4, steps=8) == []  # a fixed warm-up is fine


DINO_PEER = {
    "name": "peer",
    "objective": "dino",
    "backbone": "resnet18",
    "width": 0.0625,
    "n_proj": 16,
    "objective_options": {"hidden": 16, "bottleneck": 8, "local_crops": 2, "warmup_teacher_epochs": 3},
}


def dino_config(**options) -> dict:
    data = config()
    data["train"]["models"][1] = json.loads(json.dumps(DINO_PEER))
    data["train"]["models"][1]["objective_options"].update(options)
    return data


def test_dinos_momentum_is_named_and_a_budget_study_refuses_a_dino_arm(tmp_path):
    """DINO's teacher follows a cosine EMA momentum over the whole run (its default): step N of a longer
    run is not an N-step run, so length_dependence names it and a study with budgets refuses the arm.
    Its teacher temperature is warmed up per epoch: checked too, but it does not depend on the length."""
    reasons = length_dependence(build_config(dino_config(), "test"), steps_per_epoch=4, steps=8)
    assert reasons == ["peer: dino's momentum schedule spans the run's length"]
    constant = build_config(dino_config(momentum_schedule="constant"), "test")
    assert length_dependence(constant, steps_per_epoch=4, steps=8) == []
    from dogo.training.cohort import Peer

    objective = Peer.from_config(constant.train.models[1], 8, "peer").objective
    objective.set_total_steps(8, 4)
    temperatures = objective.step_schedules()["teacher temperature"]
    assert temperatures == pytest.approx([0.04] * 4 + [0.055] * 4)  # per epoch, warming up over 3 epochs

    from dogo.study import load_study

    study = tmp_path / "dino.yaml"
    study.write_text(
        BUDGET_STUDY.replace(
            "train.models.1: {name: peer, backbone: resnet18, width: 0.125, n_proj: 16, distill_weight: 1}",
            "train.models.1: " + json.dumps(DINO_PEER),
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"arm dogo: budgets cannot be read off one run here \(peer: dino's "
        r"momentum schedule spans the run's length\)",
    ):
        load_study(study)


def test_step_n_of_a_longer_dino_run_with_a_constant_momentum_is_an_n_step_run(tmp_path):
    """With a constant momentum nothing of DINO depends on the run's length (the teacher temperature and
    the frozen prototypes go by epochs): step 5 of a 3-epoch run equals a 2-epoch run cut at 5, bit for bit,
    while the 2-epoch run's teacher temperature warm-up is cut short. In fp32: on this CPU ``auto`` is
    bf16, whose weight gradient of a stride-2 convolution on the 4 px local crops' 1 x 1 maps is not
    reproducible from one run to the next (torch 2.13 CPU, outside dogo too)."""

    def run(name, **train_settings):
        data = dino_config(momentum_schedule="constant")
        data["train"].update(precision="fp32", **train_settings)
        cfg = build_config(data, "test")
        trainer = Trainer(cfg, tmp_path / name, log=lambda m: None)
        prepare_run_dir(cfg, tmp_path / name)
        trainer.fit()
        release_all()
        return tmp_path / name

    long = run("long", epochs=3, keep_at=[5])
    short = run("short", epochs=2, max_steps=5)
    assert_same_peers(
        load_checkpoint(long / "checkpoints" / "step-5.pt"), load_checkpoint(short / "checkpoints" / "last.pt")
    )


# --------------------------------------------------------------------------------- a study with budgets

BUDGET_STUDY = """
name: budgets
compare_to: alone
seeds: [0, 1]
budgets: [0, 2, 4]
base:
  dataset: {name: digits, image_size: 8, options: {limit: 128}}
  train:
    batch_size: 32
    precision: fp32
    models:
      - {name: student, backbone: resnet18, width: 0.0625, n_proj: 16, distill_weight: 100}
  logging: {log_every: 2, save_every: 0, knn_every: 0, tensorboard: false}
arms:
  - name: alone
  - name: dogo
    overrides:
      train.models.1: {name: peer, backbone: resnet18, width: 0.125, n_proj: 16, distill_weight: 1}
evaluate:
  protocols:
    knn: {k: 10}
"""


def _knn(run_dir, step: int) -> float:
    return json.loads((run_dir / "eval" / f"knn-peer0@step-{step}.json").read_text())["summary"]["knn"]


@pytest.mark.slow
def test_a_budget_study_is_killed_resumes_and_its_per_budget_differences_equal_a_hand_computation(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from dogo.study import read_record
    from dogo.study.report import write_study_report

    study_path = tmp_path / "budgets.yaml"
    study_path.write_text(BUDGET_STUDY)
    out = tmp_path / "study"
    first = out / "alone" / "seed-0.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dogo", "study", str(study_path), "--out", str(out), "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while len(read_record(first).get("evaluations", {})) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # dogo seed 0 is under way
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = first.stat().st_mtime_ns
    assert main(["study", str(study_path), "--out", str(out), "--no-report", "-q"]) == 0
    assert first.stat().st_mtime_ns == done  # finished work is never redone
    for arm in ("alone", "dogo"):
        for seed in (0, 1):
            record = read_record(out / arm / f"seed-{seed}.json")
            assert record["trained_to"] == 4 and set(record["evaluations"]) == {"knn@0", "knn@2", "knn@4"}
            assert sorted(kept_steps(out / arm / f"seed-{seed}")) == [0, 2, 4]
    flops = {
        arm: json.loads((out / "arms" / f"{arm}.flops.json").read_text())["flops_per_step"] for arm in ("alone", "dogo")
    }
    assert flops["dogo"] > 3 * flops["alone"] > 0  # the x2-wide peer: about 4x the student's work

    # By hand, from the result files: at each budget, the mean of dogo - alone over the two seeds and its 95 %
    # t interval, t(0.975, 1) = 12.706205 -> half width 12.706205 * |d0 - d1| / 2.
    page = write_study_report(out, tmp_path / "RESULTS.md").read_text()
    for step in (2, 4):
        d = [_knn(out / "dogo" / f"seed-{s}", step) - _knn(out / "alone" / f"seed-{s}", step) for s in (0, 1)]
        mean, half = (d[0] + d[1]) / 2, 12.706205 * abs(d[0] - d[1]) / 2
        assert f"{mean:+.1f}" in page
        row = next(line for line in page.splitlines() if line.startswith("| `dogo` |") and "[" in line)
        assert f"[{mean - half:+.1f}, {mean + half:+.1f}]" in row
    assert all(_knn(out / "dogo" / f"seed-{s}", 0) == _knn(out / "alone" / f"seed-{s}", 0) for s in (0, 1))  # one init

    # A larger budget trains the finished runs on from their checkpoint and evaluates only what is new.
    study_path.write_text(BUDGET_STUDY.replace("budgets: [0, 2, 4]", "budgets: [0, 2, 4, 6]"))
    before = _knn(out / "alone" / "seed-0", 4)
    assert main(["study", str(study_path), "--out", str(out), "--no-report", "-q"]) == 0
    record = read_record(first)
    assert record["trained_to"] == 6 and "knn@6" in record["evaluations"]
    assert "train.max_steps=6" in record["attempts"][-1]["command"] and "--resume" in record["attempts"][-1]["command"]
    assert _knn(out / "alone" / "seed-0", 4) == before

    # The published files carry each arm's FLOPs a step, so a page rebuilt from them keeps its compute axis.
    from dogo.study.publish import publish

    published = publish(out, tmp_path / "published")
    assert sorted(p.name for p in (published / "arms").glob("*.flops.json")) == ["alone.flops.json", "dogo.flops.json"]
    rebuilt = write_study_report(published, tmp_path / "RESULTS-published.md").read_text()
    assert "| arm | GFLOP a step | × the baseline's |" in rebuilt

    # A run restored from published results has no checkpoint to go on from: a larger budget trains it again
    # from step 0 (on this machine, the same weights at the budgets it had) and evaluates it at every budget.
    fresh = tmp_path / "fresh"
    assert main(["study", str(study_path), "--out", str(fresh), "--publish", str(published), "--no-report", "-q"]) == 0
    assert not list((fresh / "alone" / "seed-0").glob("checkpoints/*.pt"))
    study_path.write_text(
        BUDGET_STUDY.replace("budgets: [0, 2, 4]", "budgets: [0, 2, 4, 6]").replace(
            "  - name: alone\n", "  - name: alone\n    more_budgets: [8]\n"
        )
    )
    assert main(["study", str(study_path), "--out", str(fresh), "--only", "alone", "--no-report", "-q"]) == 0
    record = read_record(fresh / "alone" / "seed-0.json")
    assert record["trained_to"] == 8 and [a["exit"] for a in record["attempts"]] == [0]
    assert "--resume" not in record["attempts"][0]["command"]
    assert set(record["evaluations"]) == {f"knn@{step}" for step in (0, 2, 4, 6, 8)}
    assert _knn(fresh / "alone" / "seed-0", 4) == before


def test_growth_reads_the_gain_over_step_0_and_the_last_two_doublings_per_seed():
    from dogo.study.budgets import growth
    from dogo.study.results import ArmResults

    arm = ArmResults("alone", "", planned=[0, 1])
    curves = {0: {0: 70.0, 100: 71.0, 200: 74.0, 400: 75.0}, 1: {0: 72.0, 200: 75.0, 400: 77.0}}
    arm.budgets = {seed: {step: {"knn": v} for step, v in curve.items()} for seed, curve in curves.items()}
    g = growth(arm, "knn")
    # gain: mean of (75 - 70, 77 - 72); last doubling 200 -> 400: mean of (1, 2); before it 100 -> 200: seed 0 only.
    assert g == {"largest": 400, "gain": 5.0, "last": 1.5, "before": 3.0}
    assert growth(arm, "linear") is None
    arm.budgets[0][400]["knn"] = 75.0
    del arm.budgets[0][0], arm.budgets[1][0]
    assert growth(arm, "knn")["gain"] is None  # no step 0 measured: no gain claimed
