"""Class 7, outside services (issue 25): MLflow reached within ``timeout_s``, or not used, as the config says.

Every way the tracker can fail (a tracking URI that is a folder, a store in a folder that cannot be
written, a server that refuses, a server that never answers, a failure in the middle of the run)
with ``on_error: stop`` (the default) is one line naming ``logging.mlflow`` and where, before any
training when it fails at the start (the run directory is removed), and with ``on_error:
continue`` one warning and a run that trains to its end without the tracker; a full disk under
the tracker's store is the same line, naming the database's error. Every command that takes the
tracker's settings is in :data:`STARTERS` (pretrain, quickstart, study; a new one joins by a line
there). The mechanism is :class:`dogo.guards.services.Service`; a future tracker joins by going
through it and adding its failures here.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from guarded import TINY_QUICKSTART, digits_config, run_cli
from test_bad_inputs import snapshot

pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there, a connection is refused


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def failing_uri(kind: str, tmp, silent: str) -> str:
    if kind == "folder-uri":
        return str(tmp / "mlruns")
    if kind == "store-not-writable":
        (tmp / "afile").write_text("a file where the store's folder should be")
        return f"sqlite:///{tmp / 'afile' / 'mlflow.db'}"
    if kind == "server-refuses":
        return f"http://127.0.0.1:{_free_port()}"
    return silent


KINDS = ["folder-uri", "store-not-writable", "server-refuses", "server-never-answers"]


def _settings(mlflow: dict) -> list[str]:
    return [f"logging.mlflow.{key}={value}" for key, value in mlflow.items()]


def _study(config: Path, tmp: Path) -> Path:
    """A study of one arm and one seed whose base is ``config`` (its runs log to the tracker ``config`` names)."""
    study = {"name": "t", "base": str(config), "seeds": [0], "arms": [{"name": "a"}]}
    study["evaluate"] = {"protocols": {"knn": {"k": 5}}}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study))
    return tmp / "study.yaml"


#: each command that takes the tracker's settings (logging.mlflow): its argv for a world of ``tmp`` with the
#: run config at ``config`` (logging.mlflow set there) and the same settings as overrides; the folder of what
#: it trains (gone, or never made, when the tracker stops it); its checkpoint when it goes on without the tracker;
#: how many warnings it says then (one per run it trains in its own process); the kinds of failure to go on from
#: (all for pretrain, one for the commands that train more)
STARTERS: dict[str, tuple[Callable[[Path, Path, dict], list[str]], str, str, int, list[str]]] = {
    "pretrain": (
        lambda config, tmp, mlflow: ["pretrain", str(config), "--out", str(tmp / "run")],
        "run",
        "run/checkpoints/last.pt",
        1,
        KINDS,
    ),
    "quickstart": (
        lambda config, tmp, mlflow: ["quickstart", "--out", str(tmp / "qs"), *TINY_QUICKSTART, *_settings(mlflow)],
        "qs",
        "qs/dogo/checkpoints/last.pt",
        2,
        ["server-refuses"],
    ),
    # the study reaches each tracker once before it starts any run (each run, a child process, would stop on it)
    "study": (
        lambda config, tmp, mlflow: ["study", str(_study(config, tmp)), "--out", str(tmp / "study"), "--no-report"],
        "study/a/seed-0",
        "study/a/seed-0/checkpoints/last.pt",
        1,
        ["server-refuses"],
    ),
}

CASES = [
    (command, kind, on_error)
    for command, (*_, going_on) in STARTERS.items()
    for kind in KINDS
    for on_error in ("stop", "continue")
    if on_error == "stop" or kind in going_on
]


@pytest.mark.parametrize(("command", "kind", "on_error"), CASES)
def test_a_tracker_that_fails_at_the_start(command, kind, on_error, tmp_path, capsys, monkeypatch, silent_server):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    make, trained, checkpoint, warned, _ = STARTERS[command]
    cfg = digits_config()
    cfg["logging"]["mlflow"] = mlflow = {
        "tracking_uri": failing_uri(kind, tmp_path, silent_server),
        "timeout_s": 2,
        **({} if on_error == "stop" else {"on_error": "continue"}),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    argv = [*make(tmp_path / "c.yaml", tmp_path, mlflow), "-q"]
    before = snapshot(tmp_path)
    started = time.monotonic()
    code, _out, err = run_cli(argv, capsys)
    assert time.monotonic() - started < (120 if command == "pretrain" else 400)
    after = snapshot(tmp_path)
    assert all(after.get(k) == v for k, v in before.items()), "a file of the user's changed"  # afile, c.yaml
    lines = [line for line in err.splitlines() if line.strip()]
    if on_error == "stop":
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"dogo {command}: error: logging.mlflow (") and "on_error=continue" in lines[0]
        if command != "study":  # (the study stops before it makes any run's folder)
            assert "was removed: the run failed before its first checkpoint" in lines[0]
        assert not (tmp_path / trained).exists()  # stopped before any training
    else:
        assert code == 0, err
        warnings = [line for line in lines if line.startswith("warning: logging.mlflow (")]
        assert len(warnings) == warned and all("going on without it" in w for w in warnings), err
        assert (tmp_path / checkpoint).is_file()
    if kind == "server-never-answers":
        assert "no answer within 2 s" in err or "timed out" in err.lower(), err


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_a_tracker_that_fails_in_the_middle_of_a_run(on_error, tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    calls = {"n": 0}
    real = MlflowClient.log_batch

    def flaky(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if metrics:
            calls["n"] += 1
            if calls["n"] >= 2:
                raise MlflowException("the tracking server went away")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    cfg = digits_config(max_steps=4)
    cfg["logging"]["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "on_error": on_error}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, _out, err = run_cli(["pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "-q"], capsys)
    lines = [
        line for line in err.splitlines() if line.strip() and "Warning" not in line and "configure_mappers" not in line
    ]
    if on_error == "stop":
        assert (
            code == 2
            and lines[-1].startswith("dogo pretrain: error: logging.mlflow (")
            and "the tracking server went away" in lines[-1]
        ), err
    else:
        assert code == 0 and calls["n"] == 2, (calls, err)  # no call after the first failure
        assert sum("going on without it" in line for line in lines) == 1, err
        rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == 4  # trained to its end without the tracker


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_a_full_disk_under_the_trackers_store_is_one_line(on_error, tmp_path, capsys, monkeypatch):
    """MLflow writes its own store (its database: outside dogo's helper). A full disk there, as MLflow reports it
    (SQLAlchemy's wording first, the database's error on the next line, and its own traceback logged), is the one
    line naming logging.mlflow and the database's error, with no traceback; then on_error as for any failure.
    (Measured with a real full file system: "(sqlite3.OperationalError) database or disk is full".)"""
    import logging

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def full(self, *args, **kwargs):
        try:
            raise OSError("database or disk is full")
        except OSError:
            logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error.")
        raise MlflowException(
            "(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)\n"
            "(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO runs (run_uuid) VALUES (?)]\n"
            "(Background on this error at: https://sqlalche.me/e/21/e3q8)"
        )

    monkeypatch.setattr(MlflowClient, "create_run", full)
    cfg = digits_config()
    cfg["logging"]["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "on_error": on_error}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, _out, err = run_cli(["pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "-q"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    said = "logging.mlflow (sqlite:///"
    if on_error == "stop":
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"dogo pretrain: error: {said}"), err
    else:
        assert code == 0 and len(lines) == 1 and lines[0].startswith(f"warning: {said}"), err
    assert "): (sqlite3.OperationalError) database or disk is full; " in lines[0], err
