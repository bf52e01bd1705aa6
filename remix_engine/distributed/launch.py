"""Command lines that run a job file under torchrun (several local processes, one per GPU)."""

from __future__ import annotations

import os
import sys


def torchrun_argv(
    nproc_per_node: int, module: str, module_args: list[str], *, master_port: int | None = None
) -> list[str]:
    """argv that runs `python -m module module_args...` in `nproc_per_node` local processes under torchrun.

    torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE (what `init_from_env` reads) and stops
    all of them when one fails (no restarts). `master_port` pins the rendezvous port; without it
    `--standalone` picks a free one, so several jobs can share a host.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    rendezvous = ["--standalone"]
    if master_port is not None:
        rendezvous = ["--master_addr=127.0.0.1", f"--master_port={master_port}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", *rendezvous]
    return [*launcher, f"--nproc_per_node={nproc_per_node}", "-m", module, *module_args]


def torchrun_command(
    config_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    nproc_per_node: int,
    *,
    resume: bool = True,
    device: str = "cuda",
    master_port: int | None = None,
) -> list[str]:
    """argv that trains one job file with the CLI on `nproc_per_node` local processes (one per GPU).

    Run it as a subprocess (cwd anywhere, same Python environment) and read the job's
    metrics.jsonl / events.jsonl / checkpoints from output_dir. A single process is just
    `python -m remix_engine.cli train ...`. (The Celery worker launches database-backed jobs with
    `worker.distributed_entry` instead; see docs/scaling.md.)
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    train = ["train", str(config_path), "--output", str(output_dir), "--device", device]
    if resume:
        train.append("--resume")
    if nproc_per_node == 1:
        return [sys.executable, "-m", "remix_engine.cli", *train]
    return torchrun_argv(nproc_per_node, "remix_engine.cli", train, master_port=master_port)
