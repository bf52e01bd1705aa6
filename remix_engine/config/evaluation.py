"""Extra held-out sets of a job config: builtin benchmarks by name, or files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator, field_validator

from remix_engine.config.limits import MAX_EVAL_PROMPTS, MAX_EVAL_SAMPLES, StrictModel
from remix_engine.eval_benchmarks import BENCHMARK_NAMES, unknown_benchmark_message

_EVAL_SET_SAMPLES = Field(
    None,
    ge=0,
    le=MAX_EVAL_SAMPLES,
    description="k of avg@k Pass@1 for this set (0: greedy Pass@1 only); null: the job's eval_samples.",
)


class EvalSetSpec(StrictModel):
    """An extra held-out set read from a file (e.g. a benchmark file); server paths are admin-only in the API."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Metric prefix.")
    path: str = Field(min_length=1, description="JSONL, JSON or parquet file with prompts and answers.")
    prompt_field: str = Field("prompt", min_length=1, description="Column holding the prompt text.")
    answer_field: str = Field("answer", min_length=1, description="Column holding the reference answer.")
    size: int = Field(500, ge=1, le=MAX_EVAL_PROMPTS, description="At most this many prompts are evaluated.")
    samples: int | None = _EVAL_SET_SAMPLES


class BuiltinEvalSetSpec(StrictModel):
    """A builtin evaluation set shipped with ReMix, selected by name (remix_engine/eval_benchmarks.py)."""

    name: str = Field(
        description=f"One of {', '.join(BENCHMARK_NAMES)}; also the metric prefix (eval_<name>/accuracy).",
        json_schema_extra={"enum": list(BENCHMARK_NAMES)},
    )
    size: int | None = Field(
        None, ge=1, le=MAX_EVAL_PROMPTS, description="Evaluate only the first `size` problems; null: all of them."
    )
    samples: int | None = _EVAL_SET_SAMPLES

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in BENCHMARK_NAMES:
            raise ValueError(unknown_benchmark_message(value))
        return value


def _eval_set_entry(value: Any, handler: ValidatorFunctionWrapHandler) -> EvalSetSpec | BuiltinEvalSetSpec:
    """A builtin name ("aime24"), a builtin object ({name, size?, samples?}) or a file set ({name, path, ...}).

    Dispatched by shape and validated by one model, so errors are located at that model's fields
    (eval_sets.0.name), never under a union member's name.
    """
    del handler  # the union's own validation would report every member's errors
    if isinstance(value, EvalSetSpec | BuiltinEvalSetSpec):
        return value
    if isinstance(value, str):
        return BuiltinEvalSetSpec.model_validate({"name": value})
    if isinstance(value, dict):
        return (EvalSetSpec if "path" in value else BuiltinEvalSetSpec).model_validate(value)
    raise ValueError(
        "an eval set is a builtin name (one of " + ", ".join(BENCHMARK_NAMES) + ") or an object with a name"
    )


EvalSetEntry = Annotated[
    BuiltinEvalSetSpec | EvalSetSpec,
    WrapValidator(_eval_set_entry, json_schema_input_type=Literal[BENCHMARK_NAMES] | BuiltinEvalSetSpec | EvalSetSpec),
]

