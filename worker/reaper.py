"""The stale-job reaper: recovers jobs whose worker died (killed, OOM, lost machine).

A running worker renews `heartbeat_at` every `heartbeat_seconds`. Every run of the reaper looks
for jobs in running/cancelling/pausing whose heartbeat is older than `stale_after_seconds` and hands
each to `service.lifecycle.reap_job`, which records `stalled` and then cancels it (if it was being
cancelled), pauses it (if it was being paused), re-queues it (while the attempts not ended by a pause
are fewer than max_attempts) or fails it ("gave up after N attempts");
a re-queued job's task is sent again by `service.lifecycle.dispatch_requeued`. Those transitions
are conditional UPDATEs that re-check the staleness, so two reapers (the periodic one and one run at
worker start-up) never act twice on the same job.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from service.lifecycle import Enqueue, dispatch_requeued, find_stale_jobs, reap_job
from service.models import JobStatus, utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Enqueue", "reap_stale_jobs"]


def reap_stale_jobs(sessions: sessionmaker[Session], settings: Settings, enqueue: Enqueue) -> dict[str, int]:
    """Re-queue, cancel or fail every stale job; returns how many went to each status."""
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_seconds)
    with sessions() as session:
        candidates = find_stale_jobs(session, cutoff)
    counts: dict[str, int] = {}
    for job_id in candidates:
        new_status = reap_job(sessions, job_id, cutoff=cutoff, settings=settings)
        if new_status is None:
            continue
        log.warning("job %s had a stale heartbeat: now %s", job_id, new_status.value)
        counts[new_status.value] = counts.get(new_status.value, 0) + 1
        if new_status is JobStatus.queued:
            dispatch_requeued(sessions, job_id, enqueue)
    return counts
