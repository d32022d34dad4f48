"""MLflow: one MLflow run per minidml run, in ``MLFLOW_TRACKING_URI`` or else in a SQLite
store in the run directory (``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``). The
experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``minidml``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import MinidmlError
from . import Tracker, hyperparameters


def tracking_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


class MLflowTracker(Tracker):
    name = "mlflow"

    def open(self, run_dir: Path, identity: Mapping[str, Any], meta: Mapping[str, Any]
             ) -> dict[str, Any]:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(run_dir)
        self._client = client = MlflowClient(tracking_uri=uri)
        run_id = identity.get("run_id") if identity.get("tracking_uri") == uri else None
        if run_id is not None:
            try:
                client.update_run(run_id, status="RUNNING")
            except MlflowException:  # gone from the store: a new tracked run
                run_id = None
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "minidml")
            experiment = client.get_experiment_by_name(name)
            if experiment is not None and experiment.lifecycle_stage == "deleted":
                raise MinidmlError(f"--log-to mlflow: the experiment {name!r} was deleted (and "
                                   "not yet purged); restore it, purge it with `mlflow gc`, or "
                                   "set MLFLOW_EXPERIMENT_NAME to another name")
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(name))
            run_id = client.create_run(experiment_id, run_name=run_dir.name, tags={
                "minidml.run_dir": str(run_dir.resolve())}).info.run_id
            params = [Param(k, str(v)) for k, v in hyperparameters(meta["config"]).items()]
            for i in range(0, len(params), 100):  # MLflow takes 100 parameters per call
                client.log_batch(run_id, params=params[i:i + 100])
        self._run_id = run_id
        return {"run_id": run_id, "tracking_uri": uri}

    def send(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # and 1,000 metrics
            self._client.log_batch(self._run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        self._client.set_terminated(self._run_id)
