"""The nodes of a multi-node attempt (`distributed.num_nodes > 1`): where they meet, who joined, how each ended.

The worker that claimed the job is node 0. Before it starts its ranks it records, with
`open_rendezvous`, the c10d endpoint it hosts and the checkpoint step every node resumes from; then it
sends one `worker.join_job_node(job_id, attempt, node)` task per other node. A worker that receives one
calls `join_node`, which inserts that node's row only while the job still runs under that attempt
and no worker has taken the node yet, so a duplicate or late delivery (or one for an attempt that has
ended) is a no-op. A joined node renews its `heartbeat_at` (`node_heartbeat`, which also says whether
its attempt still owns the job) and records how its ranks ended (`end_node`). Node 0 reads them back
(`read_nodes`) to tell a node that was lost (no end recorded, heartbeat stale) from ranks that failed.

Every function runs one short transaction, retried through transient database errors (`retry_db`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.lifecycle.plumbing import ACTIVE_STATUSES, retry_db, rowcount
from service.models import Job, JobNode, utcnow


@dataclass(frozen=True)
class NodeLaunch:
    """What a joining node needs to start its ranks: where to meet, and the step to resume from."""

    job_id: uuid.UUID
    attempt: int
    node: int
    num_nodes: int
    rendezvous_endpoint: str
    resume_step: int | None


@dataclass(frozen=True)
class NodeView:
    node: int
    worker_id: str
    heartbeat_at: datetime
    exit_code: int | None
    error: str | None
    ended: bool

    def silent_for(self, now: datetime) -> float:
        """Seconds since the node's last heartbeat (SQLite hands datetimes back without their UTC zone)."""
        beat = self.heartbeat_at if self.heartbeat_at.tzinfo else self.heartbeat_at.replace(tzinfo=UTC)
        return (now - beat).total_seconds()


def _owned(job_id: uuid.UUID, attempt: int) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.attempts == attempt, Job.status.in_(ACTIVE_STATUSES))


def open_rendezvous(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    attempt: int,
    *,
    worker_id: str,
    num_nodes: int,
    endpoint: str,
    resume_step: int | None,
    retry_window: float = 0.0,
) -> bool:
    """Record node 0 of the attempt and where the others meet it; False if the attempt no longer owns the job."""

    def operation() -> bool:
        with sessions.begin() as session:
            if session.scalar(select(Job.id).where(_owned(job_id, attempt))) is None:
                return False
            now = utcnow()
            session.add(
                JobNode(
                    job_id=job_id,
                    attempt=attempt,
                    node=0,
                    num_nodes=num_nodes,
                    worker_id=worker_id,
                    rendezvous_endpoint=endpoint,
                    resume_step=resume_step,
                    heartbeat_at=now,
                    started_at=now,
                )
            )
            return True

    return retry_db(operation, what=f"rendezvous of job {job_id}", window=retry_window)


def join_node(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    attempt: int,
    node: int,
    *,
    worker_id: str,
    retry_window: float = 0.0,
) -> NodeLaunch | None:
    """Take node `node` of the attempt for this worker; None if the attempt is over or the node is taken."""

    def operation() -> NodeLaunch | None:
        try:
            with sessions.begin() as session:
                if session.scalar(select(Job.id).where(_owned(job_id, attempt))) is None:
                    return None
                host = session.scalar(
                    select(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.node == 0)
                )
                if host is None or host.rendezvous_endpoint is None or not 0 < node < host.num_nodes:
                    return None
                now = utcnow()
                session.add(
                    JobNode(
                        job_id=job_id,
                        attempt=attempt,
                        node=node,
                        num_nodes=host.num_nodes,
                        worker_id=worker_id,
                        heartbeat_at=now,
                        started_at=now,
                    )
                )
                session.flush()  # a second taker of the node fails here, on the unique constraint
                return NodeLaunch(job_id, attempt, node, host.num_nodes, host.rendezvous_endpoint, host.resume_step)
        except IntegrityError:
            return None

    return retry_db(operation, what=f"joining node {node} of job {job_id}", window=retry_window)


def node_heartbeat(
    sessions: sessionmaker[Session], job_id: uuid.UUID, attempt: int, node: int, *, retry_window: float = 0.0
) -> bool:
    """Renew the node's heartbeat; returns whether its attempt still owns the job."""

    def operation() -> bool:
        with sessions.begin() as session:
            session.execute(
                update(JobNode)
                .where(JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.node == node)
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return session.scalar(select(Job.id).where(_owned(job_id, attempt))) is not None

    return retry_db(operation, what=f"heartbeat of node {node} of job {job_id}", window=retry_window)


def end_node(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    attempt: int,
    node: int,
    *,
    exit_code: int,
    error: str | None,
    retry_window: float = 0.0,
) -> None:
    """Record how the node's ranks ended (torchrun's exit code and the first error they reported)."""

    def operation() -> int:
        with sessions.begin() as session:
            return rowcount(
                session.execute(
                    update(JobNode)
                    .where(
                        JobNode.job_id == job_id,
                        JobNode.attempt == attempt,
                        JobNode.node == node,
                        JobNode.ended_at.is_(None),
                    )
                    .values(exit_code=exit_code, error=error, ended_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            )

    retry_db(operation, what=f"end of node {node} of job {job_id}", window=retry_window)


def read_nodes(
    sessions: sessionmaker[Session], job_id: uuid.UUID, attempt: int, *, retry_window: float = 0.0
) -> list[NodeView]:
    """The attempt's nodes that have joined (node 0 first)."""

    def operation() -> list[NodeView]:
        with sessions() as session:
            rows = session.scalars(
                select(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt).order_by(JobNode.node)
            ).all()
            return [
                NodeView(row.node, row.worker_id, row.heartbeat_at, row.exit_code, row.error, row.ended_at is not None)
                for row in rows
            ]

    return retry_db(operation, what=f"nodes of job {job_id}", window=retry_window)
