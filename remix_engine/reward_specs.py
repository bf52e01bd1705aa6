"""The one list of reward functions: each reward's name, what it does and the kwargs it takes.

`REWARD_KINDS` is the registry of names a job config may use (`RewardSpec.name` is validated
against it and the JSON schema lists it as an enum); `remix_engine/rewards/functions.py` registers an
implementation under each of these names, and a test checks that the two agree. The kwargs are
checked here, at submission, so a config the API accepts always runs on a worker.

Light on purpose: pydantic and google-re2 only (the API process imports it, never torch).

Every reward receives, besides the completion and the reference answer, the dataset *row* of the
sample (`rows`, one dict per completion, as TRL passes the dataset's other columns to reward
functions): the prompt under "prompt" and every other JSON-serialisable column except the answer
(see `rewards.reward_row`).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_REWARD_FUNCTIONS = 16
# The "python" reward (remix_engine/sandbox.py): user code and the limits a job may set for it.
PYTHON_REWARD_KWARGS = {"code", "timeout_s", "memory_mb"}
PYTHON_REWARD_MAX_CODE_CHARS = 64 * 1024
REGEX_REWARD_MAX_PATTERN_CHARS = 1024
STRING_CHECK_MAX_REFERENCE_CHARS = 64 * 1024
MAX_FIELD_NAME_CHARS = 200
JUDGE_MAX_RUBRIC_CHARS = 16 * 1024
JUDGE_MAX_PLACEHOLDERS = 16  # each one copies a value (the completion, a row field) into the prompt
JUDGE_MAX_TIMEOUT_S = 120.0
JUDGE_MAX_TOKENS = 8192
# A placeholder of a judge rubric: {completion}, {answer} or {<row field>}; other braces are literal.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Kwargs(BaseModel):
    # The same strictness as the job config (remix_engine/config/): no coercion, no NaN.
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), strict=True, allow_inf_nan=False
    )


class NoRewardKwargs(_Kwargs):
    """math_verify, exact_match and format take no kwargs."""


class RegexRewardKwargs(_Kwargs):
    """The kwargs of the 'regex' reward, checked before a job is queued."""

    pattern: str = Field(
        min_length=1,
        max_length=REGEX_REWARD_MAX_PATTERN_CHARS,
        description="RE2 syntax (no backreferences or lookaround): the engine matches with google-re2.",
    )
    target: Literal["boxed", "completion"] = Field(
        "boxed", description="'boxed': full-match the \\boxed{} answer; 'completion': search the whole text."
    )

    @field_validator("pattern")
    @classmethod
    def _re2_compiles(cls, value: str) -> str:
        import re2  # google-re2: what the engine runs the pattern with

        options = re2.Options()
        options.log_errors = False
        try:
            re2.compile(value, options=options)
        except re2.error as error:
            reason = error.args[0] if error.args else error
            reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            raise ValueError(f"regex reward: RE2 cannot compile the pattern: {reason}") from None
        return value


class StringCheckKwargs(_Kwargs):
    """The kwargs of 'string_check' (like OpenAI's string_check grader): compare the completion with a
    reference taken from the row (`field`) or given literally (`reference`)."""

    operation: Literal["eq", "ne", "contains", "ilike"] = Field(
        description=(
            "'eq': input equals the reference; 'ne': it differs; 'contains': the reference occurs in the input "
            "(case-sensitive); 'ilike': the input matches the reference as a case-insensitive SQL LIKE pattern "
            "('%' any run of characters, '_' one character, '\\' escapes them), matched in linear time."
        )
    )
    field: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_FIELD_NAME_CHARS,
        description="Where the reference comes from: 'answer' (the reference answer, the default) or a column "
        "of the row (e.g. 'prompt', 'label'). Not with 'reference'.",
    )
    reference: str | None = Field(
        None,
        max_length=STRING_CHECK_MAX_REFERENCE_CHARS,
        description="A literal reference (or LIKE pattern) instead of a row field.",
    )
    target: Literal["completion", "boxed"] = Field(
        "completion",
        description="The input: 'completion' (the whole completion) or 'boxed' (its last \\boxed{} answer; "
        "none scores 0). Input and reference are compared with surrounding whitespace stripped.",
    )

    @model_validator(mode="after")
    def _one_reference(self) -> StringCheckKwargs:
        if self.field is not None and self.reference is not None:
            raise ValueError("string_check: give either 'field' (a row column) or 'reference' (a literal), not both")
        return self


class JudgeKwargs(_Kwargs):
    """The kwargs of 'judge' (model as judge). The endpoint is the operator's (REMIX_JUDGE_URL), never the job's."""

    rubric: str = Field(
        min_length=1,
        max_length=JUDGE_MAX_RUBRIC_CHARS,
        description=(
            "The judge's prompt. {completion}, {answer} and {<row field>} (e.g. {prompt}) are replaced by plain "
            "substitution (no format specs; other braces, and placeholders the row lacks, stay as written); it "
            "must contain {completion}. The judge must reply with a score in [0, 1]: a JSON object "
            '{"score": x} or a final number.'
        ),
    )
    timeout_s: float = Field(30.0, gt=0.0, le=JUDGE_MAX_TIMEOUT_S, description="Per request to the judge.")
    max_tokens: int = Field(512, ge=1, le=JUDGE_MAX_TOKENS, description="Longest judge reply, in tokens.")

    @field_validator("rubric")
    @classmethod
    def _rubric_shows_the_completion(cls, value: str) -> str:
        names = PLACEHOLDER.findall(value)
        if "completion" not in names:
            raise ValueError("judge rubric must contain the placeholder {completion}")
        if len(names) > JUDGE_MAX_PLACEHOLDERS:
            raise ValueError(
                f"judge rubric has {len(names)} placeholders; at most {JUDGE_MAX_PLACEHOLDERS} (each copies a value)"
            )
        return value


def check_python_reward(kwargs: dict[str, Any]) -> None:
    """The 'python' reward needs source code defining reward(completion, answer[, row]); limits are bounded."""
    unknown = set(kwargs) - PYTHON_REWARD_KWARGS
    if unknown:
        raise ValueError(f"python reward: unknown kwargs {sorted(unknown)}; allowed: {sorted(PYTHON_REWARD_KWARGS)}")
    code = kwargs.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ValueError("python reward needs kwargs.code: source defining def reward(completion, answer)")
    if len(code) > PYTHON_REWARD_MAX_CODE_CHARS:
        raise ValueError(f"python reward: code longer than {PYTHON_REWARD_MAX_CODE_CHARS} characters")
    try:
        module = ast.parse(code)
    except SyntaxError as error:
        raise ValueError(f"python reward: code does not parse: {error.msg} (line {error.lineno})") from None
    functions = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "reward"]
    if not functions:
        raise ValueError("python reward: code must define a top-level def reward(completion, answer)")
    args = functions[-1].args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)

    def takes(count: int) -> bool:  # can be called with `count` positional arguments
        return required <= count and (count <= len(positional) or args.vararg is not None)

    required_keyword_only = any(default is None for default in args.kw_defaults)
    if not (takes(2) or takes(3)) or required_keyword_only:
        raise ValueError(
            "python reward: reward must take exactly (completion, answer) or (completion, answer, row)"
        )
    timeout = kwargs.get("timeout_s", 2.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 10:
        raise ValueError("python reward: timeout_s must be a number in (0, 10]")
    if not math.isfinite(timeout):
        raise ValueError("python reward: timeout_s must be finite")
    memory = kwargs.get("memory_mb", 512)
    if isinstance(memory, bool) or not isinstance(memory, int) or not 64 <= memory <= 2048:
        raise ValueError("python reward: memory_mb must be an integer in [64, 2048]")


@dataclass(frozen=True)
class RewardKind:
    """A reward a job may name: its kwargs are a model (errors located under kwargs.<name>) or a check."""

    name: str
    summary: str
    kwargs: type[_Kwargs] | None = None
    check: Callable[[dict[str, Any]], None] | None = None

    def validate(self, kwargs: dict[str, Any]) -> None:
        if self.kwargs is not None:
            self.kwargs.model_validate(kwargs)
        if self.check is not None:
            self.check(kwargs)


_KINDS = (
    RewardKind(
        "math_verify",
        "1 if the last \\boxed{} answer equals the reference (string or math-verify equivalence); no kwargs",
        NoRewardKwargs,
    ),
    RewardKind("exact_match", "1 if the stripped completion equals the stripped reference answer; no kwargs",
               NoRewardKwargs),
    RewardKind(
        "regex",
        f"'pattern' (required, RE2 syntax, at most {REGEX_REWARD_MAX_PATTERN_CHARS} characters: no backreferences "
        "or lookaround) full-matches the \\boxed{} answer ('target': 'boxed', default) or is found in the "
        "completion ('target': 'completion')",
        RegexRewardKwargs,
    ),
    RewardKind("format", "1 if the completion contains a non-empty \\boxed{} answer; no kwargs", NoRewardKwargs),
    RewardKind(
        "string_check",
        "compares the completion (or, with 'target': 'boxed', its \\boxed{} answer) with a reference: 'operation' "
        "'eq', 'ne', 'contains' or 'ilike' (case-insensitive SQL LIKE, '%' and '_' wildcards); the reference is "
        "the row's 'field' ('answer' by default, or a column such as 'label') or a literal 'reference'",
        StringCheckKwargs,
    ),
    RewardKind(
        "python",
        "'code' defining `def reward(completion: str, answer: str) -> float` or `def reward(completion, answer, "
        "row)` (row: a dict of the dataset row's columns), run sandboxed (no network; CPU, memory and "
        "wall-clock limits); optionally 'timeout_s' (<= 10) and 'memory_mb' (64..2048)",
        check=check_python_reward,
    ),
    RewardKind(
        "judge",
        "model as judge: 'rubric' (a prompt with {completion}, {answer} and {<row field>} placeholders) is sent to "
        "the OpenAI-compatible chat endpoint the operator configured (REMIX_JUDGE_URL; jobs cannot name one), "
        "whose reply must hold a score in [0, 1]; optionally 'timeout_s' (<= 120) and 'max_tokens' (<= 8192)",
        JudgeKwargs,
    ),
)

REWARD_KINDS: dict[str, RewardKind] = {kind.name: kind for kind in _KINDS}
REWARD_NAMES: tuple[str, ...] = tuple(REWARD_KINDS)
# The type of `RewardSpec.name` (remix_engine/config/reward.py): exactly the registry's names.
if TYPE_CHECKING:
    RewardName = str  # a static checker cannot evaluate a Literal built from the registry at import time
else:
    RewardName = Literal[REWARD_NAMES]
# Rewards that call the operator's judge endpoint: refused where none is configured.
JUDGE_REWARDS = frozenset({"judge"})


def check_reward_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise (ValueError or pydantic's ValidationError) when `kwargs` are not what reward `name` takes."""
    REWARD_KINDS[name].validate(kwargs)


def kwargs_description() -> str:
    """What each reward takes, for the description of RewardSpec.kwargs in the JSON schema."""
    return "Keyword arguments of the reward, checked at submission (unknown ones are refused). " + "; ".join(
        f"{kind.name}: {kind.summary}" for kind in _KINDS
    ) + "."
