"""Runs that talk at any length: epoch lines with each peer's mean loss, KL and kNN however rarely rows are
logged, the bar's peers, a summary table at the end, a logging cadence by the run's length, epochs counted
from 1 in every row, and report plots with a colour per peer, markers and the same bytes every time."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dogo.cli import main
from dogo.config import build_config
from dogo.core import console

TINY = """
name: tiny
dataset: {{name: digits, image_size: 8, options: {{limit: 128}}}}
train:
  epochs: 2
  batch_size: 64
  precision: fp32
  models:
    - {{name: student, objective: simclr, backbone: resnet18, width: 0.0625}}
    - {{name: teacher, objective: simclr, backbone: resnet18, width: 0.0625}}
logging: {{save_every: 0, knn_every: 1, knn_k: 5, monitor_limit: 64, tensorboard: false{extra}}}
"""


def pretrain(tmp_path: Path, name: str, capsys, extra: str = "", flags: tuple[str, ...] = ()) -> tuple[Path, str]:
    (tmp_path / f"{name}.yaml").write_text(TINY.format(extra=extra))
    assert main(["pretrain", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name), *flags]) == 0
    console.set_verbosity(console.NORMAL)
    return tmp_path / name, capsys.readouterr().err


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_epoch_lines_and_the_summary_do_not_wait_for_logged_rows(tmp_path, capsys):
    run, err = pretrain(tmp_path, "rare", capsys, extra=", log_every: 50")
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, err
    for line in epochs:  # 2 steps an epoch, a row every 50 steps: the line still has every peer's numbers
        assert re.search(
            r"student loss \d+\.\d{3} \(kl \d+\.\d{3}\) knn \d+\.\d%  teacher loss \d+\.\d{3} "
            r"\(kl \d+\.\d{3}\) knn \d+\.\d%  \d+ img/s",
            line,
        ), line
    table = err[err.index("peer ") :].splitlines()
    assert re.match(r"peer +final loss +final kl +best kNN", table[0])
    assert re.match(r"student +\d+\.\d{3} +\d+\.\d{3} +\d+\.\d% \(epoch [12]\)", table[1])
    assert table[2].startswith("teacher")
    assert re.match(
        rf"4 steps \(2 epochs\) in \d+s, \d+ images/s; checkpoint: {re.escape(str(run))}/checkpoints/last.pt", table[3]
    )
    written = rows(run)
    seconds = int(re.search(r" in (\d+)s,", table[3]).group(1))
    assert seconds >= int(written[-1]["time"] - written[0]["time"])  # the run's wall time, not its last step's
    steps = [row for row in written if "images_per_s" in row]
    assert [(row["step"], row["epoch"]) for row in steps] == [(4, 2)]  # epochs count from 1 in step rows too
    assert [row["epoch"] for row in written if "images_per_s" not in row] == [1, 2]


def test_on_a_terminal_the_bar_shows_each_peer_and_verbose_adds_rows(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: True)
    monkeypatch.delenv("DOGO_PROGRESS", raising=False)
    _, err = pretrain(tmp_path, "bar", capsys, flags=("--verbose",))
    assert "step 1: peer/student/loss" in err and "step 4: " in err  # log_every by length: every step here
    assert re.search(r"student=\d+\.\d{3} kl \d+\.\d{3}.*teacher=\d+\.\d{3} kl", err)
    assert re.search(r"student=\d+\.\d{3} kl \d+\.\d{3} knn \d+\.\d%", err)  # after the first epoch's kNN
    assert "final loss" in err


def test_logging_cadence_follows_the_runs_length_unless_set():
    from dogo.training.log import log_every

    config = build_config({})
    assert [log_every(config, steps) for steps in (4, 200, 201, 2000, 10**6)] == [1, 1, 2, 10, 50]
    assert log_every(build_config({"logging": {"log_every": 7}}), 10**6) == 7


def test_report_plots_a_colour_per_peer_with_markers_and_the_same_bytes(tmp_path, capsys, monkeypatch):
    from dogo import report
    from dogo.report import figures

    run, _ = pretrain(tmp_path, "one-row", capsys, extra=", log_every: 50")  # one step row: one point a line
    drawn = {}
    real_save = figures.save

    def spy(plt, fig, path, title):
        drawn[Path(path).name] = [
            (line.get_label(), line.get_color(), line.get_marker()) for ax in fig.axes for line in ax.get_lines()
        ]
        return real_save(plt, fig, path, title)

    monkeypatch.setattr(figures, "save", spy)
    report.write_report([run], tmp_path / "a")
    loss = drawn["loss.png"]
    assert loss and all(marker == "o" for _, _, marker in loss)  # a line of one point still shows
    colours = {label.split(" ")[1]: colour for label, colour, _ in loss}
    assert colours["peer0"] != colours["peer1"]
    monkeypatch.setattr(figures, "save", real_save)
    report.write_report([run], tmp_path / "b")
    for png in sorted((tmp_path / "a").glob("*.png")):
        assert png.read_bytes() == (tmp_path / "b" / png.name).read_bytes(), png.name


def test_report_counts_epochs_from_epoch_rows_in_old_and_new_files():
    from dogo.report import epochs_logged

    old = [
        {"step": 2, "epoch": 0, "images_per_s": 1.0},
        {"epoch": 1, "step": 2},
        {"step": 3, "epoch": 1, "images_per_s": 1.0},
    ]
    new = [
        {"step": 2, "epoch": 1, "images_per_s": 1.0},
        {"epoch": 1, "step": 2},
        {"step": 3, "epoch": 2, "images_per_s": 1.0},
    ]
    assert epochs_logged(old) == epochs_logged(new) == 1
