"""The worker side of a multi-process job: launch its ranks under torchrun, watch them, read the outcome.

`run_job` claims the job once, then, for `distributed.num_processes > 1`, calls `run_distributed`,
which writes the resolved config to `<output>/launch/attempt-<n>/config.json` and starts

    python -m torch.distributed.run --standalone --nproc_per_node=N -m worker.distributed_entry \\
        <job_id> <attempt> --config ... --output ... --device cpu|cuda --launcher-pid <this pid>

in a process group of its own. Rank 0 of the entry point does what the in-process runner does
(`DbCallbacks`: metrics, events, checkpoints, cancellation; resume; the final outcome); the other
ranks never touch the database. This process keeps the job's heartbeat while the ranks run.

Outcome: the ranks' exit status is not trusted alone. Once torchrun exits, the job row says what
happened: a terminal state written by this attempt's rank 0 is the outcome; a job owned by another
attempt is "lost"; a job still running means the ranks died without recording anything (a crash,
the OOM killer, a failed rendezvous), and the job is failed with the ranks' last error lines.

No orphans: if this task is interrupted, the torchrun group is sent SIGTERM (torchrun stops its
ranks) and SIGKILL after a grace period. If this process dies abruptly (SIGKILL of the Celery
worker), each rank's watchdog notices that the launcher pid or its torchrun parent is gone and kills
torchrun's process group and its own (worker/distributed_entry.py).

Several nodes (`distributed.num_nodes > 1`): this worker is node 0. It picks the checkpoint every
node resumes from, records the c10d endpoint it hosts (service/lifecycle/nodes.py), sends one
`worker.join_job_node` task per other node and starts its own torchrun with `--nnodes`; each worker
that takes a join task runs `run_node`, which starts that node's torchrun against the same endpoint,
renews the node's heartbeat and records how its ranks ended. The ranks are numbered over all nodes, and
rank 0 (on whichever node the rendezvous put it) reports the job. If the ranks end without an outcome,
node 0 looks at the other nodes: one that stopped renewing its heartbeat without recording an end was
lost, and the attempt ends like a dead worker's (re-queued to resume from the last checkpoint, up to
max_attempts); node 0 also stops its ranks as soon as it sees a node go silent, or fail, while they
run (rather than wait in the rendezvous or a collective for a node that will not come). Fewer
nodes than asked within `rendezvous_timeout_seconds` fail the job with that message; otherwise the
job fails with the errors of every node's ranks. If node 0 itself dies, its job heartbeat stops and
the reaper re-queues the job, while the other nodes' ranks fail on their next collective and exit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from remix_engine.checkpoint_dirs import checkpoint_dir_name, step_of_checkpoint_dir
from remix_engine.config import TrainConfig
from service.lifecycle import (
    ACTIVE_STATUSES,
    JobWriter,
    NodeView,
    dispatch_requeued,
    end_node,
    join_node,
    node_heartbeat,
    open_rendezvous,
    read_nodes,
    requeue_after_node_loss,
)
from service.models import JobStatus, utcnow
from service.queue import enqueue_join_node, enqueue_train_job
from service.settings import Settings

if TYPE_CHECKING:
    from remix_engine.distributed import Rendezvous

log = logging.getLogger(__name__)

ENTRY_MODULE = "worker.distributed_entry"
LAUNCH_DIR = "launch"
RANK_ERROR_MARKER = "REMIX_RANK_ERROR "  # a rank's last words, one JSON line, picked up by the launcher
# The statuses that end an attempt, recorded by rank 0; a paused job is not finished, but its attempt is over.
ATTEMPT_OVER = {JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value, JobStatus.paused.value}
POLL_SECONDS = 0.5
TERM_GRACE_SECONDS = 45.0  # torchrun gives its ranks 30 s after SIGTERM before it SIGKILLs them
FINISH_GRACE_SECONDS = 120.0  # rank 0 finished the job: let the ranks leave the process group
LOG_TAIL_LINES = 200
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class DistributedTrainingError(RuntimeError):
    """The training processes could not be started, or died without recording an outcome."""


NODE_WATCH_SECONDS = 2.0  # how often node 0 reads the other nodes' heartbeats while its ranks run


def attempt_dir(output_dir: Path, attempt: int) -> Path:
    """Where one attempt keeps its launch files: config.json, ranks.log, rank-<r>.pid (global ranks)."""
    return output_dir / LAUNCH_DIR / f"attempt-{attempt}"


def node_dir(output_dir: Path, attempt: int, node: int) -> Path:
    """Where node `node` of a multi-node attempt keeps its config.json and ranks.log (node 0: the attempt's folder)."""
    folder = attempt_dir(output_dir, attempt)
    return folder if node == 0 else folder / f"node-{node}"


def rendezvous_run_id(job_id: uuid.UUID, attempt: int) -> str:
    """One rendezvous per attempt: a node still starting for an earlier attempt never joins a later one."""
    return f"{job_id}-attempt-{attempt}"


def newest_checkpoint_step(output_dir: Path) -> int | None:
    """The step of the newest complete checkpoint in the job's folder, the one every node resumes from."""
    from remix_engine.checkpoint import latest_checkpoint  # what Trainer.latest_checkpoint reads, without transformers

    newest = latest_checkpoint(output_dir / "checkpoints")
    return None if newest is None else step_of_checkpoint_dir(newest.name)


def checkpoint_of_step(output_dir: Path, step: int) -> Path:
    """The folder of the checkpoint of `step`; a node that does not have it cannot take part."""
    from remix_engine.checkpoint import is_complete

    folder = output_dir / "checkpoints" / checkpoint_dir_name(step)
    if not is_complete(folder):
        raise DistributedTrainingError(
            f"the checkpoint of step {step}, which the job resumes from, is not in this node's job folder: "
            "a multi-node job needs its folder on storage every node reaches (a shared filesystem or the S3 store)"
        )
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def attempt_rendezvous(
    settings: Settings, endpoint: str, job_id: uuid.UUID, attempt: int, num_nodes: int, *, host: bool
) -> Rendezvous:
    """Where the nodes of this attempt meet, as this worker's torchrun takes part (hosting it or joining)."""
    from remix_engine.distributed import Rendezvous

    return Rendezvous(
        endpoint=endpoint,
        run_id=rendezvous_run_id(job_id, attempt),
        num_nodes=num_nodes,
        host=host,
        join_timeout_s=settings.rendezvous_timeout_seconds,
        local_addr=settings.node_address,
    )


def node_address(settings: Settings) -> str:
    """The address other nodes reach this worker at."""
    return settings.node_address or socket.gethostname()


def launch_device(requested: str | None, processes: int) -> str:
    """'cuda' with at least `processes` visible GPUs (one per process), or 'cpu' (gloo processes)."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible < processes:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            raise DistributedTrainingError(
                f"distributed.num_processes={processes} needs one GPU per process, but this worker sees "
                f"{visible} (CUDA_VISIBLE_DEVICES={shown}); lower distributed.num_processes or run the "
                f"job on a worker started with at least {processes} visible GPUs"
            )
        return "cuda"
    return "cpu"


def settings_env(settings: Settings) -> dict[str, str]:
    """REMIX_* variables that recreate `settings` in a child process (which reads them from the env)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"REMIX_{name.upper()}"] = str(value)
    return env


def entry_argv(
    writer: JobWriter,
    config_path: Path,
    output_dir: Path,
    *,
    processes: int,
    device: str,
    upload_checkpoints: bool,
    rendezvous: Rendezvous | None = None,
    resume_step: int | None = None,
) -> list[str]:
    from remix_engine.distributed import torchrun_argv

    args = [
        str(writer.job_id),
        str(writer.attempt),
        "--config",
        str(config_path),
        "--output",
        str(output_dir),
        "--device",
        device,
        "--launcher-pid",
        str(os.getpid()),
    ]
    if upload_checkpoints:
        args.append("--upload-checkpoints")
    if rendezvous is not None:  # every node resumes from the step node 0 chose (-1: from the start)
        args += ["--resume-step", str(-1 if resume_step is None else resume_step)]
    return torchrun_argv(processes, ENTRY_MODULE, args, rendezvous=rendezvous)


def _rank_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_ranks(
    writer: JobWriter,
    settings: Settings,
    config: TrainConfig,
    output_dir: Path,
    folder: Path,
    *,
    device: str,
    upload_checkpoints: bool,
    label: str,
    rendezvous: Rendezvous | None = None,
    resume_step: int | None = None,
) -> RankProcesses:
    """Write the resolved config into `folder` and start this node's torchrun on it, logging to ranks.log."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.json"
    config_path.write_text(config.model_dump_json())
    processes = config.distributed.num_processes
    argv = entry_argv(
        writer,
        config_path,
        output_dir,
        processes=processes,
        device=device,
        upload_checkpoints=upload_checkpoints,
        rendezvous=rendezvous,
        resume_step=resume_step,
    )
    log.info("%s: launching %d %s processes: %s", label, processes, device, " ".join(argv))
    return RankProcesses(argv, _rank_env(settings), folder / "ranks.log", label=label)


def run_distributed(
    writer: JobWriter,
    settings: Settings,
    config: TrainConfig,
    output_dir: Path,
    *,
    upload_checkpoints: bool,
    device: str | None = None,
) -> str:
    """Train the claimed job on `num_processes` local processes (on each of `num_nodes` nodes, this one
    hosting the rendezvous); returns the outcome."""
    nodes = config.distributed.num_nodes
    device = launch_device(device, config.distributed.num_processes)
    rendezvous, resume_step, watch = None, None, None
    if nodes > 1:
        resume_step = newest_checkpoint_step(output_dir)
        endpoint = f"{node_address(settings)}:{_free_port()}"
        rendezvous = attempt_rendezvous(settings, endpoint, writer.job_id, writer.attempt, nodes, host=True)
        if not open_rendezvous(
            writer.sessions,
            writer.job_id,
            writer.attempt,
            worker_id=writer.read_job().worker_id or "",
            num_nodes=nodes,
            endpoint=endpoint,
            resume_step=resume_step,
            retry_window=writer.retry_window,
        ):
            return "lost"
        for node in range(1, nodes):
            enqueue_join_node(settings, writer.job_id, writer.attempt, node)
        watch = NodeWatch(writer.sessions, writer.job_id, writer.attempt, settings)
    ranks = start_ranks(
        writer,
        settings,
        config,
        output_dir,
        attempt_dir(output_dir, writer.attempt),
        device=device,
        upload_checkpoints=upload_checkpoints,
        label=f"job {writer.job_id}" + (f" node 0 of {nodes}" if nodes > 1 else ""),
        rendezvous=rendezvous,
        resume_step=resume_step,
    )
    try:
        returncode = _wait(ranks, writer, stop_reason=watch.stop_reason if watch else None)
    except BaseException:
        ranks.terminate()
        raise
    return _outcome(writer, returncode, ranks, config, settings, watch)


def run_node(
    job_id: str,
    attempt: int,
    node: int,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    worker_id: str,
    device: str | None = None,
) -> str:
    """Be node `node` of a multi-node attempt: join its rendezvous, run this node's ranks until they end.

    Returns skipped (the attempt is over, or another worker has the node: a duplicate or late task),
    finished (the ranks exited cleanly) or failed; how the ranks ended is recorded on the node's row."""
    from worker.job_inputs import prepare_job_inputs

    job_uuid = uuid.UUID(str(job_id))
    window = settings.worker_db_retry_seconds
    launch = join_node(sessions, job_uuid, attempt, node, worker_id=worker_id, retry_window=window)
    if launch is None:
        log.info("job %s: node %d of attempt %d is taken or the attempt is over; nothing to do", job_id, node, attempt)
        return "skipped"
    log.info(
        "job %s: joining attempt %d as node %d of %d at %s",
        job_id,
        attempt,
        node,
        launch.num_nodes,
        launch.rendezvous_endpoint,
    )
    writer = JobWriter(sessions, job_uuid, attempt, retry_window=window)  # reads only: rank 0 writes the job
    label = f"job {job_id} node {node}"
    try:
        inputs = prepare_job_inputs(writer.read_job(), sessions, settings)
        if launch.resume_step is not None:
            checkpoint_of_step(inputs.output_dir, launch.resume_step)
        ranks = start_ranks(
            writer,
            settings,
            inputs.config,
            inputs.output_dir,
            node_dir(inputs.output_dir, attempt, node),
            device=launch_device(device, inputs.config.distributed.num_processes),
            upload_checkpoints=inputs.upload_checkpoints,
            label=label,
            rendezvous=attempt_rendezvous(
                settings, launch.rendezvous_endpoint, job_uuid, attempt, launch.num_nodes, host=False
            ),
            resume_step=launch.resume_step,
        )
    except Exception as error:
        log.exception("%s could not start its ranks", label)
        end_node(
            sessions,
            job_uuid,
            attempt,
            node,
            exit_code=-1,
            error=f"{type(error).__name__}: {error}",
            retry_window=window,
        )
        return "failed"
    try:
        with NodeHeartbeat(writer, node, settings.heartbeat_seconds):
            returncode = _wait(ranks, writer)
    except BaseException:
        ranks.terminate()
        raise
    errors = ranks.rank_errors()
    end_node(
        sessions, job_uuid, attempt, node, exit_code=returncode, error="; ".join(errors) or None, retry_window=window
    )
    log.info("%s: torchrun exited with %d", label, returncode)
    return "finished" if returncode == 0 else "failed"


class NodeHeartbeat:
    """Renews a joined node's heartbeat from a daemon thread; sets `writer.lost` once its attempt is over."""

    def __init__(self, writer: JobWriter, node: int, interval: float) -> None:
        self.writer = writer
        self.node = node
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"node-{node}-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                owned = node_heartbeat(self.writer.sessions, self.writer.job_id, self.writer.attempt, self.node)
            except Exception:  # a missed beat is not fatal: the next one may succeed
                log.exception("heartbeat of node %d of job %s failed", self.node, self.writer.job_id)
                continue
            if not owned:
                self.writer.lost.set()

    def __enter__(self) -> NodeHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class NodeWatch:
    """Node 0's view of the other nodes of its attempt: which were lost (silent, no end recorded)."""

    def __init__(self, sessions: sessionmaker[Session], job_id: uuid.UUID, attempt: int, settings: Settings) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.attempt = attempt
        self.lost_after = settings.stale_after_seconds
        self.retry_window = settings.worker_db_retry_seconds
        self._last_look = 0.0

    def others(self) -> list[NodeView]:
        nodes = read_nodes(self.sessions, self.job_id, self.attempt, retry_window=self.retry_window)
        return [n for n in nodes if n.node > 0]

    def silent(self, nodes: list[NodeView]) -> list[NodeView]:
        now = utcnow()
        return [n for n in nodes if not n.ended and n.silent_for(now) > self.lost_after]

    def stop_reason(self) -> str | None:
        """Why node 0 should stop its ranks now: a node went silent, or its ranks failed (or never started),
        so the others would wait for it in the rendezvous or their next collective. Read every few seconds."""
        if time.monotonic() - self._last_look < NODE_WATCH_SECONDS:
            return None
        self._last_look = time.monotonic()
        others = self.others()
        silent = self.silent(others)
        if silent:
            return lost_nodes_message(silent, self.lost_after)
        failed = [n for n in others if n.ended and n.exit_code != 0]
        return "; ".join(f"node {n.node} failed: {n.error}" for n in failed) if failed else None


def lost_nodes_message(nodes: list[NodeView], lost_after: float) -> str:
    names = ", ".join(f"node {n.node} (worker {n.worker_id})" for n in nodes)
    return f"{names} stopped responding (no heartbeat for {lost_after:g}s)"


class RankProcesses:
    """torchrun and its ranks in a process group of their own; output copied to a log file and this log."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, *, label: str) -> None:
        self.log_path = log_path
        self.label = label
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches torchrun
        )
        self._reader = threading.Thread(target=self._copy_output, name=f"ranks-{self.proc.pid}", daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "ab") as sink:
            for raw in self.proc.stdout:
                sink.write(raw)
                sink.flush()
                line = raw.decode(errors="replace").rstrip()
                self.tail.append(line)
                log.info("%s | %s", self.label, line)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait_output(self, timeout: float = 10.0) -> None:
        self._reader.join(timeout)

    def signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, grace: float = TERM_GRACE_SECONDS) -> None:
        """SIGTERM the group (torchrun stops its ranks), SIGKILL it after `grace` seconds."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s: torchrun ignored SIGTERM for %.0f s; killing it", self.label, grace)
        self.signal_group(signal.SIGKILL)  # whatever is left of the group (ranks' watchdogs do the rest)
        self.proc.wait()
        self.wait_output()

    def rank_errors(self) -> list[str]:
        """The errors the ranks reported, first (the likely cause) first; identical ones merged."""
        ranks_of: dict[str, list[str]] = {}
        for line in self.tail:
            at = line.find(RANK_ERROR_MARKER)
            if at < 0:
                continue
            try:
                report = json.loads(line[at + len(RANK_ERROR_MARKER) :])
                ranks_of.setdefault(str(report["error"]), []).append(str(report["rank"]))
            except (ValueError, KeyError, TypeError):
                continue
        return [
            f"{'rank' if len(ranks) == 1 else 'ranks'} {', '.join(ranks)}: {error}" for error, ranks in ranks_of.items()
        ]


def _wait(ranks: RankProcesses, writer: JobWriter, *, stop_reason: Callable[[], str | None] | None = None) -> int:
    """Wait for torchrun; stop the ranks early if this attempt lost the job (re-queued behind its back),
    or once `stop_reason` names a reason (node 0 of a multi-node job: another node went silent or failed)."""
    finished_at: float | None = None
    while ranks.poll() is None:
        reason = stop_reason() if stop_reason is not None else None
        if reason is not None:
            log.warning("%s: %s; stopping the ranks", ranks.label, reason)
            ranks.terminate()
            break
        if writer.lost.is_set():  # the heartbeat found the job no longer running under this attempt
            view = writer.read_status()
            ours = view is not None and view.attempts == writer.attempt
            if ours and view is not None and view.status in ATTEMPT_OVER:
                # Rank 0 recorded the outcome; the ranks are leaving the process group.
                finished_at = finished_at or time.monotonic()
                if time.monotonic() - finished_at > FINISH_GRACE_SECONDS:
                    log.warning("%s: ranks still running after the job finished; stopping them", ranks.label)
                    ranks.terminate()
            else:
                log.warning("%s was re-queued while its ranks ran; stopping them", ranks.label)
                ranks.terminate()
        time.sleep(POLL_SECONDS)
    ranks.wait_output()
    return ranks.proc.returncode


def _outcome(
    writer: JobWriter,
    returncode: int,
    ranks: RankProcesses,
    config: TrainConfig,
    settings: Settings,
    watch: NodeWatch | None,
) -> str:
    view = writer.read_status()
    if view is None or view.attempts != writer.attempt or view.status not in (*ACTIVE_STATUSES, *ATTEMPT_OVER):
        log.warning("%s was re-queued or taken by another attempt; leaving it to its owner", ranks.label)
        return "lost"
    if view.status in ATTEMPT_OVER:
        if returncode != 0:
            log.warning("%s: torchrun exited with %d; the job is %s", ranks.label, returncode, view.status)
        return view.status
    # The ranks are gone and nobody recorded an outcome. The job's error is shown to its tenant: it names
    # the ranks' errors, never worker-local paths; the full output stays in the worker's log file.
    errors = ranks.rank_errors()
    log.error("%s: the ranks failed; their output is in %s", ranks.label, ranks.log_path)
    processes = config.distributed.world_size
    if watch is not None:
        others = _settled_nodes(watch, settings)
        lost = [n for n in others if not n.ended]
        if lost:
            return _requeue_lost(writer, settings, lost, watch.lost_after)
        nodes = config.distributed.num_nodes
        if len(others) + 1 < nodes:
            raise DistributedTrainingError(
                f"distributed.num_nodes={nodes}: only {len(others) + 1} of {nodes} nodes joined within "
                f"{settings.rendezvous_timeout_seconds:g}s; start more workers on the '{settings.task_queue}' "
                "queue (one free job slot per node), or lower distributed.num_nodes"
            )
        errors += [f"node {n.node}: {n.error}" for n in others if n.error]
        detail = "; ".join(errors) or "no rank reported an error (killed by a signal, or out of memory?)"
        raise DistributedTrainingError(
            f"the {processes} training processes on {nodes} nodes stopped before finishing the job "
            f"(node 0's exited with code {returncode}): {detail}"
        )
    detail = "; ".join(errors) if errors else "no rank reported an error (killed by a signal, or out of memory?)"
    raise DistributedTrainingError(
        f"the {processes} training processes exited with code {returncode} before finishing the job: {detail}"
    )


def _settled_nodes(watch: NodeWatch, settings: Settings) -> list[NodeView]:
    """The other nodes once each has recorded its end or gone silent (bounded: after the silence
    limit and two heartbeats, a node still unsettled counts as lost)."""
    deadline = time.monotonic() + watch.lost_after + 2 * settings.heartbeat_seconds
    while True:
        others = watch.others()
        silent = {n.node for n in watch.silent(others)}
        settled = all(n.ended or n.node in silent for n in others)
        if settled or time.monotonic() > deadline:
            return others
        time.sleep(POLL_SECONDS)


def _requeue_lost(writer: JobWriter, settings: Settings, lost: list[NodeView], lost_after: float) -> str:
    """A node was lost: end the attempt as a dead worker's, so the job resumes from its last checkpoint."""
    reason = lost_nodes_message(lost, lost_after)
    status = requeue_after_node_loss(
        writer.sessions,
        writer.job_id,
        writer.attempt,
        reason=f"{reason}; the job resumes from its last checkpoint",
        lost_nodes=[n.node for n in lost],
        settings=settings,
    )
    log.warning("job %s: %s; now %s", writer.job_id, reason, status.value if status else "owned by another attempt")
    if status is JobStatus.queued:
        dispatch_requeued(writer.sessions, writer.job_id, lambda job_id: enqueue_train_job(settings, job_id))
        return "requeued"
    return status.value if status is not None else "lost"
