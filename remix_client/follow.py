"""Live progress of a job in the terminal: a rich progress bar fed by the job's event stream.

The bar shows step/total, reward, accuracy, the ReMix phase and an ETA; lifecycle events are
printed above it. It returns the job as it ended, for the caller to choose an exit status.
"""

from __future__ import annotations

import uuid
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from remix_client.client import RemixClient
from remix_client.models import Job, StreamEnd, StreamEvent, StreamMetric

QUIET_EVENTS = frozenset({"samples"})  # per-step sample completions: too chatty for a terminal


def metric_summary(metrics: dict[str, Any]) -> str:
    """'reward 0.512  acc 0.480  phase mix' from a step's metrics (missing ones are left out)."""
    parts = []
    for key, label in (("reward_mean", "reward"), ("accuracy", "acc")):
        value = metrics.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:.3f}")
    if metrics.get("phase"):
        parts.append(f"phase {metrics['phase']}")
    return "  ".join(parts)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def follow_job(client: RemixClient, job_id: str | uuid.UUID, console: Console) -> Job:
    """Show the job's progress until it ends; returns the final job."""
    job = client.get_job(job_id)
    with _progress(console) as progress:
        task = progress.add_task(
            f"job {str(job.id)[:8]}",
            total=job.total_steps or None,
            completed=job.current_step,
            info=job.status,
        )
        for item in client.stream(job.id):
            if isinstance(item, StreamMetric):
                progress.update(task, completed=item.metric.step, info=metric_summary(item.metric.metrics))
            elif isinstance(item, StreamEvent) and item.event.kind not in QUIET_EVENTS:
                event = item.event
                progress.console.print(f"step {event.step}  {event.kind}: {event.message}", markup=False)
            elif isinstance(item, StreamEnd):
                break
    job = client.get_job(job.id)
    line = f"job {job.id} {job.status} at step {job.current_step}/{job.total_steps}"
    if job.error:
        line += f": {job.error}"
    console.print(line, markup=False)
    return job
