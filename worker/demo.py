"""`remix-demo` (or `python -m worker.demo`): the whole service on one machine, end to end.

With the embedded defaults only (SQLite database, SQLite-backed Celery broker and artifacts in
./var; no servers to install) it: migrates the database, creates an API key, starts the HTTP API
(uvicorn) and a Celery worker as subprocesses, submits a ReMix-GRPO job on the builtin chat model
(`builtin:tiny-chat`: a small Qwen2 with a byte-level BPE tokenizer and the ChatML template,
pretrained locally on chat-formatted addition) over HTTP, with the builtin addition prompts laid out
by the model's chat template (`data.chat_template: auto`), follows its progress over Server-Sent
Events, downloads the final checkpoint archive, loads it with transformers and compares greedy
accuracy on the held-out split before and after training (prompts built with the checkpoint's own
`apply_chat_template`), then shuts everything down.

It lives beside the worker, not in the API package: it starts a worker and loads the trained
checkpoint with torch, which the API process never imports.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from remix_engine.checkpoint_dirs import checkpoint_dir_name
from remix_engine.config import TINY_CHAT_MODEL_ID
from service.settings import Settings, get_settings
from worker.commands import celery_worker_argv

console = Console()
QUIET_EVENTS = {"samples"}  # per-step sample completions: too chatty for a terminal


DEMO_MODEL = TINY_CHAT_MODEL_ID


def demo_config(steps: int, prompts_per_step: int = 16, eval_size: int = 200) -> dict[str, Any]:
    """ReMix-GRPO on 2-digit addition with the locally built chat model, each "12+34=" prompt sent as a
    user turn in the model's ChatML template (16 prompts x 8 responses, lr 1e-4, reincarnation after 30%
    of the steps); with 40 steps it is examples/tiny-chat-remix-grpo.yaml."""
    reincarnation = max(1, round(0.3 * steps))
    return {
        "model": {"name_or_path": DEMO_MODEL},
        # chat_template auto: the tokenizer's ChatML template, with Qwen's default system prompt (~47 tokens)
        "data": {
            "train_path": "builtin:addition",
            "eval_size": eval_size,
            "chat_template": "auto",
            "max_prompt_tokens": 64,
        },
        # 12 tokens leave room for "\\boxed{198}" (7 BPE tokens) and <|im_end|>.
        "rollout": {"prompts_per_step": prompts_per_step, "group_size": 8, "max_new_tokens": 12},
        "algorithm": {
            "name": "remix-grpo",
            "off_policy_fraction": 0.4,
            "history_window": 2,
            "utd_ratio": 2,
            "reincarnation_step": reincarnation,
            "lambda_start_step": reincarnation,
            "minibatch_size": prompts_per_step * 8,
        },
        "optim": {"lr": 1e-4},
        "total_steps": steps,
        "eval_every": max(steps // 4, 1),
        "checkpoint_every": max(steps // 4, 1),
        "seed": 0,
    }


class Processes:
    """API and worker subprocesses, each in its own process group, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} process exited with status {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(settings: Settings) -> str:
    """Migrate the database and return a new API key of the 'demo' tenant."""
    from service.db import session_scope
    from service.migrate import upgrade
    from service.repositories.tenants import create_api_key, get_or_create_tenant

    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        _row, key = create_api_key(session, get_or_create_tenant(session, "demo"), name="demo")
    return key


def _wait_healthy(client: httpx.Client, procs: Processes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API did not become healthy within {timeout:.0f}s")


def _sse(client: httpx.Client, path: str, last_id: str | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of a Server-Sent Events stream."""
    headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(10, read=60)) as response:
        response.raise_for_status()
        ident, event, data = "", "message", ""
        for line in response.iter_lines():
            if not line:
                if data:
                    yield ident, event, json.loads(data)
                event, data = "message", ""
            elif line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()


def _follow(client: httpx.Client, job_id: str, total: int, procs: Processes) -> None:
    """Progress bar over the job's SSE stream until its `end` message (reconnecting if needed)."""
    columns = (
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    last_id: str | None = None
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("train", total=total, info="waiting for a worker...")
        while True:
            procs.check_alive()
            try:
                for ident, event, data in _sse(client, f"/v1/jobs/{job_id}/stream", last_id):
                    last_id = ident or last_id
                    procs.check_alive()
                    if event == "end":
                        return
                    if event == "metric":
                        m = data["metrics"]
                        reward, accuracy = m.get("reward_mean", float("nan")), m.get("accuracy", float("nan"))
                        info = f"reward {reward:.3f}  acc {accuracy:.3f}"
                        progress.update(bar, completed=data["step"], info=info)
                    elif event not in QUIET_EVENTS:
                        progress.console.print(
                            f"[dim]step {data.get('step')}[/] [cyan]{data['kind']}[/] {data['message']}"
                        )
            except httpx.TransportError:
                time.sleep(1)  # reconnect with Last-Event-ID


def _download_final_checkpoint(client: httpx.Client, job_id: str, out_dir: Path) -> Path:
    checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").raise_for_status().json()["data"]
    if not checkpoints:
        raise RuntimeError("the job finished without a checkpoint")
    final = max(checkpoints, key=lambda c: c["step"])
    response = client.get(final["download_url"], timeout=120).raise_for_status()
    archive = out_dir / f"{job_id}-{checkpoint_dir_name(final['step'])}.tar.gz"
    archive.write_bytes(response.content)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(out_dir / job_id, filter="data")
    console.print(f"downloaded [bold]{archive}[/] ({len(response.content) / 1e6:.1f} MB)")
    return out_dir / job_id / checkpoint_dir_name(final["step"])


def _local_accuracy(model_dir: Path, eval_size: int, seed: int) -> float:
    """Greedy accuracy on the held-out addition split, loading the folder with plain transformers and
    prompting it with its own chat template (apply_chat_template with the generation prompt)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remix_engine.toy import sample_pairs
    from remix_engine.toy_chat import greedy_accuracy

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return greedy_accuracy(model, tokenizer, sample_pairs("eval", eval_size, seed))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _report(job: dict[str, Any], checkpoint_dir: Path, config: dict[str, Any]) -> None:
    from remix_engine.toy_chat import build_tiny_chat_model

    eval_size, seed = config["data"]["eval_size"], config["seed"]
    base = _local_accuracy(build_tiny_chat_model(seed=seed), eval_size, seed)
    tuned = _local_accuracy(checkpoint_dir, eval_size, seed)
    summary = job.get("summary", {})
    table = Table(title=f"Greedy accuracy on {eval_size} held-out addition problems (chat-templated prompts)")
    table.add_column("measured by")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("worker (job summary)", _fmt(summary.get("accuracy_before")), _fmt(summary.get("accuracy_after")))
    table.add_row("this process (downloaded checkpoint)", _fmt(base), _fmt(tuned))
    console.print(table)


def run_demo(*, steps: int = 40, prompts_per_step: int = 16, eval_size: int = 200, port: int = 0) -> int:
    """Run the demo; returns a process exit code (0 when the job succeeded)."""
    settings = get_settings()
    var = Path(settings.artifacts_dir).expanduser().resolve().parent
    out_dir = var / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]ReMix finetuning service demo")
    console.print(
        f"database  {settings.database_url}\nbroker    {settings.broker_url}\nartifacts {settings.artifacts_dir}"
    )
    key = _prepare(settings)
    port = port or _free_port()
    procs = Processes(out_dir)
    procs.start(
        "worker",
        celery_worker_argv([settings.task_queue, "maintenance"], f"demo-{uuid.uuid4().hex[:6]}@%h"),
    )
    procs.start(
        "api",
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
    )
    console.print(f"API on http://127.0.0.1:{port} and a Celery worker started (logs in {out_dir})")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            _wait_healthy(client, procs)
            config = demo_config(steps, prompts_per_step, eval_size)
            response = client.post(
                "/v1/jobs",
                json={"name": "demo", "config": config},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            job = response.raise_for_status().json()
            console.print(
                f"submitted job [bold]{job['id']}[/] ({response.status_code}, Location {response.headers['location']})"
            )
            _follow(client, job["id"], steps, procs)
            job = client.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
            if job["status"] != "succeeded":
                console.print(f"[red]job {job['status']}[/]: {job.get('error')}")
                return 1
            checkpoint_dir = _download_final_checkpoint(client, job["id"], out_dir)
            _report(job, checkpoint_dir, config)
            return 0
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    finally:
        console.print("stopping the API and the worker...")
        procs.stop()


cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    steps: Annotated[int, typer.Option(min=2, help="Training steps of the demo job.")] = 40,
    prompts_per_step: Annotated[int, typer.Option(min=2, help="Prompts per step, 8 samples each.")] = 16,
    eval_size: Annotated[int, typer.Option(min=1, help="Held-out prompts evaluated before/after.")] = 200,
    port: Annotated[int, typer.Option(help="API port (0: pick a free one).")] = 0,
) -> None:
    """Run the service locally with embedded defaults and finetune the builtin chat model end to end."""
    code = run_demo(steps=steps, prompts_per_step=prompts_per_step, eval_size=eval_size, port=port)
    raise typer.Exit(code)


if __name__ == "__main__":
    cli()
