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
"""

from __future__ import annotations

import re
from typing import Any

from dogo.config import RunConfig, flatten
from dogo.core.errors import DogoError
from dogo.runs.layout import RunDir

__all__ = ["MlflowLog", "mlflow_key", "start"]

RUN_DIR_TAG = "dogo.run_dir"
NOT_METRICS = ("step", "epoch", "time")
_REFUSED = re.compile(r"[^\w\-. :/]")  # what MLflow refuses in a key: all but alphanumerics, _ - . space : /


def mlflow_key(key: str) -> str:
    """``key`` with every character MLflow refuses in a param or metric name replaced by ``_``."""
    return _REFUSED.sub("_", key)


class MlflowLog:
    """The MLflow run of one run directory: :meth:`log` a ``metrics.jsonl`` row, :meth:`close` at the end."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp, step = int(row["time"] * 1000), int(row["step"])
        metrics = [Metric(mlflow_key(key), float(value), stamp, step) for key, value in row.items()
                   if key not in NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def start(config: RunConfig, layout: RunDir, resumed: bool) -> MlflowLog:
    """Open (or, on resume, reopen) the MLflow run of ``layout``; a one-line DogoError if MLflow can't."""
    settings = config.logging.mlflow
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise DogoError("logging.mlflow is set but MLflow is not installed: pip install 'dogo[mlflow]' "
                        "(or remove logging.mlflow)") from None
    try:
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        experiment = client.get_experiment_by_name(settings.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
        run_dir = str(layout.path.resolve())
        earlier = (client.search_runs([experiment_id], f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1)
                   if resumed and "'" not in run_dir else [])
        if earlier:
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = _new_run(client, experiment_id, config, layout, run_dir)
    except MlflowException as exc:
        where = settings.tracking_uri or "the default tracking URI"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DogoError(f"logging.mlflow ({where}, experiment {settings.experiment!r}): {first}") from None
    return MlflowLog(client, run_id)


def _new_run(client: Any, experiment_id: str, config: RunConfig, layout: RunDir, run_dir: str) -> str:
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=layout.path.name,
                            tags={RUN_DIR_TAG: run_dir, "dogo.name": config.name})
    params = [Param(mlflow_key(key), str(value)) for key, value in flatten(config.dump()).items()]
    client.log_batch(run.info.run_id, params=params)
    return run.info.run_id
