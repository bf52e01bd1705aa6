"""API latency and throughput under concurrent load, against Postgres, and the worker's metric-ingest rate.

Sets up a throw-away Postgres database (migrated with alembic) and an API key, then runs the API the way
production does: `uvicorn service.main:app` as a subprocess with several worker processes, no reload,
REMIX_ENV=prod, on 127.0.0.1 and a free port. Jobs are dispatched to Redis on a queue no worker consumes
(deleted afterwards), so no training starts. An httpx async client with bounded concurrency sends
- POST /v1/jobs (job creation: validation, insert, broker publish), then
- GET /v1/jobs/{id} (status reads) over the created jobs,
and reports p50/p99 latency and throughput. Finally the worker's own write path
(`service.lifecycle.JobWriter.record_step`: heartbeat-guarded metric upsert, one transaction per step)
is timed for one writer and for several concurrent writers on claimed jobs.

    python -m benchmarks.api_load            # full run
    python -m benchmarks.api_load --quick    # seconds; writes under var/bench/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common

NAME = "api_load"
ADMIN_URL = os.environ.get("REMIX_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKER_URL = os.environ.get("REMIX_BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
JOB_BODY = {"name": "load-test", "config": {"total_steps": 20, "algorithm": {"name": "remix-grpo"}}}


# ------------------------------------------------------------------------------------ infrastructure


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def temporary_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database; dropped afterwards."""
    import psycopg

    from service.migrate import upgrade

    name = f"remix_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        from service.db import dispose_engines

        dispose_engines()
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_api_key(database_url: str) -> str:
    from service.db import session_scope
    from service.repositories.tenants import create_api_key as create
    from service.repositories.tenants import get_or_create_tenant

    with session_scope(database_url) as session:
        _, clear = create(session, get_or_create_tenant(session, "load-test"), name="api_load benchmark")
    return clear


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_server(env: dict[str, str], workers: int) -> Iterator[str]:
    """uvicorn with production settings in its own process group; yields the base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=common.REPO_ROOT, env={**os.environ, **env}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, process)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the group: uvicorn's own worker processes too
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with status {process.returncode} before serving")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the API at {base} was not ready after {timeout:.0f} s")


def purge_queue(broker_url: str, queue: str) -> None:
    """Remove the benchmark's queue (and kombu's binding keys for it) from Redis."""
    import redis

    client = redis.Redis.from_url(broker_url)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)


# ------------------------------------------------------------------------------------------ load


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(int(-(-q * len(ordered) // 100)), 1)
    return ordered[min(rank, len(ordered)) - 1]


async def run_load(count: int, concurrency: int, send: Callable[[int], Awaitable[httpx.Response]]) -> dict[str, Any]:
    """`count` requests, at most `concurrency` in flight; latency per request and overall throughput."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies: list[Any] = []

    async def one(index: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            response = await send(index)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.is_success:
                bodies.append(response.json())

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return {
        "requests": count,
        "concurrency": concurrency,
        "seconds": elapsed,
        "throughput_rps": count / elapsed,
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p99_ms": 1e3 * percentile(latencies, 99),
        "max_ms": 1e3 * max(latencies),
        "statuses": statuses,
        "bodies": bodies,
    }


async def http_phases(base: str, key: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        create = await run_load(args.creates, args.concurrency, lambda _i: client.post("/v1/jobs", json=JOB_BODY))
        job_ids = [body["id"] for body in create.pop("bodies")]
        if not job_ids:
            raise RuntimeError(f"no job was created: statuses {create['statuses']}")
        read = await run_load(
            args.reads, args.concurrency, lambda i: client.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}")
        )
        read.pop("bodies")
    return {"create job (POST /v1/jobs)": create, "read job status (GET /v1/jobs/{id})": read}


# -------------------------------------------------------------------------------- metric ingest


def representative_metrics(step: int) -> dict[str, Any]:
    """A payload the size of the trainer's per-step metrics (~70 numbers and a phase string)."""
    metrics: dict[str, Any] = {f"metric_{i:02d}": 0.001 * i * step for i in range(70)}
    return metrics | {"step": step, "phase": "mix"}


def ingest(database_url: str, writers: int, steps: int) -> dict[str, Any]:
    """`writers` threads, each claiming its own job and recording `steps` metric rows through JobWriter."""
    from service.db import session_factory, session_scope
    from service.lifecycle import JobWriter, claim_job
    from service.models import Job
    from service.repositories.tenants import get_or_create_tenant

    sessions = session_factory(database_url)
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, "ingest-test")
        jobs = [
            Job(
                tenant_id=tenant.id,
                name="ingest",
                base_model="builtin:tiny-arith",
                config={},
                total_steps=steps,
            )
            for _ in range(writers)
        ]
        session.add_all(jobs)
        session.flush()
        job_ids = [job.id for job in jobs]
    latencies: list[float] = []
    lock = threading.Lock()

    def write(job_id: uuid.UUID) -> None:
        claim = claim_job(sessions, job_id, worker_id=f"bench-{job_id.hex[:8]}")
        assert claim is not None, "a freshly inserted job must be claimable"
        writer = JobWriter(sessions, job_id, claim.attempt)
        own: list[float] = []
        for step in range(1, steps + 1):
            started = time.perf_counter()
            writer.record_step(step, representative_metrics(step))
            own.append(time.perf_counter() - started)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=write, args=(job_id,)) for job_id in job_ids]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "writers": writers,
        "steps_per_writer": steps,
        "rows": len(latencies),
        "seconds": elapsed,
        "rows_per_s": len(latencies) / elapsed,
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p99_ms": 1e3 * percentile(latencies, 99),
    }


# ---------------------------------------------------------------------------------------- report


def markdown(http: dict[str, dict[str, Any]], ingest_rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    http_table = common.markdown_table(
        [
            "operation",
            "requests",
            "concurrency",
            "throughput (req/s)",
            "p50 ms",
            "p99 ms",
            "max ms",
            "statuses",
        ],
        [
            [
                op,
                str(r["requests"]),
                str(r["concurrency"]),
                f"{r['throughput_rps']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())),
            ]
            for op, r in http.items()
        ],
    )
    ingest_table = common.markdown_table(
        ["concurrent writers", "rows", "rows/s", "p50 ms per step", "p99 ms per step"],
        [
            [
                str(r["writers"]),
                str(r["rows"]),
                f"{r['rows_per_s']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
            ]
            for r in ingest_rows
        ],
    )
    setup = (
        f"Setup: uvicorn with {args.workers} worker processes, REMIX_ENV=prod, Postgres on localhost, Redis "
        f"broker; client: httpx async, {args.concurrency} requests in flight, on the same machine (it shares "
        "the CPU with the server). Metric ingest: `JobWriter.record_step` (heartbeat-guarded upsert of "
        "one step's ~70 metrics, one transaction each), one thread per writer, each on its own running job."
    )
    return f"{setup}\n\n{http_table}\n\nMetric ingest from workers:\n\n{ingest_table}\n"


def plot(http: dict[str, dict[str, Any]], ingest_rows: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    names = [op.split(" (")[0] for op in http]
    width = 0.38
    xs = range(len(names))
    axes[0].bar([x - width / 2 for x in xs], [r["p50_ms"] for r in http.values()], width, label="p50")
    axes[0].bar([x + width / 2 for x in xs], [r["p99_ms"] for r in http.values()], width, label="p99")
    axes[0].set(xticks=list(xs), xticklabels=names, ylabel="latency (ms)", title="HTTP latency under load")
    axes[0].legend()
    axes[1].bar([str(r["writers"]) for r in ingest_rows], [r["rows_per_s"] for r in ingest_rows], color="tab:green")
    axes[1].set(xlabel="concurrent writers", ylabel="metric rows per second", title="Metric ingest")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--ingest-steps", type=int, default=500, help="metric rows per writer")
    parser.add_argument("--ingest-writers", nargs="+", type=int, default=[1, 4])
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.concurrency, args.creates, args.reads = 1, 4, 20, 40
        args.ingest_steps, args.ingest_writers = 20, [1, 2]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data_dir, figures = common.output_paths(NAME, args.quick)
    queue = f"bench-load-{uuid.uuid4().hex[:8]}"
    with temporary_database(ADMIN_URL) as database_url:
        key = create_api_key(database_url)
        env = {
            "REMIX_ENV": "prod",
            "REMIX_DATABASE_URL": database_url,
            "REMIX_BROKER_URL": BROKER_URL,
            "REMIX_TASK_QUEUE": queue,
            "REMIX_ARTIFACTS_DIR": str(data_dir / "artifacts"),
        }
        try:
            with api_server(env, args.workers) as base:
                http = asyncio.run(http_phases(base, key, args))
        finally:
            purge_queue(BROKER_URL, queue)
        ingest_rows = [ingest(database_url, writers, args.ingest_steps) for writers in args.ingest_writers]
    png = figures / f"{NAME}.png"
    plot(http, ingest_rows, png)
    data = {"args": vars(args), "http": http, "ingest": ingest_rows}
    text = markdown(http, ingest_rows, args)
    common.publish(NAME, argv, report=not args.quick, data_dir=data_dir, data=data, text=text, images=[png])
    return {"http": http, "ingest": ingest_rows}


if __name__ == "__main__":
    main()
