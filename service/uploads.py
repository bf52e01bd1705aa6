"""Size-bounded multipart parsing for dataset uploads.

The request body is counted while it streams in: more than `max_bytes` plus a small allowance
for the form envelope aborts with 413 before the rest is read, and the file part is read into
memory with at most `max_bytes + 1` bytes, so an oversize upload is never buffered whole.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import FieldValidationError, ProblemError

FORM_ALLOWANCE = 64 * 1024  # boundaries, part headers and the small text fields
TEXT_FIELD_MAX = 1024


class _BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes
    fields: dict[str, str]


def _too_large(max_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        f"dataset file exceeds the upload limit of {max_bytes} bytes",
        slug="upload-too-large",
        limit=max_bytes,
    )


async def _counted(stream: AsyncIterator[bytes], budget: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > budget:
            raise _BodyTooLarge
        yield chunk


def _check_headers(request: Request, budget: int, max_bytes: int) -> None:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ProblemError(
            415, "send the dataset as multipart/form-data with a 'file' part", slug="unsupported-media-type"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > budget:
        raise _too_large(max_bytes)


async def read_upload(request: Request, *, max_bytes: int, file_field: str = "file") -> Upload:
    """Parse a multipart body holding one file part and a few short text fields."""
    budget = max_bytes + FORM_ALLOWANCE
    _check_headers(request, budget, max_bytes)
    parser = MultiPartParser(
        request.headers,
        _counted(request.stream(), budget),
        max_files=1,
        max_fields=16,
        max_part_size=TEXT_FIELD_MAX,
    )
    try:
        form = await parser.parse()
    except _BodyTooLarge:
        raise _too_large(max_bytes) from None
    except MultiPartException as exc:
        raise ProblemError(400, f"malformed multipart body: {exc.message}", slug="malformed-upload") from exc
    try:
        upload = form.get(file_field)
        if not isinstance(upload, UploadFile):
            raise FieldValidationError([{"field": file_field, "message": "a file part is required"}])
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return Upload(filename=upload.filename or "data", data=data, fields=fields)
    finally:
        await form.close()
