"""Mirror a job to the experiment trackers its config names (`integrations`: MLflow, Weights & Biases).

`JobTracking` is fed by the worker's trainer callbacks: the flattened config and tags at the start,
every step's numeric metrics, every checkpoint's step and artifact key (a reference: weights are
not uploaded), and the outcome at the end (FINISHED, FAILED or KILLED). It never slows or fails
training: calls go through a bounded queue to one background thread, a full queue drops the call
(counted, reported once as a `tracking` job event), and a tracker error is logged and reported as
one `tracking` job event per tracker; training carries on either way.

A resumed job continues the same runs. `tracking.json` in the job's output folder keeps each
tracker's run id and the last step it took; a `tracking` event also names the run id (read back
when the folder is gone, e.g. a resume on another worker with a remote artifact store). Steps up
to the last one taken are not sent again, so a crash re-running steps after its checkpoint does
not log a step twice.

Secrets never come from the job: the MLflow client reads MLFLOW_TRACKING_TOKEN (or
MLFLOW_TRACKING_USERNAME/PASSWORD) and W&B reads WANDB_API_KEY from the worker's environment.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from remix_engine.config import IntegrationConfig, MlflowIntegration, TrainConfig, check_tracking_uri
from service.lifecycle import JobWriter
from service.models import Job, JobEvent
from service.settings import Settings
from worker.tracking_sinks import FAILED, FINISHED, KILLED, MlflowSink, TrackerSink, WandbSink

log = logging.getLogger(__name__)

STATE_FILE = "tracking.json"
EVENT_KIND = "tracking"

# (message, payload) of a job event; the caller decides where events go (the job's event log).
ReportEvent = Callable[[str, Mapping[str, Any]], None]


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """{"rollout": {"group_size": 4}} -> {"rollout.group_size": "4"}; lists are indexed ("eval_sets.0.name")."""
    if isinstance(value, Mapping):
        items: list[tuple[str, Any]] = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(index), item) for index, item in enumerate(value)]
    else:
        return {prefix: "" if value is None else str(value)} if prefix else {}
    flat: dict[str, str] = {}
    if not items and prefix:
        flat[prefix] = "[]" if isinstance(value, list | tuple) else "{}"
    for key, item in items:
        flat.update(flatten_params(item, f"{prefix}.{key}" if prefix else key))
    return flat


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics a tracker can plot: finite numbers (not booleans, strings or NaN)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class _SinkState:
    def __init__(self, index: int, spec: IntegrationConfig, sink: TrackerSink | None) -> None:
        self.index = index
        self.spec = spec
        self.sink = sink
        self.run_id: str | None = None
        self.last_step = -1
        self.open = False
        self.broken = sink is None  # could not be created, or could not open its run: nothing more to send
        self.reported = False

    @property
    def label(self) -> str:
        return f"integrations.{self.index} ({self.spec.type})"


class JobTracking:
    """The trackers of one job attempt, fed from the training thread and served by a background thread."""

    def __init__(
        self,
        integrations: Sequence[IntegrationConfig],
        *,
        job_id: str,
        tenant_id: str,
        attempt: int,
        output_dir: Path,
        report: ReportEvent,
        known_runs: Mapping[int, str] | None = None,
        allow_local: bool = False,
        queue_size: int = 10000,
        close_seconds: float = 30.0,
    ) -> None:
        self.job_id = job_id
        self.output_dir = output_dir
        self.report = report
        self.close_seconds = close_seconds
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._status = FAILED
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"tracking-{job_id}", daemon=True)
        tags = {"remix.job_id": job_id, "remix.tenant_id": tenant_id, "remix.attempt": str(attempt)}
        saved = self._read_state()
        self._states = []
        for index, spec in enumerate(integrations):
            state = _SinkState(index, spec, self._make_sink(index, spec, tags, allow_local))
            entry = saved.get(str(index), {})
            if entry.get("type") == spec.type:
                state.run_id, state.last_step = entry.get("run_id"), int(entry.get("last_step", -1))
            state.run_id = state.run_id or (known_runs or {}).get(index)
            self._states.append(state)

    def _make_sink(self, index: int, spec: IntegrationConfig, tags: dict[str, str], allow_local: bool) -> Any:
        try:
            if isinstance(spec, MlflowIntegration):
                check_tracking_uri(spec.tracking_uri, allow_local=allow_local)  # the API checked; so does the worker
                return MlflowSink(spec, job_id=self.job_id, tags=tags)
            return WandbSink(spec, job_id=self.job_id, tags=tags, output_dir=self.output_dir)
        except Exception as error:  # a missing package or a refused URI: the job trains untracked
            self._report_error(f"integrations.{index} ({spec.type})", "could not start", error)
            return None

    # ---------------------------------------------------------------- called by the training thread

    def start(self, config: Mapping[str, Any]) -> JobTracking:
        if self._states:
            self._enqueue("start", flatten_params(config))
            self._thread.start()
        return self

    def step(self, step: int, metrics: Mapping[str, Any]) -> None:
        numbers = numeric_metrics(metrics)
        if numbers:
            self._enqueue("metrics", step, numbers)

    def checkpoint(self, step: int, key: str) -> None:
        self._enqueue("checkpoint", step, key)

    def close(self, status: str) -> None:
        """End every run with `status`; waits at most `close_seconds` for what is still queued. Only the
        first call counts (the runner closes once training ends, and again on its way out)."""
        if self._closed or not self._thread.is_alive():
            return
        self._closed = True
        self._status = status
        self._stop.set()
        self._thread.join(self.close_seconds)
        if self._thread.is_alive():
            log.warning("job %s: trackers still busy after %.0fs; leaving them", self.job_id, self.close_seconds)
        if self.dropped:
            self._safe_report(
                f"tracking dropped {self.dropped} updates: the trackers could not keep up",
                {"dropped": self.dropped},
            )

    def _enqueue(self, *item: Any) -> None:
        if not self._states:
            return
        try:
            self._queue.put_nowait((item[0], item[1:]))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("job %s: tracking queue full; dropping updates until it drains", self.job_id)

    # ---------------------------------------------------------------- the background thread

    def _serve(self) -> None:
        while True:
            try:
                op, args = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    break
                continue
            for state in self._states:
                self._apply(state, op, args)
        for state in self._states:
            sink = state.sink
            if state.open and not state.broken and sink is not None:
                self._call(state, "could not end its run", partial(sink.close, self._status))

    def _apply(self, state: _SinkState, op: str, args: tuple[Any, ...]) -> None:
        sink = state.sink
        if state.broken or sink is None:
            return
        if op == "start":
            self._open(state, sink, args[0])
        elif op == "metrics" and state.open:
            step, metrics = args
            if step <= state.last_step:
                return  # this run already has the step (logged by an attempt that crashed after it)
            if self._call(state, "could not log metrics", lambda: sink.log_metrics(step, metrics)):
                state.last_step = step
                self._save_state()
        elif op == "checkpoint" and state.open:
            step, key = args
            self._call(state, "could not log a checkpoint", lambda: sink.log_checkpoint(step, key))

    def _open(self, state: _SinkState, sink: TrackerSink, params: Mapping[str, str]) -> None:
        resumed = state.run_id
        try:
            run_id, tracker_last = sink.open(resumed)
        except Exception as error:
            state.broken = True
            self._report_error(state.label, "could not open its run", error, state)
            return
        state.run_id, state.open = run_id, True
        state.last_step = max(state.last_step, tracker_last)
        self._save_state()
        if not resumed:
            self._call(state, "could not log the config", lambda: sink.log_params(params))
            self._safe_report(
                f"{state.label} run {run_id}",
                {"integration": state.index, "type": state.spec.type, "run_id": run_id},
            )

    def _call(self, state: _SinkState, what: str, action: Callable[[], None]) -> bool:
        try:
            action()
            return True
        except Exception as error:
            self._report_error(state.label, what, error, state)
            return False

    def _report_error(self, label: str, what: str, error: BaseException, state: _SinkState | None = None) -> None:
        log.warning("job %s: tracker %s %s: %s", self.job_id, label, what, error)
        if state is not None:
            if state.reported:
                return  # one event per tracker: a tracker that is down would otherwise flood the job's events
            state.reported = True
        self._safe_report(
            f"tracker {label} {what}: {type(error).__name__}: {str(error)[:300]}; training continues",
            {"warning": True, "error_type": type(error).__name__},
        )

    def _safe_report(self, message: str, payload: Mapping[str, Any]) -> None:
        try:
            self.report(message, payload)
        except Exception:  # the event log is best effort here: tracking must not fail the job
            log.exception("job %s: could not record a tracking event", self.job_id)

    # ---------------------------------------------------------------- run ids across attempts

    @property
    def _state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def _read_state(self) -> dict[str, Any]:
        try:
            saved = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return saved.get("runs", {}) if isinstance(saved, dict) else {}

    def _save_state(self) -> None:
        runs = {
            str(s.index): {"type": s.spec.type, "run_id": s.run_id, "last_step": s.last_step}
            for s in self._states
            if s.run_id
        }
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            partial = self._state_path.with_suffix(".tmp")
            partial.write_text(json.dumps({"runs": runs}))
            os.replace(partial, self._state_path)  # atomic: a crash never leaves half a file
        except OSError:
            log.exception("job %s: could not save %s", self.job_id, self._state_path)


def runs_from_events(payloads: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Run ids named by earlier `tracking` events of the job (the newest per integration)."""
    runs: dict[int, str] = {}
    for payload in payloads:
        index, run_id = payload.get("integration"), payload.get("run_id")
        if isinstance(index, int) and isinstance(run_id, str):
            runs[index] = run_id
    return runs


def start_tracking(
    writer: JobWriter, job: Job, config: TrainConfig, output_dir: Path, settings: Settings
) -> JobTracking | None:
    """The job's experiment trackers, started with its config as submitted (no worker-local paths), or None."""
    if not config.integrations:
        return None
    with writer.sessions() as session:
        earlier = session.scalars(
            select(JobEvent.payload).where(JobEvent.job_id == job.id, JobEvent.kind == EVENT_KIND).order_by(JobEvent.id)
        ).all()

    def report(message: str, payload: Mapping[str, Any]) -> None:
        writer.add_event(EVENT_KIND, None, message, payload)

    tracking = JobTracking(
        config.integrations,
        job_id=str(job.id),
        tenant_id=str(job.tenant_id),
        attempt=writer.attempt,
        output_dir=output_dir,
        report=report,
        known_runs=runs_from_events([p for p in earlier if isinstance(p, dict)]),
        allow_local=settings.tracking_allow_local,
        queue_size=settings.tracking_queue_size,
        close_seconds=settings.tracking_close_seconds,
    )
    return tracking.start(job.config)


__all__ = [
    "EVENT_KIND",
    "FAILED",
    "FINISHED",
    "KILLED",
    "STATE_FILE",
    "JobTracking",
    "runs_from_events",
    "start_tracking",
]
