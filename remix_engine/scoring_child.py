"""The scoring child of remix_engine/scoring.py: `python -m remix_engine.scoring_child`.

Reads one JSON request per line ({"specs", "completions", "answers"} and optionally the samples' rows
as {"rows": [distinct rows], "row_index": [one per sample]}) and answers one line each:
{"total": [...], "parts": {...}, "errors": {...}, "reporting": [...]} (`rewards.RewardResult`) or
{"error": "..."} for an error of the reward configuration or of a reward (for example a sandbox that
cannot be built, or a judge reward where no judge endpoint is configured). It runs under an
address-space limit set here.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def main() -> None:
    memory = int(os.environ.get("REMIX_SCORING_MEMORY_BYTES", str(4 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from remix_engine.config import RewardSpec
    from remix_engine.rewards import score_rewards

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, never into the replies
    for line in sys.stdin:
        request = json.loads(line)
        try:
            specs = [RewardSpec.model_validate(spec) for spec in request["specs"]]
            table = request.get("rows")
            rows = None if table is None else [table[i] for i in request["row_index"]]
            result = score_rewards(specs, request["completions"], request["answers"], rows)
            reply = {
                "total": result.total,
                "parts": result.parts,
                "errors": result.errors,
                "reporting": result.reporting,
            }
        except MemoryError:
            reply = {"error": "reward scoring ran out of memory"}
        except Exception as error:  # noqa: BLE001 - reported to the trainer, which fails the job
            reply = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
