"""/v1/datasets: upload (validated, with a preview), list and read prompt/answer datasets."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from remix_engine.config import DataConfig
from remix_engine.data import DatasetError, DatasetSummary, detect_format, validate_dataset_bytes
from remix_engine.hub_ids import is_hub_id
from service.api.deps import ArtifactStoreDep, CurrentTenant, Principal, SessionDep, SettingsDep
from service.artifacts import ArtifactStore, dataset_key
from service.dataset_preview import analyse, tokenizer_dir
from service.errors import FieldValidationError, NotFoundError, ProblemError
from service.pagination import decode_cursor, encode_cursor
from service.repositories import datasets as datasets_repo
from service.schemas import DatasetPublic, DatasetsPage
from service.storable import REASON, first_unstorable
from service.uploads import Upload, read_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

FIELD_NAME_MAX = 200  # datasets.prompt_field / answer_field column width
NAME_MAX = 300
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".jsonl, .json or .parquet",
                        },
                        "prompt_field": {"type": "string", "default": "prompt"},
                        "answer_field": {"type": "string", "default": "answer"},
                        "name": {"type": "string", "description": "Defaults to the file name."},
                        "model": {
                            "type": "string",
                            "description": "A model whose chat template renders the preview's first prompt and "
                            "whose tokenizer measures the prompts (its tokenizer files must be on the API host).",
                        },
                        "max_prompt_tokens": {
                            "type": "integer",
                            "description": "With a model: prompts longer than this are counted as overlong.",
                        },
                    },
                }
            }
        },
    }
}


def _form_fields(upload: Upload) -> dict[str, str]:
    fields = {
        "prompt_field": upload.fields.get("prompt_field") or "prompt",
        "answer_field": upload.fields.get("answer_field") or "answer",
        "name": upload.fields.get("name", ""),
        "model": upload.fields.get("model", ""),
        "max_prompt_tokens": upload.fields.get("max_prompt_tokens", ""),
    }
    too_long = [
        {"field": k, "message": f"at most {FIELD_NAME_MAX} characters"}
        for k in ("prompt_field", "answer_field")
        if len(fields[k]) > FIELD_NAME_MAX
    ]
    if too_long:
        raise FieldValidationError(too_long)
    unstorable = first_unstorable({**fields, "file": upload.filename})
    if unstorable is not None:
        raise FieldValidationError([{"field": unstorable, "message": REASON}])
    return fields


def _preview_model(fields: dict[str, str], *, is_admin: bool) -> tuple[str | None, int]:
    """The model named for the preview (a hub id, or a local directory for admin keys) and the token limit."""
    model = fields["model"] or None
    if model is not None and not is_hub_id(model) and not is_admin:
        raise FieldValidationError([{"field": "model", "message": "must be a hub id such as 'org/name'"}])
    raw_limit = fields["max_prompt_tokens"] or str(DataConfig.model_fields["max_prompt_tokens"].default)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 65536:
        raise FieldValidationError([{"field": "max_prompt_tokens", "message": "must be an integer in [1, 65536]"}])
    return model, int(raw_limit)


def _validate(upload: Upload, prompt_field: str, answer_field: str) -> tuple[str, DatasetSummary]:
    try:
        fmt = detect_format(upload.filename)
    except DatasetError as exc:
        raise ProblemError(415, exc.reason, slug="unsupported-dataset-format", field="file") from exc
    try:
        summary = validate_dataset_bytes(upload.data, fmt, prompt_field, answer_field, source=upload.filename)
    except DatasetError as exc:
        raise ProblemError(
            400,
            str(exc),
            title="Invalid dataset",
            slug="invalid-dataset",
            line=exc.line,
            field=exc.field,
            reason=exc.reason,
        ) from exc
    unstorable = first_unstorable({"columns": summary.columns, "rows": summary.preview})
    if unstorable is not None:
        # Training could read such rows, but the preview and column names are stored in the database.
        raise ProblemError(
            400,
            f"dataset {unstorable}: {REASON}",
            title="Invalid dataset",
            slug="invalid-dataset",
            field="file",
        )
    return fmt, summary


def _store(
    session: Session, store: ArtifactStore, caller: Principal, upload: Upload, fields: dict[str, str]
) -> DatasetPublic:
    model, max_prompt_tokens = _preview_model(fields, is_admin=caller.is_admin)
    fmt, summary = _validate(upload, fields["prompt_field"], fields["answer_field"])
    folder = None
    if model is not None:
        folder = tokenizer_dir(model, is_admin=caller.is_admin, is_hub_id=is_hub_id(model))
    analysis = analyse(summary, model, folder, max_prompt_tokens)
    unstorable = first_unstorable(analysis)
    if unstorable is not None:
        raise ProblemError(400, f"dataset preview {unstorable}: {REASON}", title="Invalid dataset",
                           slug="invalid-dataset", field="file")  # fmt: skip
    tenant_id = caller.tenant_id
    dataset_id = uuid.uuid4()
    key = dataset_key(dataset_id, upload.filename)
    store.put_bytes(key, upload.data)
    try:
        row = datasets_repo.create_dataset(
            session,
            dataset_id=dataset_id,
            tenant_id=tenant_id,
            name=(fields["name"] or upload.filename)[:NAME_MAX],
            format=fmt,
            uri=key,
            num_rows=summary.num_rows,
            size_bytes=len(upload.data),
            prompt_field=fields["prompt_field"],
            answer_field=fields["answer_field"],
            columns=summary.columns,
            preview=summary.preview,
            analysis=analysis,
        )
    except BaseException:
        store.delete(key)  # no orphan files when the row cannot be written
        raise
    return DatasetPublic.model_validate(row)


@router.post(
    "",
    status_code=201,
    openapi_extra=_UPLOAD_SCHEMA,
    responses={400: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM},
)
async def upload_dataset(
    *,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: ArtifactStoreDep,
    caller: CurrentTenant,
) -> DatasetPublic:
    """Upload a JSONL/JSON/parquet file of prompts and answers, validated exactly as training reads it."""
    upload = await read_upload(request, max_bytes=settings.max_upload_bytes)
    fields = _form_fields(upload)
    # Parsing and DB writes are blocking: keep them off the event loop.
    return await run_in_threadpool(_store, session, store, caller, upload, fields)


@router.get("", responses={400: PROBLEM})
def list_datasets(
    *,
    session: SessionDep,
    caller: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="Cursor from a previous page's next_cursor.")] = None,
) -> DatasetsPage:
    """List the caller's datasets, newest first."""
    cursor = decode_cursor(after) if after else None
    rows, has_more = datasets_repo.list_datasets(session, caller.tenant_id, limit=limit, after=cursor)
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if rows and has_more else None
    return DatasetsPage(
        data=[DatasetPublic.model_validate(r) for r in rows], has_more=has_more, next_cursor=next_cursor
    )


@router.get("/{dataset_id}", responses={404: PROBLEM})
def get_dataset(*, dataset_id: uuid.UUID, session: SessionDep, caller: CurrentTenant) -> DatasetPublic:
    """Read one dataset with its preview."""
    row = datasets_repo.get_dataset(session, caller.tenant_id, dataset_id)
    if row is None:
        raise NotFoundError("dataset", dataset_id)
    return DatasetPublic.model_validate(row)
