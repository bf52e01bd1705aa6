"""Multi-node jobs (`distributed.num_nodes > 1`): the worker that claims the job hosts a c10d rendezvous,
other workers join it through `worker.join_job_node`, and the ranks of all nodes train the job as one
process would. Two real Celery workers on this machine act as two nodes (gloo); Postgres and Redis
are real; the builtin tiny model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import select
from worker_testing import job_events, job_row, send_train_job, tiny_job_config, wait_for

from service.lifecycle import claim_job, end_node, join_node, open_rendezvous, read_nodes
from service.models import Job, JobAttempt, JobMetric, JobNode
from service.settings import Settings
from worker.distributed_launch import attempt_dir, run_node
from worker.job_runner import run_job

JOB_TIMEOUT = 300
COMPARED = ("loss", "reward_mean", "accuracy", "adv_std", "fresh_samples", "replayed_samples", "response_length_fresh")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The workers' settings (start_worker's too), with the nodes meeting on the loopback address."""
    return settings.model_copy(update={"node_address": "127.0.0.1", "rendezvous_timeout_seconds": 60.0})


def two_node_config(**overrides):
    config = tiny_job_config(distributed={"num_nodes": 2, "num_processes": 1}, **overrides)
    config["data"]["eval_size"] = 16
    return config


def _nodes(sessions, job_id) -> list[JobNode]:
    with sessions() as session:
        return list(
            session.scalars(select(JobNode).where(JobNode.job_id == job_id).order_by(JobNode.attempt, JobNode.node))
        )


def _ended_last_node(sessions, job_id) -> JobNode:
    """The newest node row once it records how its ranks ended (it may finish after rank 0 ends the job)."""
    return wait_for(
        lambda: (node := _nodes(sessions, job_id)[-1]).ended_at is not None and node,
        timeout=60,
        what="the joined node to record the end of its ranks",
    )


def _metrics(sessions, job_id) -> dict[int, dict]:
    with sessions() as session:
        rows = session.execute(select(JobMetric.step, JobMetric.metrics).where(JobMetric.job_id == job_id)).all()
    return {int(step): metrics for step, metrics in rows}


def _weights(settings: Settings, job_id, step: int) -> dict:
    folder = Path(settings.artifacts_dir) / "jobs" / str(job_id) / "checkpoints" / f"step-{step:06d}"
    return load_file(folder / "model.safetensors")


def _rank_parents(settings: Settings, job_id, attempt: int = 1) -> dict[int, int]:
    """global rank -> the pid of the torchrun that started it."""
    folder = attempt_dir(Path(settings.artifacts_dir) / "jobs" / str(job_id), attempt)
    return {int(p.stem.removeprefix("rank-")): int(p.read_text().split()[1]) for p in folder.glob("rank-*.pid")}


def _finished(sessions, job_id):
    return lambda: (row := job_row(sessions, job_id)).status in {"succeeded", "failed", "cancelled"} and row


@pytest.mark.slow
def test_two_node_job_trains_like_one_process(sessions, make_job, settings, start_worker, monkeypatch):
    # given a job on two nodes of one process each, sent to two real workers
    total = 3
    job = make_job(config=two_node_config(total_steps=total, checkpoint_every=3))
    first, second = start_worker("node-a"), start_worker("node-b")
    send_train_job(settings, job)

    # when they have run it
    done = wait_for(
        _finished(sessions, job.id),
        timeout=JOB_TIMEOUT,
        what="the two-node job to finish",
        on_timeout=lambda: first.log_text()[-3000:] + second.log_text()[-3000:],
    )

    # then it succeeded in one attempt, with one metric row per step written by rank 0 alone
    assert done.status == "succeeded", f"{done.error}\n{first.log_text()[-3000:]}\n{second.log_text()[-3000:]}"
    assert (done.current_step, done.attempts) == (total, 1)
    metrics = _metrics(sessions, job.id)
    assert sorted(metrics) == [1, 2, 3]
    announced = [e.payload for e in job_events(sessions, job.id) if e.kind == "distributed"]
    assert announced == [
        {"world_size": 2, "num_nodes": 2, "strategy": "ddp", "backend": "gloo", "device": "cpu", "attempt": 1}
    ]

    # and two workers each ran a node: one torchrun per node, and the joined node recorded a clean end
    nodes = _nodes(sessions, job.id)
    assert [(n.attempt, n.node, n.num_nodes) for n in nodes] == [(1, 0, 2), (1, 1, 2)]
    assert nodes[0].worker_id != nodes[1].worker_id
    assert nodes[0].rendezvous_endpoint.startswith("127.0.0.1:") and nodes[0].resume_step is None
    joined = _ended_last_node(sessions, job.id)
    assert (joined.exit_code, joined.error) == (0, None)
    parents = _rank_parents(settings, job.id)
    assert sorted(parents) == [0, 1] and parents[0] != parents[1]

    # and the same job on one process, in this process, reaches the same losses and weights
    single_config = tiny_job_config(total_steps=total, checkpoint_every=3)
    single_config["data"]["eval_size"] = 16
    single = make_job(config=single_config)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert run_job(str(single.id), settings=settings, sessions=sessions, device="cpu") == "succeeded"
    expected = _metrics(sessions, single.id)
    for step in range(1, total + 1):
        for key in COMPARED:
            assert metrics[step][key] == pytest.approx(expected[step][key], abs=1e-5), (step, key)
    want, got = _weights(settings, single.id, total), _weights(settings, job.id, total)
    assert sorted(got) == sorted(want)
    import torch

    for name, value in want.items():
        torch.testing.assert_close(got[name], value, atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
def test_a_lost_node_makes_the_job_resume_from_its_last_checkpoint(sessions, make_job, settings, start_worker):
    # given a two-node job training past a checkpoint: node 0 on `host`, node 1 on `joiner`
    total = 12
    job = make_job(config=two_node_config(total_steps=total, checkpoint_every=2))
    host = start_worker("host")
    send_train_job(settings, job)
    wait_for(lambda: len(_nodes(sessions, job.id)) == 1, timeout=60, what="node 0 to open the rendezvous")
    joiner = start_worker("joiner")  # the only free worker: it takes the join task

    def checkpointed_mid_job() -> bool:
        row = job_row(sessions, job.id)
        return row.current_step >= 3 and row.status == "running"

    wait_for(
        checkpointed_mid_job,
        timeout=JOB_TIMEOUT,
        what="training past the checkpoint of step 2",
        interval=0.05,
        on_timeout=lambda: host.log_text()[-3000:] + joiner.log_text()[-3000:],
    )

    # when the joined node's worker dies at once (its ranks with it)
    joiner.kill()
    killed_at = job_row(sessions, job.id).current_step
    assert killed_at < total, "the job finished before the node could be killed"

    # then node 0 notices the silent node, ends the attempt as `node_lost` and the job is re-queued;
    # the host takes it again and a new worker joins as node 1 of attempt 2
    wait_for(
        lambda: job_row(sessions, job.id).attempts == 2, timeout=60, what="a second attempt", on_timeout=host.log_text
    )
    replacement = start_worker("replacement")
    done = wait_for(
        _finished(sessions, job.id),
        timeout=JOB_TIMEOUT,
        what="the resumed job to finish",
        on_timeout=lambda: host.log_text()[-3000:] + replacement.log_text()[-3000:],
    )
    assert done.status == "succeeded", f"{done.error}\n{host.log_text()[-4000:]}"
    assert done.attempts == 2
    assert sorted(_metrics(sessions, job.id)) == list(range(1, total + 1))  # none lost or duplicated
    with sessions() as session:
        attempts = session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.attempt)
        ).all()
    assert [a.outcome for a in attempts] == ["node_lost", "succeeded"]
    assert "node 1" in attempts[0].error and "stopped responding" in attempts[0].error
    assert 2 <= attempts[1].resumed_from_step <= killed_at
    events = job_events(sessions, job.id)
    lost = [e for e in events if e.kind == "node_lost"]
    assert len(lost) == 1 and lost[0].payload["lost_nodes"] == [1]
    assert "requeued" in [e.kind for e in events] and "resumed" in [e.kind for e in events]
    nodes = _nodes(sessions, job.id)
    second = [n for n in nodes if n.attempt == 2]
    assert [n.node for n in second] == [0, 1]
    assert second[0].resume_step == attempts[1].resumed_from_step  # every node started from node 0's choice
    rejoined = _ended_last_node(sessions, job.id)
    assert (rejoined.attempt, rejoined.exit_code) == (2, 0)


@pytest.mark.slow
def test_a_job_whose_nodes_never_gather_fails_clearly(sessions, make_job, settings):
    # no second worker is running: node 0 waits for the rendezvous, then gives up
    impatient = settings.model_copy(update={"rendezvous_timeout_seconds": 5.0})
    job = make_job(config=two_node_config())

    outcome = run_job(str(job.id), settings=impatient, sessions=sessions, device="cpu")

    row = job_row(sessions, job.id)
    assert outcome == "failed" and row.status == "failed"
    assert "distributed.num_nodes=2: only 1 of 2 nodes joined within 5s" in row.error
    assert "start more workers on the 'gpu' queue" in row.error


@pytest.mark.slow
def test_a_node_that_cannot_start_its_ranks_fails_the_job_with_its_error(sessions, make_job, settings):
    # given node 0 of a two-node job waiting in its rendezvous (run in a thread of this process)
    job = make_job(config=two_node_config())
    outcomes: list[str] = []
    host = threading.Thread(target=lambda: outcomes.append(run_job(str(job.id), settings=settings, sessions=sessions)))
    host.start()
    wait_for(lambda: len(_nodes(sessions, job.id)) == 1, timeout=60, what="node 0 to open the rendezvous")

    # when the joining worker cannot run the node (it asks for a GPU it does not have)
    assert (
        run_node(str(job.id), 1, 1, settings=settings, sessions=sessions, worker_id="gpu-less", device="cuda")
        == "failed"
    )

    # then node 0 stops waiting for it and the job fails with the node's own error, well before the rendezvous times out
    host.join(timeout=45)
    assert not host.is_alive() and outcomes == ["failed"]
    row = job_row(sessions, job.id)
    assert row.status == "failed"
    assert row.error.startswith(
        "DistributedTrainingError: the 2 training processes on 2 nodes stopped before finishing"
    )
    assert "node 1: DistributedTrainingError: distributed.num_processes=1 needs one GPU per process" in row.error
    assert _nodes(sessions, job.id)[1].exit_code == -1, row.error


def test_a_node_is_taken_once_and_only_while_its_attempt_runs(sessions, make_job, settings):
    job = make_job(config=two_node_config())
    claim = claim_job(sessions, job.id, worker_id="host-1")
    assert claim is not None
    args = {"worker_id": "host-1", "num_nodes": 2, "endpoint": "127.0.0.1:29999", "resume_step": 4}
    assert open_rendezvous(sessions, job.id, claim.attempt, **args)

    # a join task for a node the job does not have, or for another attempt, takes nothing
    assert join_node(sessions, job.id, claim.attempt, 2, worker_id="w") is None
    assert join_node(sessions, job.id, claim.attempt + 1, 1, worker_id="w") is None
    # the first taker of node 1 gets where to meet and the step to resume from; a duplicate gets nothing
    launch = join_node(sessions, job.id, claim.attempt, 1, worker_id="joiner-1")
    assert launch is not None
    assert (launch.node, launch.num_nodes, launch.rendezvous_endpoint, launch.resume_step) == (
        1,
        2,
        "127.0.0.1:29999",
        4,
    )
    assert join_node(sessions, job.id, claim.attempt, 1, worker_id="joiner-2") is None
    assert run_node(str(job.id), claim.attempt, 1, settings=settings, sessions=sessions, worker_id="j3") == "skipped"

    end_node(sessions, job.id, claim.attempt, 1, exit_code=1, error="rank 1: ValueError: boom")
    end_node(sessions, job.id, claim.attempt, 1, exit_code=0, error=None)  # the first end recorded stays
    views = read_nodes(sessions, job.id, claim.attempt)
    assert [(v.node, v.worker_id, v.ended, v.exit_code, v.error) for v in views] == [
        (0, "host-1", False, None, None),
        (1, "joiner-1", True, 1, "rank 1: ValueError: boom"),
    ]

    # once the attempt is over, no node can join it
    with sessions.begin() as session:
        session.get_one(Job, job.id).status = "failed"
    assert not open_rendezvous(sessions, job.id, claim.attempt, **args)
    with sessions.begin() as session:
        session.query(JobNode).filter(JobNode.node == 1).delete()
    assert join_node(sessions, job.id, claim.attempt, 1, worker_id="late") is None
