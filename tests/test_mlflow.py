"""Optional MLflow logging (`logging.mlflow`): a real run logged to a local sqlite store and read
back with MLflow's client; a resume continues the same MLflow run; clear errors without MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from dogo.cli import main
from dogo.config import flatten
from dogo.training.mlflow_log import NOT_METRICS, mlflow_key

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (the test extra installs it)")

TINY = """
name: tiny
dataset: {{name: digits, image_size: 8, options: {{limit: 128}}}}
train:
  epochs: 2
  batch_size: 64
  precision: fp32
  models:
    - {{objective: simclr, backbone: resnet18, width: 0.0625}}
    - {{objective: simclr, backbone: resnet18, width: 0.0625}}
logging: {{log_every: 1, save_every: 0, knn_k: 5, monitor_limit: 64, tensorboard: false, progress: false,
          mlflow: {{tracking_uri: "{uri}", experiment: tiny}}}}
"""


def metrics_file(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of ``metrics.jsonl`` as MLflow should hold it: MLflow key -> [(step, value), ...]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in NOT_METRICS and isinstance(value, (int, float)):
                out.setdefault(mlflow_key(key), []).append((row["step"], float(value)))
    return out


def test_a_run_logs_its_config_metrics_and_directory_to_mlflow_and_a_resume_continues_it(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY.format(uri=uri))
    assert main(["pretrain", str(config), "train.max_steps=2", "--out", str(run)]) == 0
    assert main(["pretrain", "--resume", str(run), "train.max_steps=4"]) == 0

    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])  # one run, resumed
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.tags["dogo.run_dir"] == str(run.resolve()) and logged.data.tags["dogo.name"] == "tiny"
    first = flatten(yaml.safe_load((run / "config.yaml").read_text()))
    first["train.max_steps"] = 2  # params are the config as first logged; the resume's change is in resume-log.jsonl
    assert logged.data.params == {mlflow_key(k): str(v) for k, v in first.items()}

    expected = metrics_file(run)
    assert "peer/resnet18x0.0625-simclr_0/loss/kl" in expected and "peer/resnet18x0.0625-simclr_1/knn_top1" in expected
    assert set(logged.data.metrics) == set(expected)
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(logged.info.run_id, key))
        assert history == sorted(points), key
    assert sorted({step for points in expected.values() for step, _ in points}) == [1, 2, 3, 4]


def test_mlflow_missing_or_unreachable_is_one_clear_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    assert main(["pretrain", str(config), "train.max_steps=1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "MLflow is not installed: pip install 'dogo[mlflow]'" in err[-1] and "Traceback" not in "\n".join(err)
    monkeypatch.undo()

    config.write_text(TINY.format(uri="nosuchscheme://nowhere"))
    assert main(["pretrain", str(config), "train.max_steps=1", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dogo pretrain: error: logging.mlflow (nosuchscheme://nowhere, experiment 'tiny'): ")
