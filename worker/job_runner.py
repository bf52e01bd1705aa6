"""Run one training job on this worker: claim it, train it, stream results to the database, finish it.

`run_job(job_id)` is what the Celery task calls. It is safe to run twice for the same id:
the claim is a conditional `UPDATE jobs SET status='running' ... WHERE status='queued'`, so a
redelivered message, a job already running elsewhere, or a cancelled or finished job is left alone.
Each claim records a `JobAttempt`. If an earlier attempt left checkpoints in the job's folder,
training resumes from the latest one; metric rows are upserted by (job_id, step), so a crash
neither loses nor duplicates steps. `DbCallbacks` is the `TrainerCallbacks` implementation
that writes metrics, events and checkpoints and polls for cancellation; a background
`Heartbeat` keeps `heartbeat_at` fresh even while one long step runs. A crashed worker is not
handled here but by the reaper (worker/reaper.py), which re-queues jobs whose heartbeat went stale.

The claim and every database write of an attempt are transitions of service/lifecycle
(`claim_job`, the attempt's `JobWriter`); this module decides when to make them.

Before training, `resolve_config` turns the job's artifact keys into local paths: uploaded datasets,
and a `model.name_or_path: job:<id>@<step>` (a checkpoint of an earlier job of the same tenant) into
that checkpoint's folder, downloaded from a remote store like the datasets.

A job with `distributed.num_processes > 1` is claimed here all the same, then trained by that many
processes under torchrun (worker/distributed_launch.py); their rank 0 runs `train_and_finish` with
`DbCallbacks` exactly as this process would, while this process keeps the heartbeat.

A job whose config lists `integrations` (MLflow, W&B) is mirrored to them by worker/tracking.py:
`DbCallbacks` hands each step's metrics and each checkpoint to its `JobTracking`, which sends them
from a background thread, so a slow tracker never holds training up.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from remix_engine.callbacks import NullCallbacks
from remix_engine.checkpoint_dirs import step_of_checkpoint_dir
from service.artifacts import ArtifactStore, checkpoint_key
from service.db import session_factory
from service.lifecycle import ACTIVE_STATUSES, JobWriter, LeaseLost, RunningLimitReached, claim_job
from service.models import JobStatus
from service.settings import Settings, get_settings
from worker.job_inputs import prepare_job_inputs
from worker.tracking import FAILED, FINISHED, KILLED, JobTracking, start_tracking

if TYPE_CHECKING:  # the trainer (and torch) are imported only inside run_job
    from remix_engine.trainer import TrainResult

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0


def worker_identity() -> str:
    """hostname-pid: tells apart two workers on one machine and a restarted worker."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """Renews heartbeat_at every `interval` seconds from a daemon thread while the block runs."""

    def __init__(self, writer: JobWriter, interval: float) -> None:
        self.writer = writer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{writer.job_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.writer.heartbeat()
            except LeaseLost:
                if self._finished_by_this_attempt():  # e.g. by rank 0 of a multi-process job
                    log.info("job %s has finished; stopping heartbeats", self.writer.job_id)
                else:
                    log.warning("job %s was taken away from this worker; stopping heartbeats", self.writer.job_id)
                return
            except Exception:  # a missed beat is not fatal: the next one may succeed
                log.exception("heartbeat of job %s failed", self.writer.job_id)

    def _finished_by_this_attempt(self) -> bool:
        try:
            view = self.writer.read_status()
        except Exception:  # only chooses a log message
            return False
        finished = {
            JobStatus.succeeded.value,
            JobStatus.failed.value,
            JobStatus.cancelled.value,
            JobStatus.paused.value,
        }
        return view is not None and view.attempts == self.writer.attempt and view.status in finished

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _checkpoint_steps(root: Path) -> set[int]:
    steps = set()
    for folder in root.iterdir() if root.is_dir() else ():
        step = step_of_checkpoint_dir(folder.name)
        if folder.is_dir() and step is not None:
            steps.add(step)
    return steps


class DbCallbacks(NullCallbacks):
    """TrainerCallbacks that stream one attempt's progress into the database."""

    def __init__(
        self,
        writer: JobWriter,
        store: ArtifactStore,
        *,
        upload_checkpoints: bool,
        poll_interval: float = CANCEL_POLL_SECONDS,
        devices: int = 1,
        tracking: JobTracking | None = None,
    ) -> None:
        self.writer = writer
        self.tracking = tracking  # the job's experiment trackers (worker/tracking.py), fed after each DB write
        self.devices = devices  # training processes of the job: its usage counts device-seconds of each
        self.store = store
        self.upload_checkpoints = upload_checkpoints  # False when the output dir already is the store
        self.poll_interval = poll_interval
        self.cancel_requested = False
        self._last_poll = -math.inf

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.writer.record_step(step, metrics, devices=self.devices)
        if self.tracking is not None:
            self.tracking.step(step, metrics)

    def on_event(self, kind: str, step: int, message: str, payload: Mapping[str, Any]) -> None:
        self.writer.add_event(kind, step, message, self._public_payload(payload))

    def _public_payload(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """Events are shown to the tenant: name checkpoints by artifact key, not by worker-local path."""
        path = payload.get("path")
        step = step_of_checkpoint_dir(Path(path).name) if isinstance(path, str | Path) else None
        if step is None:
            return payload
        public = {k: v for k, v in payload.items() if k != "path"}
        public["checkpoint"] = checkpoint_key(self.writer.job_id, step)
        return public

    def on_checkpoint(self, step: int, path: Path, metrics: Mapping[str, Any]) -> None:
        key = checkpoint_key(self.writer.job_id, step)
        if self.upload_checkpoints:
            self.store.put_dir(key, path)
        pruned = self.writer.register_checkpoint(step, key, _folder_size(path), metrics, _checkpoint_steps(path.parent))
        if self.upload_checkpoints:
            for old_key in pruned:
                self.store.delete(old_key)
        if self.tracking is not None:
            self.tracking.checkpoint(step, key)

    def on_checkpoint_pruned(self, step: int, path: Path) -> None:  # noqa: ARG002 - the row names the key
        """The trainer deleted an older checkpoint (retention): it is no longer downloadable."""
        key = self.writer.forget_checkpoint(step)
        if self.upload_checkpoints and key:
            self.store.delete(key)

    def checkpoint_on_stop(self) -> bool:
        """Whether to save a checkpoint of the step reached: always for a pause (the resume continues
        from it), and for a cancellation that asked for one (`?checkpoint=true`)."""
        job = self.writer.read_job()
        return job.status == JobStatus.pausing.value or bool(job.checkpoint_on_cancel)

    def should_stop(self) -> bool:
        """Cancellation and pause check between steps; reads the job row at most every `poll_interval` seconds."""
        if self.writer.lost.is_set():
            raise LeaseLost(f"job {self.writer.job_id} was re-queued while this worker ran it")
        now = time.monotonic()
        if now - self._last_poll < self.poll_interval:
            return self.cancel_requested
        self._last_poll = now
        view = self.writer.read_status()
        if view is None or view.attempts != self.writer.attempt or view.status not in ACTIVE_STATUSES:
            self.writer.lost.set()
            raise LeaseLost(f"job {self.writer.job_id} is no longer owned by attempt {self.writer.attempt}")
        stopping = (JobStatus.cancelling.value, JobStatus.pausing.value)
        self.cancel_requested = view.cancel_requested or view.status in stopping
        return self.cancel_requested


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    sessions: sessionmaker[Session] | None = None,
    celery_task_id: str | None = None,
    device: str | None = None,
) -> str:
    """Claim and run a job; returns the outcome: skipped, deferred (held back by its tenant's
    max_running_jobs: still queued, to be tried again), succeeded, cancelled, paused, failed or lost."""
    settings = settings or get_settings()
    sessions = sessions or session_factory(settings.database_url)
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        log.error("ignoring train_job with an invalid job id %r", job_id)
        return "skipped"
    window = settings.worker_db_retry_seconds
    try:
        claim = claim_job(
            sessions,
            job_uuid,
            worker_id=worker_identity(),
            celery_task_id=celery_task_id,
            retry_window=window,
            default_max_running_jobs=settings.default_max_running_jobs,
        )
    except RunningLimitReached as held_back:
        log.info("%s", held_back)
        return "deferred"
    if claim is None:
        log.info("job %s is not queued (missing, running elsewhere, cancelled or finished); nothing to do", job_id)
        return "skipped"
    log.info("job %s: attempt %d claimed by %s", job_id, claim.attempt, claim.worker_id)
    writer = JobWriter(sessions, claim.job_id, claim.attempt, retry_window=window)
    try:
        with Heartbeat(writer, settings.heartbeat_seconds):
            return _train_and_finish(writer, settings, device)
    except LeaseLost as lost:
        log.warning("job %s: %s; leaving it to its new owner", job_id, lost)
        return "lost"
    except Exception as error:
        log.exception("job %s failed", job_id)
        record_failure(writer, error)
        return "failed"


def _train_and_finish(writer: JobWriter, settings: Settings, device: str | None) -> str:
    job = writer.read_job()
    inputs = prepare_job_inputs(job, writer.sessions, settings)
    store, config, output_dir, upload = inputs.store, inputs.config, inputs.output_dir, inputs.upload_checkpoints
    if config.distributed.world_size > 1:
        from worker.distributed_launch import run_distributed

        return run_distributed(writer, settings, config, output_dir, upload_checkpoints=upload, device=device)

    from remix_engine.trainer import Trainer  # heavy: torch and transformers

    tracking = start_tracking(writer, job, config, output_dir, settings)
    callbacks = DbCallbacks(
        writer, store, upload_checkpoints=upload, devices=config.distributed.num_processes, tracking=tracking
    )
    outcome = "failed"
    try:
        trainer = Trainer(config, output_dir, callbacks=callbacks, device=device or pick_device())
        outcome = train_and_finish(writer, trainer, output_dir, tracking=tracking)
        return outcome
    except LeaseLost:
        outcome = "lost"  # another worker continues the job, and its run
        raise
    finally:
        if tracking is not None:
            tracking.close(RUN_STATUS_OF_OUTCOME.get(outcome, KILLED))


# A paused job's run is KILLED for now and RUNNING again when the job resumes.
RUN_STATUS_OF_OUTCOME = {
    "succeeded": FINISHED,
    "failed": FAILED,
    "cancelled": KILLED,
    "paused": KILLED,
    "lost": KILLED,
}


def train_and_finish(
    writer: JobWriter,
    trainer: Any,
    output_dir: Path,
    *,
    tracking: JobTracking | None = None,
    checkpoint: Path | None | Literal["latest"] = "latest",
) -> str:
    """Resume from the job's latest checkpoint (or `checkpoint`), train, and record the outcome (the main
    process's part).

    `trainer` reports through a `DbCallbacks` of `writer`. Used in-process and by rank 0 of a
    distributed job (worker/distributed_entry.py), whose other ranks resume from the same checkpoint.
    The job's trackers are closed before the outcome is written: their last events still belong
    to the running attempt.
    """
    if checkpoint == "latest":
        checkpoint = type(trainer).latest_checkpoint(output_dir)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    # Steps after the starting point are re-run: forget what a crashed attempt wrote for them.
    dropped = writer.prepare_resume(trainer.step)
    if checkpoint is not None or dropped:
        log.info("job %s starts at step %d (%d later metric rows discarded)", writer.job_id, trainer.step, dropped)
    result = trainer.train()
    if tracking is not None:
        tracking.close(KILLED if result.stopped else FINISHED)
    if result.stopped:
        view = writer.read_status()
        if view is not None and view.status == JobStatus.pausing.value and _pause(writer, trainer, result):
            return "paused"
        return _finish_cancelled(writer, trainer, result)
    summary = {
        "final_step": result.final_step,
        "attempts": writer.attempt,
        "accuracy_before": result.eval_before.get("accuracy"),
        "accuracy_after": result.eval_after.get("accuracy"),
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
        "last_checkpoint": _checkpoint_key_of(writer.job_id, result.last_checkpoint),
    }
    accuracy = f"{_fmt(summary['accuracy_before'])} -> {_fmt(summary['accuracy_after'])}"
    writer.finish(
        JobStatus.succeeded,
        step=result.final_step,
        summary=summary,
        event_payload=summary,
        message=f"finished {result.final_step} steps; held-out greedy accuracy {accuracy}",
    )
    return "succeeded"


def _finish_cancelled(writer: JobWriter, trainer: Any, result: TrainResult) -> str:
    last = result.last_checkpoint  # with `?checkpoint=true` the trainer saved the step reached (checkpoint_on_stop)
    summary = {
        "final_step": trainer.step,
        "attempts": writer.attempt,
        "eval_before": result.eval_before,
        "accuracy_before": result.eval_before.get("accuracy"),
        "last_checkpoint": _checkpoint_key_of(writer.job_id, last),
    }
    writer.finish(
        JobStatus.cancelled,
        step=trainer.step,
        summary=summary,
        event_payload=summary,
        message=f"cancelled after step {trainer.step}",
    )
    return "cancelled"


def _pause(writer: JobWriter, trainer: Any, result: TrainResult) -> bool:
    """End the attempt as paused at the step reached (checkpointed by `checkpoint_on_stop`); False if
    the job was cancelled after the trainer stopped for the pause."""
    last = _checkpoint_key_of(writer.job_id, result.last_checkpoint)
    paused = writer.pause(
        step=trainer.step,
        message=f"paused after step {trainer.step}",
        event_payload={"attempts": writer.attempt, "last_checkpoint": last},
    )
    if paused:
        log.info("job %s paused after step %d (checkpoint %s)", writer.job_id, trainer.step, last)
    return paused


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float | int) else "n/a"


def _checkpoint_key_of(job_id: uuid.UUID, folder: Path | None) -> str | None:
    if folder is None:
        return None
    step = step_of_checkpoint_dir(folder.name)
    return None if step is None else checkpoint_key(job_id, step)


def record_failure(writer: JobWriter, error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}"
    try:
        step = writer.read_job().current_step
        writer.finish(
            JobStatus.failed,
            step=step,
            error=message,
            message=message,
            event_payload={"error_type": type(error).__name__},
        )
    except LeaseLost:
        log.warning("job %s failed after it was re-queued; its new owner decides its fate", writer.job_id)
    except Exception:
        log.exception("could not record the failure of job %s; the reaper will pick it up", writer.job_id)
