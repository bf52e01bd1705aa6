"""Helpers of the client tests: a uvicorn server in a thread, worker-side writes through
service.lifecycle (claiming and finishing jobs, metrics, events, checkpoints with files), a scripted
local HTTP server and a TCP proxy whose connections can be cut, to exercise retries and stream
resumption over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from remix_engine.checkpoint_dirs import step_of_checkpoint_dir
from service.artifacts import LocalArtifactStore, checkpoint_key
from service.lifecycle import JobWriter
from service.models import Job, JobStatus
from service.settings import Settings


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --------------------------------------------------------------------------- worker-side writes


def start_job(sessions: sessionmaker[Session], job_id: uuid.UUID | str) -> uuid.UUID:
    """Claim the job as the worker does (queued -> running, with its 'started' event)."""
    return claim_as_worker(sessions, job_id).job_id


def _attempt(sessions: sessionmaker[Session], job_id: uuid.UUID) -> JobWriter:
    """The writer of the job's current attempt (the one `start_job` claimed)."""
    with sessions() as session:
        attempt = session.get_one(Job, job_id).attempts
    return JobWriter(sessions, job_id, attempt)


def record_steps(sessions: sessionmaker[Session], job_id: uuid.UUID, steps: range) -> None:
    writer = _attempt(sessions, job_id)
    for step in steps:
        writer.record_step(step, {"reward_mean": step / 10, "accuracy": step / 20, "phase": "mix"})


def add_event(sessions: sessionmaker[Session], job_id: uuid.UUID, kind: str, step: int, message: str) -> None:
    _attempt(sessions, job_id).add_event(kind, step, message, {})


def finish(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    status: JobStatus = JobStatus.succeeded,
    error: str | None = None,
) -> None:
    """Finish the running attempt at the step it reached (with the outcome's event), as the worker does."""
    writer = _attempt(sessions, job_id)
    step = writer.read_job().current_step
    writer.finish(status, step=step, error=error, message=error or f"{status.value} at step {step}")


def store_checkpoint(
    settings: Settings, sessions: sessionmaker[Session], job_id: uuid.UUID, step: int, files: dict[str, bytes]
) -> None:
    """Write checkpoint files to the artifact store and register the row, as the worker does."""
    store = LocalArtifactStore(settings.artifacts_dir)
    prefix = checkpoint_key(job_id, step)
    for relpath, data in files.items():
        store.put_bytes(prefix.rstrip("/") + "/" + relpath, data)
    # Like the worker, keep the rows of every checkpoint whose folder is still stored.
    steps = (step_of_checkpoint_dir(folder.name) for folder in store.path_for(f"jobs/{job_id}/checkpoints").iterdir())
    kept = {step for step in steps if step is not None}
    _attempt(sessions, job_id).register_checkpoint(
        step, prefix, sum(map(len, files.values())), {"accuracy": 0.5}, kept_steps=kept
    )


# --------------------------------------------------------------------------- scripted HTTP server


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 answering each request with the next scripted response
    (status, headers, body: JSON-encoded unless bytes); the last one repeats. Records
    (method, path, headers) of each request."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        handler = self._handler_class()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _next(self) -> tuple[int, dict[str, str], Any]:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                owner.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = owner._next()
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- cuttable TCP proxy


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`; `cut()` drops every open connection, as a
    restarted load balancer would. Records the raw request head of each connection."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.request_heads: list[bytes] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
                self.request_heads.append(b"")
                index = len(self.request_heads) - 1
            threading.Thread(target=self._pipe, args=(client, upstream, index), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record_as: int | None) -> None:
        try:
            while data := src.recv(65536):
                if record_as is not None:
                    self.request_heads[record_as] += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
