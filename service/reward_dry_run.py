"""Score completions against one row with a reward config, as a job's rewards would (POST /v1/rewards/dry-run).

Like OpenAI's graders/run: a tenant checks a reward before spending a training job on it. The scores
come from the same code path as training: `remix_engine.scoring.RewardScorer` runs the rewards in a
scoring child process under its memory limit and a time budget (the python reward in its bubblewrap
jail inside it, the judge on the operator's endpoint), and the row is turned into what rewards see
with the same `reward_row`. Each request gets a child of its own, so one tenant's slow reward never
holds up another's dry run; nothing is stored.

Refused with 422 naming the field: an invalid reward config (`reward.functions.<i>...`), a judge
reward where no judge endpoint is configured (`reward.functions.<i>.name`), and a batch that fails
as a whole (past its time budget, out of memory); 503 where the python reward's sandbox cannot be
built on the API host.
"""

from __future__ import annotations

from typing import Any

from remix_engine.rewards import reward_row
from remix_engine.scoring import RewardScorer, RewardScoringError
from service.errors import ProblemError
from service.job_config import check_judge_available
from service.schemas import RewardDryRun, RewardDryRunResult
from service.settings import Settings

BASE_TIMEOUT_S = 30.0  # the builtin rewards of at most 64 completions
MAX_TIMEOUT_S = 120.0  # the whole dry run, python rewards' per-sample limits and judge requests included


def _answer_text(value: Any) -> str:
    """The reference answer as the dataset loader would hold it: numbers as text (142.0 -> "142")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def dry_run(body: RewardDryRun, settings: Settings) -> RewardDryRunResult:
    check_judge_available(body.reward.functions, configured=settings.judge_configured, prefix="reward.")
    columns = dict(body.row)
    answer = _answer_text(columns.pop("answer", ""))
    prompt = columns.pop("prompt", "")
    row = reward_row(prompt if isinstance(prompt, str) else str(prompt), columns)
    completions = list(body.completions)
    scorer = RewardScorer(env=settings.judge_env(), base_timeout_s=BASE_TIMEOUT_S, max_timeout_s=MAX_TIMEOUT_S)
    try:
        count = len(completions)
        result = scorer.score(body.reward.functions, completions, [answer] * count, [row] * count)
    except RewardScoringError as error:
        message = str(error)
        if message.startswith("SandboxUnavailable"):
            raise ProblemError(
                503,
                message,
                title="Reward sandbox unavailable",
                slug="reward-sandbox-unavailable",
                headers={"Retry-After": "60"},
                field="reward",
            ) from error
        raise ProblemError(
            422, message, title="Reward scoring failed", slug="reward-scoring-failed", field="reward"
        ) from error
    finally:
        scorer.close()
    return RewardDryRunResult(scores=result.total, parts=result.parts, errors=result.errors)
