"""Per-step metrics (without timings) and final weight sums of a few short fixed jobs, as JSON.

Two checkouts whose traces are equal train identically on these jobs (metrics one of them lacks are
not compared): run it in each and compare
(`python scripts/step_trace.py --out a.json` here, the same there, then `--compare a.json b.json`).
The jobs cover the Mix phase with replay, reincarnation, the PPO critic, the on-policy baseline and
both ways pi_k is scored (the learner's first forward, and separate passes with small minibatches).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import common  # noqa: E402
from remix_engine.trainer import Trainer  # noqa: E402

JOBS: dict[str, dict[str, Any]] = {
    "remix-grpo": {"name": "remix-grpo", "reincarnation_step": 3},
    "remix-ppo": {"name": "remix-ppo", "reincarnation_step": 3},
    "grpo": {"name": "grpo"},
    "remix-grpo-small-minibatches": {"name": "remix-grpo", "reincarnation_step": 3, "minibatch_size": 12},
}
STEPS = 5


def trace(workdir: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for label, algorithm in JOBS.items():
        overrides = {k: v for k, v in algorithm.items() if k != "name"}
        minibatch = overrides.pop("minibatch_size", None)
        cfg = common.toy_train_config(
            algorithm["name"],
            seed=1,
            steps=STEPS,
            prompts=8,
            group_size=4,
            lr=1e-4,
            max_new_tokens=12,
            eval_size=16,
            eval_every=0,
            **overrides,
        )
        if minibatch is not None:
            cfg = cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"minibatch_size": minibatch})})
        trainer = Trainer(cfg, workdir / label)
        steps = []
        for _ in range(STEPS):
            metrics = trainer.train_step()
            steps.append({k: v for k, v in metrics.items() if not k.endswith("_s")})
        weight_sum = float(sum(p.double().sum() for p in trainer.policy.parameters()))
        out[label] = {"steps": steps, "weight_sum": weight_sum}
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Where two traces differ: keys present in only one, and unequal values (compared exactly)."""
    found = []
    for label in sorted(set(a) | set(b)):
        if label not in a or label not in b:
            found.append(f"{label}: only in one trace")
            continue
        if a[label]["weight_sum"] != b[label]["weight_sum"]:
            found.append(f"{label}: final weights differ ({a[label]['weight_sum']} vs {b[label]['weight_sum']})")
        for index, (x, y) in enumerate(zip(a[label]["steps"], b[label]["steps"], strict=True), start=1):
            for key in sorted(set(x) & set(y)):
                if x[key] != y[key]:
                    found.append(f"{label} step {index} {key}: {x[key]} vs {y[key]}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the trace here (default: stdout)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two traces")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(path.read_text()) for path in args.compare)
        found = differences(a, b)
        print("\n".join(found) if found else "identical")  # noqa: T201
        return 1 if found else 0
    with tempfile.TemporaryDirectory() as workdir:
        document = json.dumps(trace(Path(workdir)), indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(document)
    else:
        print(document)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
