"""Replacing a job's metadata at the tenant's request (API side, in the request session; commits).

Metadata is the tenant's own labels, not part of the job's state: it can be replaced in any status,
and the worker never reads or writes it. The UPDATE touches that column only, so it cannot overwrite
a state change a worker commits meanwhile.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.models import Job


def replace_job_metadata(session: Session, job: Job, metadata: dict[str, str]) -> Job:
    """Set the job's metadata to `metadata` (commits); returns the job as now stored."""
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(job_metadata=dict(metadata))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(job)
    return job
