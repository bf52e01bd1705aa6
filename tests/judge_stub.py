"""A stand-in for an outside service: an OpenAI-compatible judge model (POST /v1/chat/completions).

THE ONLY STAND-IN of the reward tests. The judge reward calls a chat-completions API the operator
runs or rents (OpenAI, a vLLM server...), which no test can reach. `JudgeStub` is a real HTTP server
on 127.0.0.1 (a free port, one thread per request) that speaks the same protocol: it records every
request it receives (headers and JSON body) and answers with what the test's `respond(prompt)`
returns: a reply text (wrapped as `choices[0].message.content`), or a `Reply` with a status, a raw
body and a delay, to play timeouts, errors and malformed answers. Everything else the tests use
(workers' scoring child, the API, the sandbox) is real.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: str | None = None  # raw body; None: an OpenAI chat completion holding `content`
    content: str = '{"score": 1}'
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def default_respond(prompt: str) -> str | Reply:
    """Scores 1 when the prompt (the rendered rubric) says GOOD, else 0, as JSON."""
    return '{"score": 1}' if "GOOD" in prompt else 'Reasoning... {"score": 0}'


class JudgeStub:
    """`with JudgeStub() as stub:` serves at `stub.base_url` (".../v1"); `stub.requests` lists what came in."""

    def __init__(self, respond: Callable[[str], str | Reply] = default_respond) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path != "/v1/chat/completions":
                    self._send(Reply(status=404, body='{"error": "not found"}'))
                    return
                prompt = body["messages"][-1]["content"]
                answer = stub.respond(prompt)
                self._send(answer if isinstance(answer, Reply) else Reply(content=answer))

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.body
                if payload is None:
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-stub",
                            "object": "chat.completion",
                            "model": "stub-judge",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.content},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    )
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def env(self, model: str = "stub-judge", **extra: str) -> dict[str, str]:
        """The REMIX_JUDGE_* variables naming this server."""
        return {"REMIX_JUDGE_URL": self.base_url, "REMIX_JUDGE_MODEL": model, **extra}

    def prompts(self) -> list[str]:
        with self._lock:
            return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def __enter__(self) -> JudgeStub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
