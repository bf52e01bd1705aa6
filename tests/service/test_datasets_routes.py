"""Dataset upload (validation, preview, size limit), listing, and use by a job."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any, cast

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem

from remix_engine.data import load_examples
from service.artifacts import LocalArtifactStore, get_artifact_store
from service.db import session_factory
from service.models import Job
from service.settings import Settings
from worker.job_inputs import resolve_config

ROWS = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(7)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


def upload(client: TestClient, caller: Caller, filename: str, data: bytes, **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": (filename, data)}, data=fields, headers=caller.headers)


def test_upload_jsonl_returns_201_with_preview(client: TestClient, alice: Caller, settings: Settings) -> None:
    response = upload(client, alice, "math.jsonl", JSONL, prompt_field="question", answer_field="answer", name="math")
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["format"], body["num_rows"], body["size_bytes"]) == (
        "math",
        "jsonl",
        7,
        len(JSONL),
    )
    assert body["columns"] == ["question", "answer"]
    assert body["preview"][:2] == [
        {"prompt": "What is 0+0?", "answer": "0"},
        {"prompt": "What is 1+1?", "answer": "2"},
    ]
    stored = LocalArtifactStore(settings.artifacts_dir).local_path(f"datasets/{body['id']}/math.jsonl")
    assert stored.read_bytes() == JSONL
    fetched = client.get(f"/v1/datasets/{body['id']}", headers=alice.headers)
    assert fetched.status_code == 200 and fetched.json() == body


def test_upload_parquet(client: TestClient, alice: Caller) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": "2+3", "answer": "5"}]), sink)
    response = upload(client, alice, "tiny.parquet", sink.getvalue())
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "parquet" and response.json()["preview"] == [{"prompt": "2+3", "answer": "5"}]


def test_a_non_ascii_file_name_keeps_its_format_and_a_worker_can_load_it(
    client: TestClient, alice: Caller, settings: Settings, tmp_path: Path
) -> None:
    filename = "данные 🤖.jsonl"
    response = upload(client, alice, filename, JSONL, prompt_field="question")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["name"], dataset["format"], dataset["num_rows"]) == (filename, "jsonl", len(ROWS))
    submitted = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "config": {}}, headers=alice.headers)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["config"]["data"]["train_path"] == f"datasets/{dataset['id']}/data.jsonl"

    # The worker's way in: the job's dataset becomes a file of the artifact store, read by the engine.
    sessions = session_factory(settings.database_url)
    with sessions() as session:
        job = session.get_one(Job, uuid.UUID(submitted.json()["id"]))
    data = resolve_config(job, sessions, get_artifact_store(settings), tmp_path / "cache").data
    examples = load_examples(data.train_path, prompt_field=data.prompt_field, answer_field=data.answer_field)
    assert [(e.prompt, e.answer) for e in examples] == [(r["question"], r["answer"]) for r in ROWS]


def test_malformed_dataset_is_400_naming_the_line(client: TestClient, alice: Caller) -> None:
    bad = b'{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2", "answer": "4"}\n{"prompt": "oops", \n'
    body = assert_problem(upload(client, alice, "bad.jsonl", bad), 400, "bad.jsonl line 3: invalid JSON")
    assert body["line"] == 3 and body["type"] == "urn:remix:problem:invalid-dataset"
    missing = b'{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2"}\n'
    body = assert_problem(upload(client, alice, "gap.jsonl", missing), 400, "line 2")
    assert body["line"] == 2


def test_unsupported_extension_and_missing_file(client: TestClient, alice: Caller) -> None:
    assert_problem(upload(client, alice, "notes.txt", b"hello"), 415, "unsupported file extension '.txt'")
    response = client.post(
        "/v1/datasets", data={"prompt_field": "q"}, files={"other": ("x.jsonl", JSONL)}, headers=alice.headers
    )
    assert_problem(response, 422, "file: a file part is required")
    response = client.post("/v1/datasets", json={"rows": ROWS}, headers=alice.headers)
    assert_problem(response, 415, "multipart/form-data")


def test_overlong_form_fields_are_422(client: TestClient, alice: Caller) -> None:
    response = upload(client, alice, "d.jsonl", JSONL, prompt_field="p" * 201)
    assert_problem(response, 422, "prompt_field: at most 200 characters")
    long_name = upload(client, alice, "d.jsonl", JSONL, prompt_field="question", name="n" * 500)
    assert long_name.status_code == 201 and long_name.json()["name"] == "n" * 300


def test_oversize_upload_is_413(client: TestClient, alice: Caller, settings: Settings) -> None:
    row = json.dumps({"prompt": "x" * 100, "answer": "1"}).encode() + b"\n"
    big = row * (settings.max_upload_bytes // len(row) + 1)
    assert len(big) > settings.max_upload_bytes
    body = assert_problem(
        upload(client, alice, "big.jsonl", big), 413, f"upload limit of {settings.max_upload_bytes} bytes"
    )
    assert body["limit"] == settings.max_upload_bytes
    # Exactly at the limit is accepted.
    fits = row * (settings.max_upload_bytes // len(row))
    assert upload(client, alice, "fits.jsonl", fits).status_code == 201


def test_oversize_body_is_cut_off_while_streaming(settings: Settings, alice: Caller) -> None:
    """Drive the app at the ASGI level: the server must stop reading long before the body ends."""
    from service.main import create_app
    from service.uploads import FORM_ALLOWANCE

    app = create_app(settings)
    boundary = "remixboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'.encode()
    chunk = b'{"prompt": "' + b"y" * 1000 + b'", "answer": "1"}\n'
    total_chunks, consumed, sent = 10_000, [0], []

    async def receive() -> dict[str, object]:
        consumed[0] += 1
        body = head if consumed[0] == 1 else chunk
        return {"type": "http.request", "body": body, "more_body": consumed[0] < total_chunks}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/datasets",
        "raw_path": b"/v1/datasets",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", alice.headers["Authorization"].encode()),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        ],
    }
    anyio.run(cast(Any, app), scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    read_bytes = len(head) + (consumed[0] - 1) * len(chunk)
    assert read_bytes <= settings.max_upload_bytes + FORM_ALLOWANCE + len(chunk)
    assert consumed[0] < total_chunks // 10


def test_list_datasets_is_paginated(client: TestClient, alice: Caller) -> None:
    ids = [upload(client, alice, f"d{i}.jsonl", JSONL, prompt_field="question").json()["id"] for i in range(3)]
    first = client.get("/v1/datasets", params={"limit": 2}, headers=alice.headers).json()
    second = client.get(
        "/v1/datasets", params={"limit": 2, "after": first["next_cursor"]}, headers=alice.headers
    ).json()
    assert [d["id"] for d in first["data"] + second["data"]] == list(reversed(ids))
    assert first["has_more"] and not second["has_more"]


def test_job_uses_an_uploaded_dataset(client: TestClient, alice: Caller, bob: Caller) -> None:
    dataset = upload(client, alice, "math.jsonl", JSONL, prompt_field="question").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "config": {}}, headers=alice.headers)
    assert response.status_code == 202
    job = response.json()
    assert job["dataset_id"] == dataset["id"]
    assert job["config"]["data"]["train_path"] == f"datasets/{dataset['id']}/math.jsonl"
    assert job["config"]["data"]["prompt_field"] == "question"
    both = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset["id"], "eval_dataset_id": dataset["id"], "config": {}},
        headers=alice.headers,
    )
    assert both.json()["config"]["data"]["eval_path"] == f"datasets/{dataset['id']}/math.jsonl"
    # Another tenant cannot train on it: it does not exist for them.
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "config": {}}, headers=bob.headers)
    body = assert_problem(response, 422, f"dataset_id: dataset {dataset['id']} not found")
    assert body["errors"] == [{"field": "dataset_id", "message": f"dataset {dataset['id']} not found"}]
    conflict = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset["id"], "config": {"data": {"train_path": "builtin:addition"}}},
        headers=alice.headers,
    )
    assert_problem(conflict, 422, "dataset_id: conflicts with config.data.train_path")
