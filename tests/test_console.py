"""Logs that behave in batch jobs: lines instead of progress frames off a terminal, --quiet and
--verbose, a closed pipe ends quietly, wall-clock time on every metrics row, no KL for one model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dogo.core import console

TINY = """
name: tiny
dataset: {{name: digits, image_size: 8, options: {{limit: 128}}}}
train:
  epochs: 2
  batch_size: 64
  precision: fp32
  models:
{models}
logging: {{log_every: 1, save_every: 0, knn_every: 1, knn_k: 5, monitor_limit: 64, tensorboard: false}}
"""
ONE = "    - {name: student, objective: simclr, backbone: resnet18, width: 0.0625}"
TWO = ONE + "\n    - {name: teacher, objective: simclr, backbone: resnet18, width: 0.0625}"


def dogo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dogo", *args], capture_output=True, text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """A one-model and a two-peer run trained with stderr to a pipe (not a terminal), and their stderr."""
    root = tmp_path_factory.mktemp("console")
    out = {}
    for name, models, flags in (("one", ONE, ["--verbose"]), ("two", TWO, [])):
        (root / f"{name}.yaml").write_text(TINY.format(models=models))
        done = dogo("pretrain", str(root / f"{name}.yaml"), "--out", str(root / name), *flags)
        assert done.returncode == 0, done.stderr
        out[name] = (root / name, done.stderr)
    return out


def test_no_progress_frames_off_a_terminal_but_a_line_per_epoch(runs):
    _, err = runs["two"]
    assert "\r" not in err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, err
    assert "epoch 1/2  step 2/4  student loss" in epochs[0] and "teacher loss" in epochs[0]
    assert "(kl " in epochs[0] and "knn " in epochs[0] and "img/s" in epochs[0] and "ETA" in epochs[0]
    assert re.search(r"data wait \d+\.\d%", epochs[0])
    assert "ETA" not in epochs[1]  # the last epoch: nothing left
    assert "step 1:" not in err  # per-row lines only with --verbose


def test_verbose_adds_a_line_per_metrics_row_and_single_model_has_no_kl(runs):
    _, err = runs["one"]
    assert "step 1: peer/student/loss" in err and "(kl " not in err


def test_metrics_rows_have_wall_clock_time_and_no_kl_for_one_model(runs):
    for name, (run, _) in runs.items():
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(isinstance(row["time"], float) and row["time"] > 1.6e9 for row in rows)
        has_kl = any("peer/student/loss/kl" in row for row in rows)
        assert has_kl == (name == "two")


def test_quiet_prints_nothing_on_success(runs):
    run, _ = runs["two"]
    done = dogo("evaluate", str(run), "--protocol", "knn", "k=5", "--quiet")
    assert done.returncode == 0 and done.stderr == "" and "student" in done.stdout
    done = dogo("evaluate", str(run), "--protocol", "knn", "k=5")
    assert "knn: peer 0 (student): knn" in done.stderr and "knn: peer 1 (teacher)" in done.stderr


def test_a_closed_pipe_ends_quietly(runs):
    run, _ = runs["two"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dogo", "evaluate", str(run), "--protocol", "knn", "k=5", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("DOGO_PROGRESS", raising=False)
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: True)
    console.set_verbosity(console.NORMAL)
    assert console.use_bar()
    console.set_verbosity(console.QUIET)
    assert not console.use_bar()
    console.set_verbosity(console.NORMAL)
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: False)
    assert not console.use_bar()
    assert console.duration(75) == "1m15s" and console.duration(4000) == "1h06m"


def test_every_command_takes_quiet_and_the_training_ones_verbose():
    from dogo.cli import VERBOSE_COMMANDS, _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        options = {o for a in command._actions for o in a.option_strings}
        assert "--quiet" in options, name
        assert ("--verbose" in options) == (name in VERBOSE_COMMANDS), name  # -v only where it adds lines
        assert "examples:" in (command.epilog or ""), f"dogo {name} --help has no examples"
