"""The job lifecycle: every state change of a job, one implementation each.

The API (routes, service/job_submission.py), the worker (worker/job_runner.py and the rank 0 of a
distributed job, worker/distributed_entry.py) and the reaper (worker/reaper.py) all change a job's
state through this package, and so do the tests; service/repositories only reads (and writes
tenants, keys, datasets and webhook endpoints). It imports SQLAlchemy, the models and the webhook
event recorder (service/webhooks/events.py) only, never torch or worker/, so the API process stays light.

    transition                        status change / effect                               caller   module
    create_job                        -> queued, with its 'queued' event                   API      creation
    dispatch_job                      reserves a task id, sends the task once              API      creation
    request_cancel                    queued|paused -> cancelled,                          API      cancel
                                      running|pausing -> cancelling
    request_pause                     queued -> paused, running -> pausing                 API      pause
    request_resume                    paused -> queued (then dispatch_job)                 API      pause
    replace_job_metadata              the job's metadata (any status)                      API      metadata
    claim_job                         queued -> running, a JobAttempt, a 'started' event   worker   attempt
                                      (not past the tenant's max_running_jobs: stays queued)
    JobWriter.heartbeat               renews the attempt's lease (heartbeat_at)            worker   attempt
    JobWriter.record_step             a step's metrics and usage (upserts by step)         worker   attempt
    JobWriter.add_event               an event (per-step kinds upsert by kind and step)    worker   attempt
    JobWriter.register_checkpoint     a checkpoint row (upsert), rows of pruned ones gone  worker   attempt
    JobWriter.forget_checkpoint       the row of a checkpoint the trainer pruned           worker   attempt
    JobWriter.prepare_resume          drops metrics after the resume step                  worker   attempt
    JobWriter.finish                  running|cancelling|pausing -> succeeded|failed|      worker   attempt
                                      cancelled
    JobWriter.pause                   pausing -> paused (the attempt ends)                 worker   attempt
    reap_job                          stale running|cancelling|pausing -> queued|          reaper   requeue
                                      cancelled|paused|failed
    dispatch_requeued                 re-sends a re-queued job's task (or reverts it)      reaper   requeue
    requeue_after_node_loss           a multi-node attempt that lost a node: as reap_job   worker   requeue
    open_rendezvous, join_node,       the nodes of a multi-node attempt (job_nodes rows)   worker   nodes
    node_heartbeat, end_node

API-side transitions run in the request's session and commit. Worker and reaper transitions take a
sessionmaker, run one short transaction each and retry transient database errors (`retry_db`);
the attempt's writes are guarded by its lease and raise `LeaseLost` once the job belongs to another
attempt.

Webhook events are recorded in the transaction of the change they report: job.cancelled by
request_cancel (a queued or paused job), job.succeeded/failed/cancelled by JobWriter.finish and by
reap_job, checkpoint.created by JobWriter.register_checkpoint, and job.paused, once per pause, by
request_pause (a queued job), JobWriter.pause and reap_job (a pausing job whose worker died).
"""

from service.lifecycle.attempt import (
    PER_STEP_EVENT_KINDS,
    Claim,
    JobStatusView,
    JobWriter,
    LeaseLost,
    claim_job,
)
from service.lifecycle.cancel import CancelOutcome, request_cancel
from service.lifecycle.creation import DispatchFailed, IdempotencyKeyReused, NewJob, create_job, dispatch_job
from service.lifecycle.metadata import replace_job_metadata
from service.lifecycle.nodes import (
    NodeLaunch,
    NodeView,
    end_node,
    join_node,
    node_heartbeat,
    open_rendezvous,
    read_nodes,
)
from service.lifecycle.pause import PauseOutcome, ResumeOutcome, request_pause, request_resume
from service.lifecycle.plumbing import ACTIVE_STATUSES, is_transient, jsonable, retry_db
from service.lifecycle.requeue import Enqueue, dispatch_requeued, find_stale_jobs, reap_job, requeue_after_node_loss
from service.lifecycle.running_limit import RunningLimitReached

__all__ = [
    "ACTIVE_STATUSES",
    "PER_STEP_EVENT_KINDS",
    "CancelOutcome",
    "Claim",
    "DispatchFailed",
    "Enqueue",
    "IdempotencyKeyReused",
    "JobStatusView",
    "JobWriter",
    "LeaseLost",
    "NewJob",
    "NodeLaunch",
    "NodeView",
    "PauseOutcome",
    "ResumeOutcome",
    "RunningLimitReached",
    "claim_job",
    "create_job",
    "dispatch_job",
    "dispatch_requeued",
    "end_node",
    "find_stale_jobs",
    "is_transient",
    "join_node",
    "jsonable",
    "node_heartbeat",
    "open_rendezvous",
    "read_nodes",
    "reap_job",
    "replace_job_metadata",
    "requeue_after_node_loss",
    "request_cancel",
    "request_pause",
    "request_resume",
    "retry_db",
]
