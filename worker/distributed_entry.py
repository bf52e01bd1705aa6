"""One rank of a multi-process job, started by torchrun on the worker that claimed the job (and, for a
multi-node job, on every worker that joined it).

    python -m torch.distributed.run --standalone --nproc_per_node=N -m worker.distributed_entry \\
        <job_id> <attempt> --config <resolved config.json> --output <job folder> --device cpu|cuda \\
        [--upload-checkpoints] [--launcher-pid <pid of the Celery task process>] [--resume-step S]

Every rank builds the same `Trainer` (which joins the process group from torchrun's RANK /
WORLD_SIZE: gloo on CPU, nccl with one GPU per LOCAL_RANK on CUDA) and resumes from the job's
latest checkpoint. Rank 0 alone talks to the database, exactly like the in-process runner: its
trainer reports through `DbCallbacks` of the claimed attempt (metrics upserted by step, events,
checkpoints registered in the artifact store, cancellation polled between steps and broadcast to the
other ranks), it records a `distributed` event with the world size, feeds the job's experiment trackers
(worker/tracking.py), and it writes the final outcome.
A rank that fails prints one `REMIX_RANK_ERROR {json}` line and exits non-zero; torchrun then stops
the others and the launcher (worker/distributed_launch.py) fails the job with the first such error.

`Lifeline` keeps ranks from outliving their launcher: if the Celery task process that started
torchrun dies, or torchrun itself dies, the rank kills torchrun's process group and its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from remix_engine.config import TrainConfig

log = logging.getLogger("worker.distributed_entry")

EXIT_FAILED = 1
EXIT_LEASE_LOST = 3
LIFELINE_INTERVAL_S = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.distributed_entry", description="One rank of a job")
    parser.add_argument("job_id", type=uuid.UUID)
    parser.add_argument("attempt", type=int, help="the attempt number of the worker's claim")
    parser.add_argument("--config", required=True, type=Path, help="the job's resolved TrainConfig (JSON)")
    parser.add_argument("--output", required=True, type=Path, help="the job's output folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--upload-checkpoints", action="store_true", help="copy checkpoints to the store")
    parser.add_argument("--launcher-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument(
        "--resume-step",
        type=int,
        default=None,
        help="resume from the checkpoint of this step (-1: from the start), as every node of the job does; "
        "default: the newest checkpoint in --output",
    )
    return parser.parse_args(argv)


def start_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint this rank resumes from: the one node 0 chose for a multi-node job, else the newest."""
    from remix_engine.trainer import Trainer
    from worker.distributed_launch import checkpoint_of_step

    if args.resume_step is None:
        return Trainer.latest_checkpoint(args.output)
    return None if args.resume_step < 0 else checkpoint_of_step(args.output, args.resume_step)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    Lifeline(args.launcher_pid).start()
    _write_pid_file(args, rank)
    try:
        config = TrainConfig.model_validate_json(args.config.read_text())
        if rank == 0:
            return _run_main_rank(args, config)
        _run_other_rank(args, config)
        return 0
    except Exception as error:
        log.exception("rank %d failed", rank)
        report_error(rank, error)
        return EXIT_FAILED


def _run_main_rank(args: argparse.Namespace, config: TrainConfig) -> int:
    from service.artifacts import get_artifact_store
    from service.db import session_factory
    from service.lifecycle import JobWriter, LeaseLost
    from service.queue import webhook_sender
    from service.settings import get_settings
    from service.webhooks.events import set_delivery_sender
    from worker.job_runner import RUN_STATUS_OF_OUTCOME, DbCallbacks, train_and_finish
    from worker.tracking import KILLED, start_tracking

    settings = get_settings()
    # Rank 0 writes the job's outcome and checkpoints: their webhook deliveries are sent from here.
    set_delivery_sender(webhook_sender(settings))
    writer = JobWriter(
        session_factory(settings.database_url),
        args.job_id,
        args.attempt,
        retry_window=settings.worker_db_retry_seconds,
    )
    try:
        from remix_engine.distributed import shutdown
        from remix_engine.trainer import Trainer

        store = get_artifact_store(settings)
        tracking = start_tracking(writer, writer.read_job(), config, args.output, settings)
        callbacks = DbCallbacks(
            writer,
            store,
            upload_checkpoints=args.upload_checkpoints,
            devices=config.distributed.world_size,
            tracking=tracking,
        )
        outcome = "failed"
        try:
            trainer = Trainer(config, args.output, callbacks=callbacks, device=args.device)
            announce(writer, trainer)
            checkpoint = start_checkpoint(args)
            outcome = train_and_finish(writer, trainer, args.output, tracking=tracking, checkpoint=checkpoint)
        except LeaseLost:
            outcome = "lost"
            raise
        finally:
            if tracking is not None:
                tracking.close(RUN_STATUS_OF_OUTCOME.get(outcome, KILLED))
        log.info("job %s: %s on %d processes", args.job_id, outcome, trainer.dist.world_size)
        shutdown()
        return 0
    except LeaseLost as lost:
        log.warning("job %s: %s; leaving it to its new owner", args.job_id, lost)
        return EXIT_LEASE_LOST


def _run_other_rank(args: argparse.Namespace, config: TrainConfig) -> None:
    """Train silently: same trainer, same checkpoint, no database (the trainer reports on rank 0 only)."""
    from remix_engine.distributed import shutdown
    from remix_engine.trainer import Trainer

    trainer = Trainer(config, args.output, device=args.device)
    checkpoint = start_checkpoint(args)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    trainer.train()
    shutdown()


def announce(writer: Any, trainer: Any) -> None:
    """A `distributed` event: how many processes train the job, on what."""
    import torch.distributed as dist

    world_size = trainer.dist.world_size
    backend = dist.get_backend() if dist.is_initialized() else "none"
    device = trainer.device.type
    strategy = trainer.cfg.distributed.strategy
    nodes = trainer.cfg.distributed.num_nodes
    where = f" on {nodes} nodes" if nodes > 1 else ""
    writer.add_event(
        "distributed",
        writer.read_job().current_step,
        f"training on {world_size} processes{where} ({strategy}, {backend} backend, {device})",
        {
            "world_size": world_size,
            "num_nodes": nodes,
            "strategy": strategy,
            "backend": backend,
            "device": device,
            "attempt": writer.attempt,
        },
    )


def report_error(rank: int, error: BaseException) -> None:
    """One machine-readable line the launcher turns into the job's error message."""
    from worker.distributed_launch import RANK_ERROR_MARKER

    text = f"{type(error).__name__}: {error}".strip().splitlines()[0][:2000]
    sys.stderr.write(RANK_ERROR_MARKER + json.dumps({"rank": rank, "error": text}) + "\n")
    sys.stderr.flush()


def _write_pid_file(args: argparse.Namespace, rank: int) -> None:
    """`<pid> <torchrun pid>` of this rank, next to the attempt's config (for operators and tests)."""
    from worker.distributed_launch import attempt_dir

    folder = attempt_dir(args.output, args.attempt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.pid").write_text(f"{os.getpid()} {os.getppid()}\n")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


class Lifeline:
    """A daemon thread that ends this rank, and torchrun's group, once the launcher or torchrun is gone."""

    def __init__(self, launcher_pid: int | None, interval: float = LIFELINE_INTERVAL_S) -> None:
        self.launcher_pid = launcher_pid
        self.torchrun_pid = os.getppid()
        self.interval = interval

    def start(self) -> Lifeline:
        threading.Thread(target=self._watch, name="lifeline", daemon=True).start()
        return self

    def broken(self) -> str | None:
        if os.getppid() != self.torchrun_pid:
            return f"torchrun (pid {self.torchrun_pid}) is gone"
        if self.launcher_pid is not None and not pid_alive(self.launcher_pid):
            return f"the worker process that launched the job (pid {self.launcher_pid}) is gone"
        return None

    def _watch(self) -> None:
        reason = None
        while reason is None:
            time.sleep(self.interval)
            reason = self.broken()
        if self.launcher_pid is not None and os.getppid() == self.torchrun_pid:
            _kill_group_led_by(self.torchrun_pid)  # the launcher starts torchrun in a group of its own
        with contextlib.suppress(OSError):  # stderr may be a pipe whose reader died with the launcher
            sys.stderr.write(f"[lifeline] {reason}: stopping this rank\n")
            sys.stderr.flush()
        _kill_group_led_by(os.getpid())  # torchrun starts each rank in a group of its own
        os._exit(EXIT_FAILED)


def _kill_group_led_by(pid: int) -> None:
    """SIGKILL the process group whose leader is `pid`; nothing if `pid` leads no group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
