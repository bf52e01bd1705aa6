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
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from remix_engine.config import TrainConfig
from service.lifecycle import ACTIVE_STATUSES, JobWriter
from service.models import JobStatus
from service.settings import Settings

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


def attempt_dir(output_dir: Path, attempt: int) -> Path:
    """Where one attempt keeps its launch files: config.json, ranks.log, rank-<r>.pid."""
    return output_dir / LAUNCH_DIR / f"attempt-{attempt}"


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
    return torchrun_argv(processes, ENTRY_MODULE, args)


def run_distributed(
    writer: JobWriter,
    settings: Settings,
    config: TrainConfig,
    output_dir: Path,
    *,
    upload_checkpoints: bool,
    device: str | None = None,
) -> str:
    """Train the claimed job on `config.distributed.num_processes` local processes; returns the outcome."""
    processes = config.distributed.num_processes
    device = launch_device(device, processes)
    folder = attempt_dir(output_dir, writer.attempt)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.json"
    config_path.write_text(config.model_dump_json())
    argv = entry_argv(
        writer,
        config_path,
        output_dir,
        processes=processes,
        device=device,
        upload_checkpoints=upload_checkpoints,
    )
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    log.info("job %s: launching %d %s processes: %s", writer.job_id, processes, device, " ".join(argv))
    ranks = RankProcesses(argv, env, folder / "ranks.log", label=f"job {writer.job_id}")
    try:
        returncode = _wait(ranks, writer)
    except BaseException:
        ranks.terminate()
        raise
    return _outcome(writer, returncode, ranks, processes)


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


def _wait(ranks: RankProcesses, writer: JobWriter) -> int:
    """Wait for torchrun; stop the ranks early if this attempt lost the job (re-queued behind its back)."""
    finished_at: float | None = None
    while (returncode := ranks.poll()) is None:
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
    return returncode


def _outcome(writer: JobWriter, returncode: int, ranks: RankProcesses, processes: int) -> str:
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
    detail = "; ".join(errors) if errors else "no rank reported an error (killed by a signal, or out of memory?)"
    raise DistributedTrainingError(
        f"the {processes} training processes exited with code {returncode} before finishing the job: {detail}"
    )
