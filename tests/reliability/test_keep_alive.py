"""Against a real uvicorn server: an error the API answers never closes the client's keep-alive
connection, so the next request on the same connection (the same client socket) succeeds."""

from __future__ import annotations

from typing import Any

import httpx
from live_server import serve
from reliability_testing import Caller, assert_problem

from service.main import create_app
from service.settings import Settings

GOOD_ROW = b'{"prompt": "1+1=", "answer": "2"}\n'
# About 2 KB: 990 nested lists used to crash the JSON parser with a RecursionError (a 500).
DEEP_ROW = b'{"prompt": "2+2=", "answer": "4", "x": ' + b"[" * 990 + b"]" * 990 + b"}\n"


def client_address(response: httpx.Response) -> Any:
    """(host, port) of the client side of the connection that carried `response`."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def test_a_refused_deeply_nested_upload_keeps_the_connection_open(settings: Settings, alice: Caller) -> None:
    with serve(settings) as url, httpx.Client(base_url=url, headers=alice.headers, timeout=30) as http:
        refused = http.post("/v1/datasets", files={"file": ("deep.jsonl", GOOD_ROW + DEEP_ROW)})
        body = assert_problem(refused, 400, "deep.jsonl line 2: nested more than 64 levels deep")
        assert (body["line"], body["reason"]) == (2, "nested more than 64 levels deep")
        assert refused.headers.get("connection") != "close"
        too_deep_json = b"[" * 100_000 + b"]" * 100_000
        deep_body = http.post("/v1/jobs", content=too_deep_json, headers={"Content-Type": "application/json"})
        assert_problem(deep_body, 400)

        listed = http.get("/v1/datasets")
        assert listed.status_code == 200, listed.text
        assert client_address(listed) == client_address(deep_body) == client_address(refused)


def test_a_server_error_keeps_the_connection_open(settings: Settings, alice: Caller) -> None:
    app = create_app(settings)

    @app.get("/test-only/broken")
    def broken() -> None:
        raise RuntimeError("a bug the API did not expect")

    with serve(settings, app=app) as url, httpx.Client(base_url=url, headers=alice.headers, timeout=30) as http:
        failed = http.get("/test-only/broken")
        body = assert_problem(failed, 500, "An unexpected error occurred.")
        assert body["type"] == "urn:remix:problem:internal-error" and "RuntimeError" not in failed.text
        assert failed.headers.get("connection") != "close"

        listed = http.get("/v1/datasets")
        assert listed.status_code == 200, listed.text
        assert client_address(listed) == client_address(failed)
