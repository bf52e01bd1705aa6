"""Turn a `JobCreate` request into a validated TrainConfig dict.

The request's base_model and datasets are merged into the config before validation, so the
stored config is exactly what the worker runs. Tenants may only name builtin data (the addition
task, the builtin eval sets such as aime24 or math500) or their own uploaded datasets, and hub ids
or builtin models: server-local paths and remote code are reserved to admin keys, because a worker
must never read another tenant's files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from pydantic import ValidationError

from remix_engine.config import BUILTIN_MODEL_IDS, TOY_DATASET_ID, EvalSetSpec, TrainConfig
from remix_engine.context_length import ContextLengthError, check_vllm_context, model_position_limit
from remix_engine.eval_benchmarks import BENCHMARK_NAMES
from remix_engine.preflight import GiB, InsufficientMemoryError, check_fits, offline_model_config, offline_model_shape
from service.errors import FieldValidationError, ProblemError, pydantic_errors
from service.models import Dataset
from service.schemas import JobCreate
from service.settings import DEFAULT_GPU_MEMORY_GIB, DEFAULT_MAX_TOKENS_PER_STEP
from service.storable import REASON, first_unstorable

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = BUILTIN_MODEL_IDS
BUILTIN_DATASETS = (TOY_DATASET_ID,)
# 'name' or 'org/name' as on the Hugging Face hub; no path tricks.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def request_hash(body: JobCreate) -> str:
    """Stable digest of a request body, compared when an Idempotency-Key is reused."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
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


def _check_model_name(name: str, *, is_admin: bool) -> None:
    if is_admin or name.startswith(BUILTIN_PREFIX) or (_HUB_ID.match(name) and ".." not in name):
        return
    raise FieldValidationError(
        [
            {
                "field": "config.model.name_or_path",
                "message": "must be a hub id such as 'org/name' or a builtin model",
            }
        ]
    )


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
        check_fits(config, available, shape, world_size=config.distributed.num_processes)
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


def build_train_config(
    body: JobCreate,
    *,
    train: Dataset | None,
    evaluation: Dataset | None,
    is_admin: bool,
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    max_tokens_per_step: int = DEFAULT_MAX_TOKENS_PER_STEP,
) -> TrainConfig:
    """Merge and validate; errors name the offending field (e.g. config.algorithm.clip_eps).

    Also refused: steps generating more than `max_tokens_per_step` tokens (REMIX_MAX_TOKENS_PER_STEP),
    vLLM jobs whose responses fill the model's whole context, and jobs whose memory pre-flight does not
    fit one GPU of `gpu_memory_gib` (REMIX_GPU_MEMORY_GIB).
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
    _check_model_name(config.model.name_or_path, is_admin=is_admin)
    _check_builtin_ids(config)
    _check_eval_set_paths(config, is_admin=is_admin)
    if config.model.trust_remote_code and not is_admin:
        raise ProblemError(
            403,
            "config.model.trust_remote_code requires an admin API key",
            slug="forbidden",
            field="config.model",
        )
    check_tokens_per_step(config, max_tokens_per_step)
    check_context_length(config)
    check_gpu_memory(config, gpu_memory_gib)
    return config
