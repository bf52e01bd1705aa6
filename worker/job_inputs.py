"""What a job trains from and writes to on this worker: its config with local paths, and its output folder.

Uploaded datasets (artifact keys) become local files, a `job:<id>[@<step>]` model the local folder of
that checkpoint, and the output folder is the store's own folder or a local cache of a remote store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from remix_engine.config import TrainConfig, parse_job_model
from service.artifacts import ArtifactStore, LocalArtifactStore, get_artifact_store
from service.models import Checkpoint, Dataset, Job
from service.settings import Settings

ARTIFACT_CACHE = ".worker-cache"  # under the artifacts dir: this worker's local copies of the store's files
MODEL_CACHE = "models"  # under the worker's artifact cache: checkpoints of other jobs a job starts from


class ModelSourceError(ValueError):
    """`model.name_or_path: job:<id>[@<step>]` names no checkpoint this job may start from."""


def resolve_model(job: Job, sessions: sessionmaker[Session], store: ArtifactStore, cache: Path) -> str | None:
    """The local folder of the checkpoint `job:<id>[@<step>]` names (downloaded from a remote store), or
    None when the job's model is no such reference. Only a job of the same tenant is accepted (the API
    checked it; checked again here), and without a step its newest checkpoint."""
    name = TrainConfig.model_validate(job.config).model.name_or_path
    reference = parse_job_model(name)
    if reference is None:
        return None
    source_id, step = reference
    with sessions() as session:
        tenant = session.scalar(select(Job.tenant_id).where(Job.id == uuid.UUID(source_id)))
        if tenant is None or tenant != job.tenant_id:
            raise ModelSourceError(f"cannot load model {name!r}: job {source_id} does not exist")
        query = select(Checkpoint).where(Checkpoint.job_id == uuid.UUID(source_id))
        if step is not None:
            query = query.where(Checkpoint.step == step)
        checkpoint = session.scalars(query.order_by(Checkpoint.step.desc()).limit(1)).first()
    if checkpoint is None or not store.exists(checkpoint.uri):
        which = "any checkpoint" if step is None else f"a checkpoint at step {step}"
        raise ModelSourceError(
            f"cannot load model {name!r}: job {source_id} no longer has {which} (pruned by its retention, or deleted)"
        )
    return str(store.local_path(checkpoint.uri, cache / MODEL_CACHE))


def resolve_config(job: Job, sessions: sessionmaker[Session], store: ArtifactStore, cache: Path) -> TrainConfig:
    """The job's TrainConfig with uploaded datasets (artifact keys) replaced by local file paths, and a
    `job:<id>[@<step>]` model by the local folder of that checkpoint (`resolve_model`)."""
    config = TrainConfig.model_validate(job.config)
    model_path = resolve_model(job, sessions, store, cache)
    if model_path is not None:
        config = config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": model_path})})
    data = config.data
    updates: dict[str, str] = {}
    if job.dataset_id is not None:
        with sessions() as session:
            dataset = session.get_one(Dataset, job.dataset_id)
        updates["train_path"] = str(store.local_path(dataset.uri, cache))
    elif data.train_path.startswith("datasets/"):
        updates["train_path"] = str(store.local_path(data.train_path, cache))
    if data.eval_path and data.eval_path.startswith("datasets/"):
        updates["eval_path"] = str(store.local_path(data.eval_path, cache))
    if not updates:
        return config
    return config.model_copy(update={"data": data.model_copy(update=updates)})


def job_output_dir(store: ArtifactStore, job_id: uuid.UUID, cache: Path) -> tuple[Path, bool]:
    """Where the trainer writes (`jobs/<id>/` of the store) and whether checkpoints must be uploaded."""
    prefix = f"jobs/{job_id}/"
    if isinstance(store, LocalArtifactStore):
        path = store.path_for(prefix)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    if store.exists(prefix + "checkpoints/"):  # a remote store: fetch earlier checkpoints to resume
        store.local_path(prefix + "checkpoints/", cache)
    path = cache / "jobs" / str(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path, True


@dataclass(frozen=True)
class JobInputs:
    """What a worker trains a job from and into: the store, the config with local paths, the output folder."""

    store: ArtifactStore
    config: TrainConfig
    output_dir: Path
    upload_checkpoints: bool  # the output folder is a local cache of a remote store


def prepare_job_inputs(job: Job, sessions: sessionmaker[Session], settings: Settings) -> JobInputs:
    """`resolve_config` and `job_output_dir` of `job` on this worker's store and artifact cache."""
    store = get_artifact_store(settings)
    cache = Path(settings.artifacts_dir).expanduser() / ARTIFACT_CACHE
    config = resolve_config(job, sessions, store, cache)
    output_dir, upload = job_output_dir(store, job.id, cache)
    return JobInputs(store, config, output_dir, upload)
