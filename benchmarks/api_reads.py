"""Latency of the API's read paths at a fixed request rate (open loop), against Postgres.

Sets up a throw-away Postgres database with one tenant, 30 jobs and 200 metric rows on one of them,
then runs `uvicorn service.main:app` with one worker process (REMIX_ENV=prod, Redis broker on a queue
nobody consumes). For each endpoint, an open-loop generator (asyncio) schedules requests at a
fixed rate, sends each at its scheduled time whether or not earlier ones have answered, and measures
latency from the scheduled send time, so a stalled server shows up as latency instead of slowing
the load (no coordinated omission). The client is a minimal HTTP/1.1 keep-alive client on asyncio
streams (`RawHttpClient`), cheap enough not to be the bottleneck. Endpoints:
- GET /healthz (the framework's floor: no database, no authentication),
- GET /v1/jobs/{id} (one job), GET /v1/jobs (the first page of 20),
- GET /v1/jobs/{id}/metrics?from_step=191 (the latest 10 of 200 steps, as a follower polls).
Each endpoint is measured `--runs` times for `--seconds` at `--rate` requests per second, after a
short warm-up; the report gives p50/p99/max latency and the achieved rate of every run, and the
machine's load average before and after the runs (the load generator shares the machine).

    python -m benchmarks.api_reads            # 200 req/s, 20 s, 3 runs per endpoint
    python -m benchmarks.api_reads --quick    # seconds; writes under var/bench/
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.api_load import (
    ADMIN_URL,
    BROKER_URL,
    api_server,
    create_api_key,
    percentile,
    purge_queue,
    representative_metrics,
    temporary_database,
)

NAME = "api_reads"
JOBS, METRIC_STEPS = 30, 200
TARGET_P99_MS = 50.0


def seed(database_url: str, tenant_name: str) -> str:
    """JOBS queued jobs of the tenant and METRIC_STEPS metric rows on the first; returns its id."""
    from service.db import session_factory, session_scope
    from service.lifecycle import JobWriter, claim_job
    from service.models import Job
    from service.repositories.tenants import get_or_create_tenant

    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, tenant_name)
        jobs = [
            Job(tenant_id=tenant.id, name=f"read-{i}", base_model="builtin:tiny-arith", config={}, total_steps=50)
            for i in range(JOBS)
        ]
        session.add_all(jobs)
        session.flush()
        first = jobs[0].id
    sessions = session_factory(database_url)
    claim = claim_job(sessions, first, worker_id="bench-reads")
    assert claim is not None
    writer = JobWriter(sessions, first, claim.attempt)
    for step in range(1, METRIC_STEPS + 1):
        writer.record_step(step, representative_metrics(step))
    return str(first)


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: GET only, Content-Length bodies.

    httpx spends about a millisecond of CPU per request, which on a small machine shared with the server
    caps the load it can generate well below the rates measured here; this spends a fraction of that."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        host_port = base.removeprefix("http://")
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> int:
        if self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, path)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()  # the server closed this idle connection: send on a new one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, path)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n"
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status

    async def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


async def open_loop(client: RawHttpClient, path: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send GET `path` at `rate` per second for `seconds`; latency is measured from each scheduled time."""
    count = max(1, int(rate * seconds))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(scheduled: float) -> None:
        try:
            code = await client.get(path)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            code = 0  # a transport error is recorded as status 0
        latencies.append(loop.time() - scheduled)
        statuses[code] = statuses.get(code, 0) + 1

    tasks = []
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    last_sent = loop.time()
    await asyncio.gather(*tasks)
    finished = loop.time()
    return {
        "requests": count,
        "target_rps": rate,
        "achieved_rps": count / max(finished - start, 1e-9),
        "send_lag_ms": 1e3 * max(0.0, last_sent - (start + (count - 1) / rate)),
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p99_ms": 1e3 * percentile(latencies, 99),
        "max_ms": 1e3 * max(latencies),
        "statuses": statuses,
    }


async def measure(base: str, key: str, job_id: str, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    endpoints = {
        "GET /healthz": "/healthz",
        "GET /v1/jobs/{id}": f"/v1/jobs/{job_id}",
        "GET /v1/jobs": "/v1/jobs",
        "GET /v1/jobs/{id}/metrics (latest 10 steps)": f"/v1/jobs/{job_id}/metrics?from_step={METRIC_STEPS - 9}",
    }
    client = RawHttpClient(base, {"Authorization": f"Bearer {key}"})
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for name, path in endpoints.items():
            await open_loop(client, path, args.rate, args.warmup)  # connections opened, caches warm
            results[name] = [await open_loop(client, path, args.rate, args.seconds) for _ in range(args.runs)]
    finally:
        await client.close()
    return results


def markdown(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, load: dict[str, list[float]]) -> str:
    before, after = ("/".join(f"{x:.2f}" for x in load[when]) for when in ("before", "after"))
    lines = [
        f"Setup: one uvicorn worker process, REMIX_ENV=prod, Postgres and Redis on localhost; open-loop load "
        f"(asyncio, keep-alive connections, on the same machine) at {args.rate:g} req/s for {args.seconds:g} s "
        f"per run, "
        f"{args.runs} runs per endpoint after a {args.warmup:g} s warm-up; latency from each request's "
        f"scheduled send time. Target: p99 < {TARGET_P99_MS:g} ms at 200 req/s. Load average (1/5/15 min) "
        f"before the runs {before}, after them {after}.",
        "",
    ]
    rows = []
    for name, runs in results.items():
        for index, run in enumerate(runs, 1):
            statuses = ", ".join(f"{code}: {n}" for code, n in sorted(run["statuses"].items()))
            rows.append(
                [
                    name,
                    str(index),
                    f"{run['achieved_rps']:.0f}",
                    f"{run['p50_ms']:.1f}",
                    f"{run['p99_ms']:.1f}",
                    f"{run['max_ms']:.1f}",
                    statuses,
                ]
            )
    header = ["endpoint", "run", "achieved req/s", "p50 ms", "p99 ms", "max ms", "statuses"]
    lines.append(common.markdown_table(header, rows))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(results)
    for offset, (quantile, marker) in enumerate((("p50_ms", "o"), ("p99_ms", "s"))):
        for x, name in enumerate(names):
            values = [run[quantile] for run in results[name]]
            ax.scatter(
                [x + 0.15 * (offset - 0.5)] * len(values),
                values,
                marker=marker,
                color=f"C{offset}",
                label=quantile.removesuffix("_ms") if x == 0 else None,
            )
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label=f"target p99 {TARGET_P99_MS:g} ms")
    ax.set(
        xticks=range(len(names)),
        xticklabels=names,
        ylabel="latency (ms)",
        yscale="log",
        title="Read latency at a fixed request rate (each point one run)",
    )
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run writing under var/bench/")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=3, help="runs per endpoint")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds, args.runs, args.warmup = 50.0, 1.0, 1, 0.5
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data_dir, figures = common.output_paths(NAME, args.quick)
    queue = f"bench-reads-{uuid.uuid4().hex[:8]}"
    with temporary_database(ADMIN_URL) as database_url:
        key = create_api_key(database_url)
        job_id = seed(database_url, "load-test")  # create_api_key's tenant
        env = {
            "REMIX_ENV": "prod",
            "REMIX_DATABASE_URL": database_url,
            "REMIX_BROKER_URL": BROKER_URL,
            "REMIX_TASK_QUEUE": queue,
            "REMIX_ARTIFACTS_DIR": str(data_dir / "artifacts"),
        }
        try:
            with api_server(env, workers=1) as base:
                load = {"before": list(os.getloadavg())}
                started = time.monotonic()
                results = asyncio.run(measure(base, key, job_id, args))
                elapsed = time.monotonic() - started
                load["after"] = list(os.getloadavg())
        finally:
            purge_queue(BROKER_URL, queue)
    png = figures / f"{NAME}.png"
    plot(results, png)
    data = {"args": vars(args), "results": results, "seconds": elapsed, "load_average": load}
    text = markdown(results, args, load)
    common.publish(NAME, argv, report=not args.quick, data_dir=data_dir, data=data, text=text, images=[png])
    return data


if __name__ == "__main__":
    main()
