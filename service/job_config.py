"""Turn a `JobCreate` request into a validated TrainConfig dict.

The request's base_model and datasets are merged into the config before validation, so the
stored config is exactly what the worker runs. Tenants may only name builtin data (the addition
task, the builtin eval sets such as aime24 or math500) or their own uploaded datasets, and as the
model a hub id, a builtin model, a checkpoint of one of their own jobs (`job:<id>[@<step>]`) or a
directory inside the operator's REMIX_MODEL_DIRS: other server-local paths and remote code are
reserved to admin keys, because a worker must never read another tenant's files.

`job:<id>` is refused (422) unless the tenant has that job and it has a checkpoint (at that step, with
`@<step>`); a job of another tenant gets the same answer as one that does not exist, so nothing tells
a tenant which job ids exist. The stored config names the step it starts from (`job:<id>@<step>`, the
newest checkpoint when none was given), so a retried or resumed job always starts from the same weights.
A directory accepted through REMIX_MODEL_DIRS is stored as its real path (symlinks and '..' resolved).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from remix_engine.config import (
    BUILTIN_DATASET_IDS,
    BUILTIN_MODEL_IDS,
    EvalSetSpec,
    LocalTrackingRefused,
    MlflowIntegration,
    TrainConfig,
    check_tracking_uri,
    job_model_name,
    parse_job_model,
)
from remix_engine.context_length import ContextLengthError, check_vllm_context, model_position_limit
from remix_engine.eval_benchmarks import BENCHMARK_NAMES
from remix_engine.hub_ids import is_hub_id
from remix_engine.model_shape import offline_model_config, offline_model_shape
from remix_engine.preflight import GiB, InsufficientMemoryError, check_fits
from remix_engine.reward_specs import JUDGE_REWARDS
from service.errors import FieldValidationError, ProblemError, pydantic_errors
from service.models import Dataset
from service.schemas import JobCreate
from service.settings import DEFAULT_GPU_MEMORY_GIB, DEFAULT_MAX_TOKENS_PER_STEP
from service.storable import REASON, first_unstorable

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = BUILTIN_MODEL_IDS
BUILTIN_DATASETS = BUILTIN_DATASET_IDS
_MODEL_FIELD = "config.model.name_or_path"
_MAX_JOB_CHAIN = 16  # job:<a> from job:<b> from ...: how far the pre-flight follows to the base model


@dataclass(frozen=True)
class CheckpointSource:
    """A job of the submitting tenant named by `job:<id>`: its checkpoint steps and its own config.model."""

    steps: tuple[int, ...]
    model: dict[str, Any]


# The submitting tenant's job by id (a lowercase UUID string), or None: absent or another tenant's.
JobLookup = Callable[[str], CheckpointSource | None]


def request_hash(body: JobCreate) -> str:
    """Stable digest of a request body, compared when an Idempotency-Key is reused."""
    # Without metadata the digest is the one computed before jobs had metadata, so keys stay reusable.
    fields = body.model_dump(mode="json", exclude=None if body.metadata else {"metadata"})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    section = config.setdefault(name, {})
    if not isinstance(section, dict):
        raise FieldValidationError([{"field": f"config.{name}", "message": "must be an object"}])
    return section


def _check_user_data_paths(data: dict[str, Any], *, is_admin: bool) -> None:
    for key in ("train_path", "eval_path"):
        value = data.get(key)
        if value is None or is_admin or (isinstance(value, str) and value.startswith(BUILTIN_PREFIX)):
            continue
        raise FieldValidationError(
            [
                {
                    "field": f"config.data.{key}",
                    "message": "only builtin datasets here; upload a file and pass its id",
                }
            ]
        )


def _check_builtin_ids(config: TrainConfig) -> None:
    """Builtin ids are known here, so an unknown one is refused now rather than failing on a worker."""
    errors = []
    if config.model.name_or_path.startswith(BUILTIN_PREFIX) and config.model.name_or_path not in BUILTIN_MODELS:
        errors.append(
            {
                "field": "config.model.name_or_path",
                "message": f"unknown builtin model; available: {', '.join(BUILTIN_MODELS)}",
            }
        )
    for key in ("train_path", "eval_path"):
        value = getattr(config.data, key)
        if value and value.startswith(BUILTIN_PREFIX) and value not in BUILTIN_DATASETS:
            errors.append(
                {
                    "field": f"config.data.{key}",
                    "message": f"unknown builtin dataset; available: {', '.join(BUILTIN_DATASETS)}",
                }
            )
    if errors:
        raise FieldValidationError(errors)


def _check_eval_set_paths(config: TrainConfig, *, is_admin: bool) -> None:
    # File eval sets are read by path on the worker: a tenant could name any file there. Builtin
    # sets (by name) are files of the installed package, open to every tenant.
    if is_admin:
        return
    errors = [
        {
            "field": f"config.eval_sets.{index}.path",
            "message": (
                "server paths are reserved to admin keys; name a builtin set "
                f"({', '.join(BENCHMARK_NAMES)}), or upload the set and pass eval_dataset_id"
            ),
        }
        for index, spec in enumerate(config.eval_sets)
        if isinstance(spec, EvalSetSpec)
    ]
    if errors:
        raise FieldValidationError(errors)


def _inside(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def allowed_model_dir(name: str, model_dirs: Sequence[str]) -> str | None:
    """The real path of `name` when it is one of `model_dirs` or inside one, else None.

    Both sides are resolved with realpath (symlinks, '..', '.', repeated slashes) before the
    containment check, so a link inside an allowed directory that points out of it is refused, as is
    /models/../etc. Only absolute names are considered.
    """
    if not model_dirs or not os.path.isabs(name) or "\x00" in name:
        return None
    resolved = os.path.realpath(name)
    if any(_inside(resolved, os.path.realpath(root)) for root in model_dirs):
        return resolved
    return None


def _check_model_name(name: str, *, is_admin: bool, model_dirs: Sequence[str] = ()) -> str:
    """The model name to store: as given, or an allowed directory's real path; 422 for anything else."""
    if is_admin or name.startswith(BUILTIN_PREFIX) or is_hub_id(name):
        return name
    allowed = allowed_model_dir(name, model_dirs)
    if allowed is not None:
        return allowed
    raise FieldValidationError(
        [
            {
                "field": _MODEL_FIELD,
                "message": "must be a hub id such as 'org/name', a builtin model, job:<id>[@<step>] naming a "
                "checkpoint of one of your jobs, or a directory inside the operator's REMIX_MODEL_DIRS",
            }
        ]
    )


def _model_error(message: str) -> FieldValidationError:
    return FieldValidationError([{"field": _MODEL_FIELD, "message": message}])


def _pin_job_checkpoint(job_id: str, step: int | None, lookup: JobLookup | None) -> tuple[str, dict[str, Any]]:
    """`job:<id>@<step>` of an existing checkpoint of the tenant's job, and that job's config.model."""
    source = None if lookup is None else lookup(job_id)
    if source is None:  # absent, or another tenant's: the same answer
        raise _model_error(f"job {job_id} does not exist")
    if not source.steps:
        raise _model_error(f"job {job_id} has no checkpoint yet; name it once it has saved one")
    if step is None:
        step = max(source.steps)
    elif step not in source.steps:
        kept = ", ".join(str(s) for s in sorted(source.steps)[-10:])
        raise _model_error(f"job {job_id} has no checkpoint at step {step}; it has steps {kept}")
    return job_model_name(job_id, step), source.model


def _preflight_model(config: TrainConfig, source_model: dict[str, Any], lookup: JobLookup | None) -> TrainConfig:
    """`config` with the model of the job chain's base model, whose architecture every checkpoint of the
    chain has: what the memory and context pre-flights read (the checkpoint itself is on the workers)."""
    model = source_model
    for _ in range(_MAX_JOB_CHAIN):
        name = model.get("name_or_path")
        reference = parse_job_model(name) if isinstance(name, str) else None
        if reference is None:
            break
        source = None if lookup is None else lookup(reference[0])
        if source is None:
            return config  # the chain cannot be followed (the source is gone): the worker checks
        model = source.model
    name = model.get("name_or_path")
    if not isinstance(name, str) or parse_job_model(name) is not None:
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": name})})


def _merge_request(body: JobCreate, train: Dataset | None, evaluation: Dataset | None) -> dict[str, Any]:
    config = copy.deepcopy(body.config)
    model, data = _section(config, "model"), _section(config, "data")
    if body.base_model is not None:
        if model.get("name_or_path", body.base_model) != body.base_model:
            raise FieldValidationError(
                [{"field": "base_model", "message": "differs from config.model.name_or_path; give only one"}]
            )
        model["name_or_path"] = body.base_model
    if train is not None:
        if "train_path" in data:
            raise FieldValidationError(
                [{"field": "dataset_id", "message": "conflicts with config.data.train_path; give only one"}]
            )
        # The artifact key; the worker resolves it to a local file through the artifact store.
        data["train_path"] = train.uri
        data["prompt_field"], data["answer_field"] = train.prompt_field, train.answer_field
    if evaluation is not None:
        if "eval_path" in data:
            raise FieldValidationError(
                [
                    {
                        "field": "eval_dataset_id",
                        "message": "conflicts with config.data.eval_path; give only one",
                    }
                ]
            )
        data["eval_path"] = evaluation.uri
    return config


def check_judge_available(functions: Any, *, configured: bool, prefix: str) -> None:
    """Refuse (422, naming each judge reward's name field) judge rewards where the operator set no judge
    endpoint (REMIX_JUDGE_URL and REMIX_JUDGE_MODEL): the config schema cannot see the settings."""
    if configured:
        return
    errors = [
        {
            "field": f"{prefix}functions.{index}.name",
            "message": "the judge reward needs a judge endpoint and none is configured on this service "
            "(the operator sets REMIX_JUDGE_URL and REMIX_JUDGE_MODEL)",
        }
        for index, spec in enumerate(functions)
        if spec.name in JUDGE_REWARDS
    ]
    if errors:
        raise FieldValidationError(errors)


def check_tokens_per_step(config: TrainConfig, max_tokens_per_step: int) -> None:
    """Refuse (422) a job whose steps would generate more tokens than the operator allows."""
    rollout = config.rollout
    tokens = rollout.prompts_per_step * rollout.group_size * rollout.max_new_tokens
    if tokens <= max_tokens_per_step:
        return
    message = (
        f"a step generates up to {tokens} tokens (prompts_per_step {rollout.prompts_per_step} x group_size "
        f"{rollout.group_size} x max_new_tokens {rollout.max_new_tokens}); this service allows at most "
        f"{max_tokens_per_step} (REMIX_MAX_TOKENS_PER_STEP)"
    )
    raise FieldValidationError(
        [
            {"field": f"config.rollout.{name}", "message": message}
            for name in ("prompts_per_step", "group_size", "max_new_tokens")
        ]
    )


def check_gpu_memory(config: TrainConfig, gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB) -> None:
    """Refuse (422) a job whose pre-flight estimate does not fit one GPU of `gpu_memory_gib`.

    Runs when the model's config can be read without network (builtin models, local folders, hub ids
    in the local Hugging Face cache); otherwise the worker's own pre-flight decides at job start.
    """
    shape = offline_model_shape(config.model)
    if shape is None:
        return
    available = int(gpu_memory_gib * GiB)
    try:
        check_fits(config, available, shape, world_size=config.distributed.world_size)
    except InsufficientMemoryError as error:
        raise ProblemError(
            422,
            str(error),
            title="Job does not fit in GPU memory",
            slug="insufficient-gpu-memory",
            estimate_gib=round(error.estimate.total / GiB, 2),
            available_gib=round(available / GiB, 2),
            largest={name: round(size / GiB, 2) for name, size in error.estimate.largest()},
        ) from error


def check_context_length(config: TrainConfig) -> None:
    """Refuse (422) a `rollout.backend: vllm` job whose responses leave no room for a prompt in the model's
    context (remix_engine/context_length.py), when the model's config can be read without network."""
    if config.rollout.backend != "vllm":
        return
    model_config = offline_model_config(config.model)
    if model_config is None:
        return  # the worker checks at job start, before loading any weights
    try:
        check_vllm_context(config, model_position_limit(model_config))
    except ContextLengthError as error:
        raise FieldValidationError([{"field": f"config.{error.field}", "message": str(error)}]) from error


def _check_tracking_uris(config: TrainConfig, *, allow_local: bool) -> None:
    errors = []
    for index, integration in enumerate(config.integrations):
        if isinstance(integration, MlflowIntegration):
            try:
                check_tracking_uri(integration.tracking_uri, allow_local=allow_local)
            except LocalTrackingRefused as refused:
                errors.append({"field": f"config.integrations.{index}.tracking_uri", "message": str(refused)})
    if errors:
        raise FieldValidationError(errors)


def build_train_config(
    body: JobCreate,
    *,
    train: Dataset | None,
    evaluation: Dataset | None,
    is_admin: bool,
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    max_tokens_per_step: int = DEFAULT_MAX_TOKENS_PER_STEP,
    judge_configured: bool = False,
    model_dirs: Sequence[str] = (),
    jobs: JobLookup | None = None,
    tracking_allow_local: bool = False,
) -> TrainConfig:
    """Merge and validate; errors name the offending field (e.g. config.algorithm.clip_eps).

    Also refused: steps generating more than `max_tokens_per_step` tokens (REMIX_MAX_TOKENS_PER_STEP),
    vLLM jobs whose responses fill the model's whole context, jobs whose memory pre-flight does not
    fit one GPU of `gpu_memory_gib` (REMIX_GPU_MEMORY_GIB), judge rewards where no judge endpoint is
    configured (`judge_configured`, REMIX_JUDGE_URL), local model directories outside `model_dirs`
    (REMIX_MODEL_DIRS) for non-admin keys, MLflow tracking URIs other than http(s) unless
    `tracking_allow_local` (REMIX_TRACKING_ALLOW_LOCAL), and `job:<id>[@<step>]` models that `jobs` (the submitting
    tenant's jobs) does not know or that have no such checkpoint.
    """
    unstorable = first_unstorable(body.model_dump(mode="json"))
    if unstorable is not None:
        raise FieldValidationError([{"field": unstorable, "message": REASON}])
    if isinstance(body.config.get("data"), dict):
        _check_user_data_paths(body.config["data"], is_admin=is_admin)
    merged = _merge_request(body, train, evaluation)
    try:
        config = TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise FieldValidationError(pydantic_errors(exc.errors(), prefix=("config",))) from exc
    name = config.model.name_or_path
    reference = parse_job_model(name)
    source_model: dict[str, Any] | None = None
    if reference is not None:
        stored, source_model = _pin_job_checkpoint(*reference, jobs)
    else:
        stored = _check_model_name(name, is_admin=is_admin, model_dirs=model_dirs)
    if stored != name:
        config = config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": stored})})
    _check_builtin_ids(config)
    _check_eval_set_paths(config, is_admin=is_admin)
    _check_tracking_uris(config, allow_local=tracking_allow_local)
    if config.model.trust_remote_code and not is_admin:
        raise ProblemError(
            403,
            "config.model.trust_remote_code requires an admin API key",
            slug="forbidden",
            field="config.model",
        )
    check_judge_available(config.reward.functions, configured=judge_configured, prefix="config.reward.")
    check_tokens_per_step(config, max_tokens_per_step)
    checked = config if source_model is None else _preflight_model(config, source_model, jobs)
    check_context_length(checked)
    check_gpu_memory(checked, gpu_memory_gib)
    return config
