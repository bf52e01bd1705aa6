"""Jobs mirrored to experiment trackers (worker/tracking.py): a real MLflow SQL store read back with
MlflowClient, W&B offline runs read back from their .wandb files, a tracker that is down or hangs,
and a resumed job continuing the same run without logging a step twice."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select
from wandb.proto import wandb_internal_pb2
from worker_testing import free_port, tiny_job_config

from remix_engine.config import TrainConfig
from service.artifacts import checkpoint_key
from service.models import JobEvent, JobMetric
from service.settings import Settings
from worker.job_runner import run_job
from worker.tracking import STATE_FILE, JobTracking

WANDB_BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf Records in 32 KiB blocks
WANDB_RECORD_HEADER = 7  # crc32, length, record type
WANDB_FULL, WANDB_LAST = 1, 4


@pytest.fixture(autouse=True)
def _quiet_offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # A tracker that is down fails fast here; production keeps MLflow's own retry policy.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tracking_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"tracking_allow_local": True})


def wandb_records(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    records, pending, pos = [], b"", WANDB_RECORD_HEADER  # the file header fills a record header's room
    while pos + WANDB_RECORD_HEADER <= len(data):
        if WANDB_BLOCK - pos % WANDB_BLOCK < WANDB_RECORD_HEADER:
            pos += WANDB_BLOCK - pos % WANDB_BLOCK  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + WANDB_RECORD_HEADER])
        pos += WANDB_RECORD_HEADER
        pending += data[pos : pos + length]
        pos += length
        if kind in (WANDB_FULL, WANDB_LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(output_dir: Path) -> list[dict[str, str]]:
    """Every history row of every offline run file under the job's folder, in the order written."""
    rows = []
    for path in sorted((output_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return rows


def wandb_exit_codes(output_dir: Path) -> list[int]:
    return [
        record.exit.exit_code
        for path in sorted((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        for record in wandb_records(path)
        if record.WhichOneof("record_type") == "exit"
    ]


def tracking_events(sessions, job_id) -> list[JobEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "tracking").order_by(JobEvent.id)
            )
        )


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """An http URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def _tracking(integrations: list[dict], output_dir: Path, events: list, **options: Any) -> JobTracking:
    config = TrainConfig.model_validate({"integrations": integrations})
    return JobTracking(
        config.integrations,
        job_id="job-1",
        tenant_id="tenant-1",
        attempt=options.pop("attempt", 1),
        output_dir=output_dir,
        report=lambda message, payload: events.append((message, dict(payload))),
        **{"allow_local": True, **options},
    )


# ----------------------------------------------------------------------------- whole jobs


@pytest.mark.slow
def test_a_trained_job_is_mirrored_to_mlflow_and_wandb(sessions, make_job, tracking_settings, mlflow_uri):
    # given a job reporting to an MLflow store and to an offline W&B run
    integrations = [
        {"type": "mlflow", "tracking_uri": mlflow_uri, "experiment_name": "arith", "tags": {"team": "rl"}},
        {"type": "wandb", "project": "arith", "mode": "offline"},
    ]
    job = make_job(config=tiny_job_config(total_steps=3, checkpoint_every=3, integrations=integrations))

    # when a worker trains it
    assert run_job(str(job.id), settings=tracking_settings, sessions=sessions, device="cpu") == "succeeded"

    # then each tracker has one run, named in a tracking event
    with sessions() as session:
        rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.step)).all()
    assert [row.step for row in rows] == [1, 2, 3]
    events = tracking_events(sessions, job.id)
    assert [(e.payload["integration"], e.payload["type"]) for e in events] == [(0, "mlflow"), (1, "wandb")]
    run_id = events[0].payload["run_id"]
    with sessions() as session:
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id).order_by(JobEvent.id)).all()
    assert kinds[-1] == "succeeded"  # the trackers were closed before the job ended

    # MLflow: the config as params, the job's tags, every step's metrics, the checkpoint, FINISHED
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "arith"
    assert run.data.params["total_steps"] == "3"
    assert run.data.params["rollout.group_size"] == "4"
    assert run.data.params["integrations.0.tracking_uri"] == mlflow_uri
    assert run.data.params["checkpoint.step_3"] == checkpoint_key(job.id, 3)
    assert run.data.tags["remix.job_id"] == str(job.id)
    assert run.data.tags["remix.tenant_id"] == str(job.tenant_id)
    assert run.data.tags["team"] == "rl"
    assert run.data.tags["remix.last_checkpoint_step"] == "3"
    every_step = sorted(
        key
        for key, value in rows[0].metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and all(key in r.metrics for r in rows)
    )
    assert len(every_step) >= 3, rows[0].metrics
    for key in every_step:
        expected = [(row.step, pytest.approx(float(row.metrics[key]))) for row in rows]
        assert metric_history(client, run_id, key) == expected, key

    # W&B: the offline run under the job's folder has the same rows by step, and ended with exit code 0
    output_dir = Path(tracking_settings.artifacts_dir) / "jobs" / str(job.id)
    history = wandb_history(output_dir)
    assert [int(row["_step"]) for row in history] == [1, 2, 3]
    key = every_step[0]
    assert [float(row[key]) for row in history] == [pytest.approx(float(row.metrics[key])) for row in rows]
    assert wandb_exit_codes(output_dir) == [0]


@pytest.mark.slow
def test_a_tracking_server_that_is_down_does_not_fail_the_job(sessions, make_job, tracking_settings):
    # given a job whose MLflow server refuses connections
    down = f"http://127.0.0.1:{free_port()}"
    job = make_job(config=tiny_job_config(total_steps=2, integrations=[{"type": "mlflow", "tracking_uri": down}]))

    # when a worker trains it
    started = time.monotonic()
    outcome = run_job(str(job.id), settings=tracking_settings, sessions=sessions, device="cpu")

    # then it succeeds, with one warning event saying the tracker could not be reached
    assert outcome == "succeeded"
    events = tracking_events(sessions, job.id)
    assert len(events) == 1, [e.message for e in events]
    assert events[0].payload["warning"] is True
    assert "integrations.0 (mlflow)" in events[0].message and "training continues" in events[0].message
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_rank_zero_of_a_two_process_job_tracks_it_once(sessions, make_job, tracking_settings, mlflow_uri):
    # given a job trained by two processes, reporting to MLflow
    config = tiny_job_config(
        total_steps=2,
        checkpoint_every=2,
        distributed={"num_processes": 2},
        integrations=[{"type": "mlflow", "tracking_uri": mlflow_uri}],
    )
    config["data"]["eval_size"] = 16
    job = make_job(config=config)

    # when a worker trains it under torchrun
    assert run_job(str(job.id), settings=tracking_settings, sessions=sessions, device="cpu") == "succeeded"

    # then one run has each step once, and ended FINISHED
    events = tracking_events(sessions, job.id)
    assert [e.payload["type"] for e in events] == ["mlflow"], [e.message for e in events]
    client = MlflowClient(mlflow_uri)
    run = client.get_run(events[0].payload["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["distributed.num_processes"] == "2"
    assert [step for step, _ in metric_history(client, run.info.run_id, "fresh_samples")] == [1, 2]


# ----------------------------------------------------------------------------- the tracking thread


def test_a_resumed_job_continues_its_run_without_logging_a_step_twice(tmp_path: Path, mlflow_uri: str):
    # given an attempt that logged steps 1-4, then crashed (its checkpoint was step 2)
    integrations = [{"type": "mlflow", "tracking_uri": mlflow_uri}, {"type": "wandb", "project": "p"}]
    events: list = []
    first = _tracking(integrations, tmp_path, events).start({"total_steps": 6})
    for step in range(1, 5):
        first.step(step, {"loss": float(step), "phase": "first"})
    first.close("FAILED")
    run_id = events[0][1]["run_id"]
    assert MlflowClient(mlflow_uri).get_run(run_id).info.status == "FAILED"

    # when the next attempt re-runs steps 3-6 from that checkpoint
    second = _tracking(integrations, tmp_path, events, attempt=2).start({"total_steps": 6})
    for step in range(3, 7):
        second.step(step, {"loss": 10.0 * step})
    second.close("FINISHED")

    # then the same runs continue: steps 1-4 as first logged, 5-6 from the resumed attempt, each once
    client = MlflowClient(mlflow_uri)
    assert [m for m, _ in events] == [
        "integrations.0 (mlflow) run " + run_id,
        f"integrations.1 (wandb) run {events[1][1]['run_id']}",
    ]
    assert metric_history(client, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    assert [int(row["_step"]) for row in wandb_history(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_a_run_named_only_by_an_event_is_continued_from_the_trackers_own_history(tmp_path: Path, mlflow_uri: str):
    # given a run that logged steps 1-3, and an output folder that lost tracking.json (another worker)
    integrations = [{"type": "mlflow", "tracking_uri": mlflow_uri}]
    events: list = []
    first = _tracking(integrations, tmp_path / "a", events).start({})
    for step in (1, 2, 3):
        first.step(step, {"loss": float(step)})
    first.close("KILLED")
    run_id = events[0][1]["run_id"]

    # when an attempt elsewhere knows the run only from the job's tracking event
    second = _tracking(integrations, tmp_path / "b", events, known_runs={0: run_id}).start({})
    for step in (2, 3, 4):
        second.step(step, {"loss": 100.0 + step})
    second.close("FINISHED")

    # then MLflow's own history tells which steps it already has
    assert metric_history(MlflowClient(mlflow_uri), run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0)]
    assert (tmp_path / "b" / STATE_FILE).is_file()


def test_keys_mlflow_would_refuse_are_renamed_instead_of_losing_the_batch(tmp_path: Path, mlflow_uri: str):
    # given metrics and a tag whose names hold characters MLflow refuses
    events: list = []
    integrations = [{"type": "mlflow", "tracking_uri": mlflow_uri, "tags": {"owner@lab": "ana"}}]
    tracking = _tracking(integrations, tmp_path, events).start({"eval_sets": [{"name": "pass@k"}]})

    # when a step reports them next to plain ones, with a string and a NaN that trackers cannot plot
    tracking.step(1, {"eval_x/pass@1": 0.5, "loss": 2.0, "note": "text", "kl": float("nan"), "done": True})
    tracking.close("FINISHED")

    # then every number arrived, under MLflow-safe names, without a warning
    assert [message for message, _ in events] == [f"integrations.0 (mlflow) run {events[0][1]['run_id']}"]
    run = MlflowClient(mlflow_uri).get_run(events[0][1]["run_id"])
    assert run.data.metrics == {"eval_x/pass_1": 0.5, "loss": 2.0}
    assert run.data.tags["owner_lab"] == "ana"
    assert run.data.params["eval_sets.0.name"] == "pass@k"


def test_a_hanging_tracker_never_holds_training_up(tmp_path: Path, hanging_server: str):
    # given a tracker whose server never answers, and room for 10 queued updates
    events: list = []
    tracking = _tracking(
        [{"type": "mlflow", "tracking_uri": hanging_server}], tmp_path, events, queue_size=10, close_seconds=0.5
    )

    # when 500 steps report metrics
    started = time.monotonic()
    tracking.start({"total_steps": 500})
    for step in range(1, 501):
        tracking.step(step, {"loss": 1.0})
    reported = time.monotonic() - started
    tracking.close("FINISHED")
    closed = time.monotonic() - started

    # then no step waited, the overflow was dropped and counted, and closing gave up after close_seconds
    assert reported < 0.5
    assert closed < reported + 3
    assert tracking.dropped >= 490
    assert events == [
        (f"tracking dropped {tracking.dropped} updates: the trackers could not keep up", {"dropped": tracking.dropped})
    ]


def test_a_worker_refuses_a_local_store_it_does_not_allow(tmp_path: Path):
    # given a job naming a local MLflow store, on a worker without REMIX_TRACKING_ALLOW_LOCAL
    store = tmp_path / "mlflow.db"
    events: list = []
    tracking = _tracking(
        [{"type": "mlflow", "tracking_uri": f"sqlite:///{store}"}], tmp_path, events, allow_local=False
    )

    # when it reports
    tracking.start({})
    tracking.step(1, {"loss": 1.0})
    tracking.close("FINISHED")

    # then nothing was written there, and one warning event says why
    assert not store.exists()
    assert len(events) == 1 and "REMIX_TRACKING_ALLOW_LOCAL" in events[0][0], events
    assert events[0][1]["warning"] is True
