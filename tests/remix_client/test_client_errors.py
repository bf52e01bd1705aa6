"""Error answers of the real API raise the matching RemixAPIError subclass with the problem's
status, title and detail (and, for 422, its list of invalid fields)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from client_testing import write_jsonl

from remix_client import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RemixAPIError,
    RemixClient,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)


def test_not_found(remix: RemixClient) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as info:
        remix.get_job(missing)
    error = info.value
    assert (error.status, error.title, error.detail) == (404, "Not Found", f"job {missing} not found")
    assert error.type == "urn:remix:problem:not-found" and error.instance == f"/v1/jobs/{missing}"
    with pytest.raises(NotFound, match="dataset"):
        remix.get_dataset(missing)


def test_validation_error_names_the_field(remix: RemixClient) -> None:
    with pytest.raises(ValidationFailed) as info:
        remix.create_job({"total_steps": 3, "algorithm": {"clip_eps": -1}})
    error = info.value
    assert error.status == 422 and "config.algorithm.clip_eps" in error.fields
    assert any(e["field"] == "config.algorithm.clip_eps" and e["message"] for e in error.errors)
    assert "config.algorithm.clip_eps" in error.detail


def test_unknown_dataset_is_a_validation_error(remix: RemixClient) -> None:
    with pytest.raises(ValidationFailed) as info:
        remix.create_job({"total_steps": 3}, dataset_id=uuid.uuid4())
    assert info.value.fields == ["dataset_id"]


def test_unauthorized(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMIX_API_KEY", raising=False)
    with RemixClient(base_url, "rmx_" + "x" * 40) as client, pytest.raises(Unauthorized) as info:
        client.list_jobs_page()
    assert info.value.status == 401 and info.value.detail == "Invalid or revoked API key"
    assert "invalid_token" in info.value.headers["www-authenticate"]
    with (
        RemixClient(base_url, api_key=None) as anonymous,
        pytest.raises(Unauthorized, match="Missing API key"),
    ):
        anonymous.get_job(uuid.uuid4())


def test_payload_too_large(remix: RemixClient, tmp_path: Path) -> None:
    big = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "x" * 100, "answer": "1"}] * 100)
    with pytest.raises(PayloadTooLarge) as info:
        remix.upload_dataset(big)
    assert info.value.status == 413 and "4096 bytes" in info.value.detail
    assert info.value.body["limit"] == 4096


def test_invalid_dataset_and_format(remix: RemixClient, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2="}])
    with pytest.raises(BadRequest) as info:
        remix.upload_dataset(bad)
    assert info.value.title == "Invalid dataset" and info.value.body["line"] == 2
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UnsupportedMediaType):
        remix.upload_dataset(text)


def test_every_api_error_is_a_remix_api_error(remix: RemixClient) -> None:
    with pytest.raises(RemixAPIError) as info:
        remix.list_jobs_page(after="not-a-cursor")
    assert isinstance(info.value, BadRequest) and "after" in info.value.detail
