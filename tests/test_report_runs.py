"""dogo report: same-seed runs are not two seeds, one colour per run, no KL panel without KL,
collapse signal and learning rate plotted; results of an earlier checkpoint kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dogo import report
from dogo.evaluate.results import load_results, save_result
from dogo.report import figures


def fake_run(path: Path, seed: int, kl: float | None, accuracy: float) -> Path:
    path.mkdir(parents=True)
    config = {"name": "same", "seed": seed, "train": {"models": [{"name": "student", "objective": "simclr"}]}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    for step in range(1, 4):
        row = {
            "step": step,
            "epoch": 0,
            "peer/0/loss": 5.0 - step,
            "peer/0/loss/ssl": 5.0 - step,
            "peer/0/lr": 1e-3 * step,
            "peer/0/collapse_std": 0.1,
            "time": 1.7e9 + step,
        }
        if kl is not None:
            row["peer/0/loss/kl"] = kl
        rows.append(row)
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    save_result(path, 0, "knn", {"summary": {"knn": accuracy}})
    save_result(path, 0, "knn", {"summary": {"knn": 1.0}, "checkpoint_name": "epoch-1"})
    return path


def test_checkpoint_results_do_not_overwrite_and_reports_read_the_final_ones(tmp_path):
    run = fake_run(tmp_path / "a", 0, None, 50.0)
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["knn-peer0.json", "knn-peer0@epoch-1.json"]
    assert [r["summary"]["knn"] for r in load_results(run)] == [50.0]
    assert [r["summary"]["knn"] for r in load_results(run, "epoch-1")] == [1.0]
    assert len(load_results(run, None)) == 2


def test_same_seed_twice_is_not_two_seeds_and_plots(tmp_path, monkeypatch):
    runs = [
        fake_run(tmp_path / "a", 0, 0.0, 50.0),
        fake_run(tmp_path / "b", 0, 0.0, 60.0),
        fake_run(tmp_path / "c", 1, 0.0, 70.0),
    ]
    panels = {}
    real_save = figures.save

    def spy(plt, fig, path, title):
        panels[Path(path).name] = [ax.get_title() for ax in fig.axes]
        colours = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
        panels[Path(path).name + ":colours"] = colours
        return real_save(plt, fig, path, title)

    monkeypatch.setattr(figures, "save", spy)
    text = report.write_report(runs, tmp_path / "out").read_text()
    assert "(seeds 0, 0)" not in text and "(seeds 0, 1)" in text
    assert "loss: kl" not in panels["loss.png"]  # every run has kl 0.0: no distillation, no panel
    assert panels["signals.png"] == ["collapse signal: embedding std", "learning rate"]
    loss_colours, signal_colours = panels["loss.png:colours"], panels["signals.png:colours"]
    assert len(set(loss_colours.values())) == 3  # three runs (two share a name), three colours
    assert all(signal_colours[label] == colour for label, colour in loss_colours.items())


def two_peer_run(path: Path, keyed_by: str) -> Path:
    """A named and an unnamed peer, metrics keyed by label (as written now) or by index (older runs)."""
    path.mkdir(parents=True)
    models = [{"name": "student", "objective": "simclr"}, {"backbone": "resnet50", "objective": "simsiam"}]
    (path / "config.yaml").write_text(yaml.safe_dump({"name": "pair", "seed": 0, "train": {"models": models}}))
    keys = ["0", "1"] if keyed_by == "index" else ["student", "resnet50-simsiam"]
    rows = [
        {
            "step": step,
            "epoch": 0,
            **{f"peer/{k}/loss/{term}": 5.0 - step + i for i, k in enumerate(keys) for term in ("ssl", "kl")},
            "time": 1.7e9 + step,
        }
        for step in (1, 2)
    ]
    rows.append({"step": 2, "epoch": 1, **{f"peer/{k}/knn_top1": 40.0 + 10 * i for i, k in enumerate(keys)}})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_metrics_keyed_by_peer_name_and_older_files_keyed_by_index_report_alike(tmp_path):
    new, old = two_peer_run(tmp_path / "new" / "pair", "name"), two_peer_run(tmp_path / "old" / "pair", "index")
    assert report.read_run(new).metrics == report.read_run(old).metrics
    assert "peer/1/knn_top1" in report.read_run(new).metrics[-1]
    texts = [
        report.write_report([run], tmp_path / f"out-{run.parent.name}").read_text().replace(str(run), "RUN")
        for run in (new, old)
    ]
    assert texts[0] == texts[1]
    assert "online kNN (last)" in texts[0] and "| 50.00 |" in texts[0]  # peer 1's last kNN, read from either file
