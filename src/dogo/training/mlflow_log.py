"""Optional MLflow logging next to TensorBoard (``logging.mlflow``; ``pip install 'dogo[mlflow]'``).

Off unless ``logging.mlflow`` is set (``{tracking_uri: sqlite:///mlflow.db, experiment: dogo}``;
``{}`` takes ``$MLFLOW_TRACKING_URI`` or MLflow's default). One MLflow run per run directory:

- params: the flattened config (``train.models.0.backbone``, ...), as ``config.yaml`` has it;
- metrics: every number of every ``metrics.jsonl`` row, under the same key and step, stamped with
  the row's wall-clock ``time`` (``step``, ``epoch`` and ``time`` themselves are not metrics, as
  in TensorBoard). MLflow allows fewer characters in keys than dogo's peer labels: any other
  character (the ``#`` of ``a#1``) becomes ``_``;
- tags: ``mlflow.runName`` (the run directory's name), ``dogo.run_dir`` (its absolute path) and
  ``dogo.name`` (the config's ``name``).

A resumed run continues the MLflow run tagged with its directory (its params are kept as first
logged; ``resume-log.jsonl`` records what a resume changed), so rows logged after the last
checkpoint and replayed by the resume appear twice in MLflow's history at the same step. A
run that ends before its last step (a signal, an error) is marked KILLED, a finished one
FINISHED. A local store needs MLflow's SQL dependencies, which the extra installs
(``mlflow-skinny`` alone refuses ``sqlite:///`` URIs, and MLflow 3 keeps file stores
(``./mlruns``) behind ``MLFLOW_ALLOW_FILE_STORE=true``).

Every call goes through :class:`dogo.guards.services.Service`: ``logging.mlflow.timeout_s`` (60 s)
per call (MLflow's own HTTP timeout and retries are set to fit it unless the environment sets
them), and on a failure, a tracking URI that is not a database or a server, or no answer in time,
``logging.mlflow.on_error``: ``stop`` (default; at the start, before any training) or ``continue``
without MLflow, with one warning.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Any

from dogo.config import RunConfig, flatten
from dogo.core.errors import DogoError
from dogo.runs.layout import RunDir

if TYPE_CHECKING:
    from dogo.config.run import MlflowConfig
    from dogo.guards.services import Service

__all__ = ["MlflowLog", "check", "mlflow_key", "start"]

RUN_DIR_TAG = "dogo.run_dir"
NOT_METRICS = ("step", "epoch", "time")
_REFUSED = re.compile(r"[^\w\-. :/]")  # what MLflow refuses in a key: all but alphanumerics, _ - . space : /


def mlflow_key(key: str) -> str:
    """``key`` with every character MLflow refuses in a param or metric name replaced by ``_``."""
    return _REFUSED.sub("_", key)


class MlflowLog:
    """The MLflow run of one run directory: :meth:`log` a ``metrics.jsonl`` row, :meth:`close` at the end."""

    def __init__(self, client: Any, run_id: str, service: Any = None) -> None:
        self.client, self.run_id, self.service = client, run_id, service

    def _call(self, what: str, function) -> None:
        if self.service is None:
            function()
        else:
            self.service.call(what, function)

    def log(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp, step = int(row["time"] * 1000), int(row["step"])
        metrics = [
            Metric(mlflow_key(key), float(value), stamp, step)
            for key, value in row.items()
            if key not in NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if metrics:
            self._call(f"logging step {step}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def close(self, finished: bool) -> None:
        self._call(
            "ending the run", lambda: self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
        )


def _service(settings: MlflowConfig) -> Service:
    """The tracker of ``settings`` as a :class:`~dogo.guards.services.Service` (a one-line DogoError when MLflow
    is not installed)."""
    from dogo.guards.services import Service

    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise DogoError(
            "logging.mlflow is set but MLflow is not installed: pip install 'dogo[mlflow]' (or remove logging.mlflow)"
        ) from None
    # MLflow's store logs its errors with a traceback (a full disk under its database, say), which the Service's
    # one line reports: only its critical messages are shown
    logging.getLogger("mlflow.store").setLevel(logging.CRITICAL)
    # and the deprecations its own code meets in its libraries (SQLAlchemy's), which no setting of dogo's can act on
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
    where = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "the default tracking URI"
    return Service(
        f"logging.mlflow ({where}, experiment {settings.experiment!r})",
        timeout_s=settings.timeout_s,
        on_error=settings.on_error,
        warn=lambda m: print(f"warning: {m}", file=sys.stderr),
        setting="logging.mlflow",
    )


_HTTP_SETTINGS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def _fit_http(settings: MlflowConfig) -> None:
    """MLflow's HTTP client retries for minutes by default: one try within the deadline, unless set."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(settings.timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def check(settings: MlflowConfig) -> bool:
    """Reach the tracker of ``settings`` once, as a run's start would (its URI, its store or server), without
    opening a run: what ``dogo study`` does before it starts any run. True when it answered; on a failure the one
    line of :class:`~dogo.guards.services.ServiceError` with ``on_error: stop``, else one warning and False."""
    service = _service(settings)
    saved = {name: os.environ.get(name) for name in _HTTP_SETTINGS}
    _fit_http(settings)

    def reach() -> bool:
        from mlflow import MlflowClient

        _check_uri(settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        MlflowClient(tracking_uri=settings.tracking_uri).get_experiment_by_name(settings.experiment)
        return True

    try:
        return service.call("reaching the tracker", reach) is not None
    finally:
        for name, value in saved.items():  # the study's children set their own from their config
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start(config: RunConfig, layout: RunDir, resumed: bool) -> MlflowLog | None:
    """Open (or, on resume, reopen) the MLflow run of ``layout``; a one-line DogoError if MLflow can't.

    None when the service is off or failed with ``on_error`` set to go on (see :meth:`Service.call`)."""
    settings = config.logging.mlflow
    assert settings is not None, "start() is called only with logging.mlflow set"
    service = _service(settings)  # (MLflow not installed: one line)
    _fit_http(settings)
    from mlflow import MlflowClient

    def connect() -> MlflowLog:
        _check_uri(settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        experiment = client.get_experiment_by_name(settings.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
        run_dir = str(layout.path.resolve())
        earlier = (
            client.search_runs([experiment_id], f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1)
            if resumed and "'" not in run_dir
            else []
        )
        if earlier:
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = _new_run(client, experiment_id, config, layout, run_dir)
        return MlflowLog(client, run_id, service)

    return service.call("opening the run", connect)


_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def _check_uri(uri: str | None) -> None:
    """A tracking URI that is a folder (MLflow 3's file store, off unless MLFLOW_ALLOW_FILE_STORE) says so plainly."""
    if uri is None or os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        from dogo.guards.services import ServiceError

        raise ServiceError(
            f"{uri} is a folder, not a database or a server: MLflow 3 keeps its file store behind "
            "MLFLOW_ALLOW_FILE_STORE=true; use tracking_uri: sqlite:///mlflow.db"
        )


def _new_run(client: Any, experiment_id: str, config: RunConfig, layout: RunDir, run_dir: str) -> str:
    from mlflow.entities import Param

    run = client.create_run(
        experiment_id, run_name=layout.path.name, tags={RUN_DIR_TAG: run_dir, "dogo.name": config.name}
    )
    params = [Param(mlflow_key(key), str(value)) for key, value in flatten(config.dump()).items()]
    client.log_batch(run.info.run_id, params=params)
    return run.info.run_id
