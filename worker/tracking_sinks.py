"""One tracker run each: MLflow and Weights & Biases behind the same small interface (`TrackerSink`).

Used only on the tracking thread of worker/tracking.py; a sink's errors are that module's to report.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from remix_engine.config import MlflowIntegration, WandbIntegration

log = logging.getLogger(__name__)

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # a run's final status
MLFLOW_PARAM_VALUE_LIMIT = 6000
MLFLOW_BATCH_PARAMS = 100
MLFLOW_BATCH_METRICS = 1000
_MLFLOW_KEY_OUTSIDE = re.compile(r"[^A-Za-z0-9_\-. /:]")


class TrackerSink:
    """One tracker run. Subclasses implement open, log_params, log_metrics, log_checkpoint and close."""

    kind = "tracker"

    def open(self, run_id: str | None) -> tuple[str, int]:
        """Start a run, or continue `run_id`; returns the run id and the last step it already has (-1: none)."""
        raise NotImplementedError

    def log_params(self, params: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError

    def log_checkpoint(self, step: int, key: str) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        raise NotImplementedError


def _mlflow_key(key: str) -> str:
    """MLflow refuses a whole batch over one key outside [A-Za-z0-9_-. /:]: such characters become '_'."""
    return _MLFLOW_KEY_OUTSIDE.sub("_", key)[:250] or "_"


class MlflowSink(TrackerSink):
    """An MLflow run through `MlflowClient` (no global active run: several jobs may share a worker)."""

    kind = "mlflow"

    def __init__(self, spec: MlflowIntegration, *, job_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.tracking import MlflowClient  # here: a worker without mlflow reports it at once

        self.spec = spec
        self.client_class = MlflowClient
        self.client: Any = None
        self.run_name = spec.run_name or job_id
        self.tags = {_mlflow_key(key): value for key, value in {**spec.tags, **tags}.items()}
        self.run_id = ""

    def open(self, run_id: str | None) -> tuple[str, int]:
        # Built here, on the tracking thread: a SQL store creates its tables on first use.
        self.client = self.client_class(tracking_uri=self.spec.tracking_uri)
        if run_id:
            run = self.client.get_run(run_id)
            self.run_id = run_id
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id, self._last_step(list(run.data.metrics))
        experiment = self.client.get_experiment_by_name(self.spec.experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.spec.experiment_name)
        )
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        return self.run_id, -1

    def _last_step(self, keys: Sequence[str]) -> int:
        steps = [m.step for key in keys for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps, default=-1)

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(_mlflow_key(key), value[:MLFLOW_PARAM_VALUE_LIMIT]) for key, value in params.items()]
        for start in range(0, len(entries), MLFLOW_BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=entries[start : start + MLFLOW_BATCH_PARAMS])

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(_mlflow_key(key), value, now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), MLFLOW_BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=entries[start : start + MLFLOW_BATCH_METRICS])

    def log_checkpoint(self, step: int, key: str) -> None:
        from mlflow.entities import Param, RunTag

        self.client.log_batch(
            self.run_id,
            params=[Param(f"checkpoint.step_{step}", key)],
            tags=[RunTag("remix.last_checkpoint", key), RunTag("remix.last_checkpoint_step", str(step))],
        )

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class WandbSink(TrackerSink):
    """A W&B run; offline runs are written under `<output_dir>/wandb/` (upload later with `wandb sync`)."""

    kind = "wandb"

    def __init__(self, spec: WandbIntegration, *, job_id: str, tags: Mapping[str, str], output_dir: Path) -> None:
        if importlib.util.find_spec("wandb") is None:  # imported on the tracking thread: it is slow to import
            raise ModuleNotFoundError("wandb is not installed on this worker (pip install 'remix-rft[tracking]')")
        self.spec = spec
        self.job_id = job_id
        self.tags = tags
        self.output_dir = output_dir
        self.params: Mapping[str, str] = {}
        self.run: Any = None

    def open(self, run_id: str | None) -> tuple[str, int]:
        import wandb

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.spec.project,
            entity=self.spec.entity,
            mode=self.spec.mode,
            name=self.spec.name or self.job_id,
            tags=[*self.spec.tags, *(f"{key}:{value}" for key, value in self.tags.items())][:64],
            id=run_id,  # None: a new run, with an id W&B chooses
            resume="allow",
            dir=str(self.output_dir),
            reinit="create_new",  # one worker process may track several jobs
            settings=wandb.Settings(
                console="off",  # the worker's own stdout stays the worker's
                x_disable_stats=True,
                disable_git=True,
                save_code=False,
                login_timeout=30,  # online without WANDB_API_KEY: fail, never wait for a prompt
            ),
        )
        # A resumed online run knows its last step; an offline one starts a new file of the same run.
        last = int(self.run.step) - 1 if run_id and self.run.step else -1
        return self.run.id, last

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_checkpoint(self, step: int, key: str) -> None:
        self.run.summary["remix/last_checkpoint"] = key
        self.run.summary["remix/last_checkpoint_step"] = step

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == FINISHED else 1)
