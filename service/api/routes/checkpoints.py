"""/v1/jobs/{id}/checkpoints: list a job's checkpoints and download one as a tar.gz."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse

from remix_engine.checkpoint_dirs import checkpoint_dir_name
from service.api.deps import ArtifactStoreDep, CurrentTenant, SessionDep
from service.api.routes.jobs import PROBLEM, owned_job
from service.archive import tar_gz_stream
from service.errors import NotFoundError, ProblemError
from service.repositories import job_outputs
from service.schemas import CheckpointPublic, CheckpointsList

router = APIRouter(prefix="/v1/jobs", tags=["checkpoints"])

# Optimizer/RNG/replay state is for resuming on a worker, not part of the published model.
EXCLUDED_DIRS = ("trainer_state/",)


@router.get("/{job_id}/checkpoints", responses={404: PROBLEM})
def list_checkpoints(
    *, job_id: uuid.UUID, request: Request, session: SessionDep, caller: CurrentTenant
) -> CheckpointsList:
    """Checkpoints of a job, by step, with their metrics and download links."""
    job = owned_job(session, caller, job_id)
    out = []
    for row in job_outputs.list_checkpoints(session, job.id):
        item = CheckpointPublic.model_validate(row)
        item.download_url = request.app.url_path_for("download_checkpoint", job_id=str(job.id), step=str(row.step))
        out.append(item)
    return CheckpointsList(data=out)


@router.get(
    "/{job_id}/checkpoints/{step}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, 404: PROBLEM, 410: PROBLEM, 422: PROBLEM},
)
def download_checkpoint(
    *,
    job_id: uuid.UUID,
    step: Annotated[int, Path(ge=0, le=10_000_000)],
    session: SessionDep,
    store: ArtifactStoreDep,
    caller: CurrentTenant,
) -> StreamingResponse:
    """The Hugging Face folder (weights, config, tokenizer) of one checkpoint as a streamed tar.gz."""
    job = owned_job(session, caller, job_id)
    row = job_outputs.get_checkpoint(session, job.id, step)
    if row is None:
        raise NotFoundError(f"checkpoint of job {job.id} at step", step)
    uri = row.uri
    session.close()  # the archive streams for a while; do not hold a DB connection meanwhile
    files = [
        f
        for f in store.iter_files(uri)
        if not f.relpath.startswith(EXCLUDED_DIRS) and not f.relpath.rsplit("/", 1)[-1].startswith(".tmp-")
    ]
    if not files:
        raise ProblemError(410, f"the files of checkpoint step {step} are no longer stored", slug="checkpoint-gone")
    root = checkpoint_dir_name(step)
    filename = f"{job.id}-{root}.tar.gz"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(tar_gz_stream(store, files, root), media_type="application/gzip", headers=headers)
