"""Command lines that run a job under torchrun: several local processes (one per GPU), on one node or
on several nodes that meet at a c10d rendezvous."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one multi-node job meet (torchrun's c10d rendezvous backend).

    `endpoint` is host:port of the TCP store the hosting node serves; `run_id` names this attempt of
    the job, so a late node of an earlier attempt never joins a later one. `host` is True on the node
    that serves the store (said explicitly: several nodes may share one machine). `local_addr` is the
    address this node's ranks are reached at (torchrun's --local-addr; None: its hostname).
    """

    endpoint: str
    run_id: str
    num_nodes: int
    host: bool
    join_timeout_s: float = 600.0
    local_addr: str | None = None

    def argv(self) -> list[str]:
        conf = f"is_host={1 if self.host else 0},join_timeout={int(self.join_timeout_s)}"
        args = [
            f"--nnodes={self.num_nodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={self.endpoint}",
            f"--rdzv_id={self.run_id}",
            f"--rdzv_conf={conf}",
            "--max_restarts=0",
        ]
        if self.local_addr:
            args.append(f"--local_addr={self.local_addr}")
        return args


def torchrun_argv(
    nproc_per_node: int,
    module: str,
    module_args: list[str],
    *,
    master_port: int | None = None,
    rendezvous: Rendezvous | None = None,
) -> list[str]:
    """argv that runs `python -m module module_args...` in `nproc_per_node` local processes under torchrun.

    torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE (what `init_from_env` reads) and stops
    all of them when one fails (no restarts). `master_port` pins the rendezvous port; without it
    `--standalone` picks a free one, so several jobs can share a host. With `rendezvous` this node is
    one of `rendezvous.num_nodes`, and the ranks are numbered over all of them.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    if rendezvous is not None:
        launcher = [sys.executable, "-m", "torch.distributed.run", *rendezvous.argv()]
        return [*launcher, f"--nproc_per_node={nproc_per_node}", "-m", module, *module_args]
    rendezvous_args = ["--standalone"]
    if master_port is not None:
        rendezvous_args = ["--master_addr=127.0.0.1", f"--master_port={master_port}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", *rendezvous_args]
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
