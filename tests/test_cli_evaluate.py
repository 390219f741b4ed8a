"""`dogo evaluate` with every protocol and `dogo report` on trained runs, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dogo.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two tiny digits runs that differ only in their seed (a DoGo pair of peers each)."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text("""
name: tiny
dataset: {name: digits, image_size: 8, options: {limit: 256}}
train:
  epochs: 2
  batch_size: 64
  precision: fp32
  models:
    - {objective: simclr, backbone: resnet18, width: 0.0625, distill_weight: 100}
    - {objective: simclr, backbone: resnet18, width: 0.125, distill_weight: 1}
logging: {log_every: 2, save_every: 0, knn_k: 10, progress: false}
""")
    dirs = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        assert main(["pretrain", str(config), f"seed={seed}", "--out", str(out)]) == 0
        dirs.append(out)
    return dirs


PROTOCOLS = [
    ("linear", ["epochs=5"], ["linear"]),
    ("linear", ["solver=lbfgs", "max_iter=50"], ["linear"]),
    ("knn", ["k=10"], ["knn"]),
    ("fewshot", ["fractions=0.1", "per_class=2", "draws=2", "epochs=5"], ["fewshot 10%"]),
    ("noisy", ["rates=0.2,1.0", "epochs=5"], ["noisy sym 20%"]),
    ("transfer", ["dataset=fashion-mnist", "limit=1000", "epochs=3"], ["transfer fashion-mnist"]),
    (
        "shift",
        ["corruptions=gaussian_noise,jpeg", "severities=1,5", "epochs=3", "max_test_images=100"],
        ["shift clean", "shift mCA"],
    ),
]


@pytest.mark.parametrize("protocol, settings, columns", PROTOCOLS, ids=lambda x: x if isinstance(x, str) else None)
def test_every_protocol_runs_from_the_cli(runs, capsys, protocol, settings, columns):
    if protocol == "transfer" and not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    if protocol == "transfer":
        settings = [*settings, "root=/usr/share/datasets/fashion-mnist"]
    assert main(["evaluate", str(runs[0]), "--protocol", protocol, *settings, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["peer"] for r in results] == [0, 1]
    for result in results:
        assert result["dogo_version"] and result["settings"]
        for column in columns:
            key = next(k for k in result["summary"] if k.startswith(column))
            assert 0 <= result["summary"][key] <= 100
        assert Path(result["path"]).exists()


def test_table_output_and_single_peer(runs, capsys):
    assert main(["evaluate", str(runs[1]), "--protocol", "knn", "--peer", "1", "k=10"]) == 0
    out = capsys.readouterr().out
    assert "knn" in out and "results saved under" in out
    assert main(["evaluate", str(runs[1]), "--protocol", "knn", "--peer", "5"]) == 2
    assert "has 2 peer(s)" in capsys.readouterr().err


def test_report_on_two_runs(runs, tmp_path, capsys):
    for run in runs:
        assert main(["evaluate", str(run), "--protocol", "knn", "k=10"]) == 0
        assert main(["evaluate", str(run), "--protocol", "noisy", "rates=0.2,0.6", "epochs=3"]) == 0
    capsys.readouterr()
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "±" in text  # the two seeds are averaged
    for png in ("loss.png", "knn.png", "noisy.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
