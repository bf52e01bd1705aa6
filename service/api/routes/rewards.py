"""/v1/rewards/dry-run: score completions against a row with a reward config, without a job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import SettingsDep, get_current_tenant
from service.reward_dry_run import dry_run
from service.schemas import RewardDryRun, RewardDryRunResult

router = APIRouter(prefix="/v1/rewards", tags=["rewards"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/dry-run",
    # Authenticated like every /v1 route (nothing is stored, so the tenant is not needed otherwise).
    dependencies=[Depends(get_current_tenant)],
    responses={
        422: PROBLEM | {"description": "Invalid reward config, row or completions, or scoring failed as a whole"},
        503: PROBLEM | {"description": "The python reward's sandbox cannot be built on this API host"},
    },
)
def dry_run_rewards(*, body: RewardDryRun, settings: SettingsDep) -> RewardDryRunResult:
    """Score completions against one dataset row with a reward config, as training would (like OpenAI's
    graders/run): the weighted total of each completion, every reward's scores and its per-sample errors."""
    return dry_run(body, settings)
