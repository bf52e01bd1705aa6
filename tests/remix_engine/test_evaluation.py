"""Evaluation: greedy Pass@1, avg@k Pass@1 / pass@k, extra held-out sets, best-k retention."""

import json

import pytest

from remix_engine.callbacks import NullCallbacks
from remix_engine.checkpoint_dirs import step_of_checkpoint_dir
from remix_engine.config import RewardSpec, TrainConfig
from remix_engine.evaluation import EvalSet, evaluate_sets
from remix_engine.toy import build_char_tokenizer, build_untrained_model
from remix_engine.trainer import Trainer


class ScriptedEngine:
    """A rollout engine that answers from a table: greedy always '\\boxed{2}', samples alternate."""

    def greedy(self, prompts, max_new_tokens=None):
        return ["\\boxed{2}" for _ in prompts]

    def generate(self, prompts, answers, prompt_index, *, group_size, seeds, policy_version, group_id_start):
        from types import SimpleNamespace

        completions = [f"\\boxed{{{j % 2 + 1}}}" for _ in prompts for j in range(group_size)]
        return SimpleNamespace(completions=completions, answers=[a for a in answers for _ in range(group_size)])


def test_greedy_and_avg_at_k_definitions():
    sets = [EvalSet("", ["q1", "q2"], ["2", "1"]), EvalSet("bench", ["q3"], ["3"])]
    result = evaluate_sets(ScriptedEngine(), sets, RewardSpec(name="math_verify"), max_new_tokens=8, samples=4, seed=0)
    assert result["accuracy"] == pytest.approx(0.5)  # greedy '2' is right for q1 only
    assert result["avg_pass1"] == pytest.approx(0.5)  # samples alternate 1, 2: half right for q1 and q2
    assert result["pass_at_k"] == pytest.approx(1.0)
    assert result["bench/accuracy"] == 0.0 and result["bench/pass_at_k"] == 0.0
    assert result["k"] == 4.0


def test_each_set_may_have_its_own_k():
    sets = [
        EvalSet("", ["q1"], ["2"]),
        EvalSet("aime24", ["q2", "q3"], ["1", "3"], samples=2),
        EvalSet("greedy", ["q4"], ["2"], samples=0),
    ]
    result = evaluate_sets(ScriptedEngine(), sets, RewardSpec(name="math_verify"), max_new_tokens=8, samples=0, seed=0)
    assert "avg_pass1" not in result and "greedy/avg_pass1" not in result  # the job's k is 0
    assert result["aime24/k"] == 2.0 and result["aime24/avg_pass1"] == pytest.approx(0.25)  # q2: '1' of '1','2'
    assert result["aime24/pass_at_k"] == pytest.approx(0.5) and result["aime24/num_prompts"] == 2.0
    assert result["greedy/accuracy"] == 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-llama")
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_trainer_reports_extra_sets_and_keeps_best_checkpoints(model_dir, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps({"problem": f"{i}+1=", "solution": f"\\boxed{{{i + 1}}}"}) for i in range(5)))
    cfg = TrainConfig.model_validate(
        {
            "model": {"name_or_path": model_dir},
            "data": {"eval_size": 6},
            "rollout": {"prompts_per_step": 3, "group_size": 2, "max_new_tokens": 4},
            "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
            "algorithm": {"name": "grpo", "minibatch_size": 6},
            "eval_sets": [{"name": "bench", "path": str(bench), "prompt_field": "problem", "answer_field": "solution"}],
            "eval_samples": 2,
            "eval_every": 1,
            "total_steps": 4,
            "checkpoint_every": 1,
            "keep_checkpoints": 1,
            "keep_best_checkpoints": 1,
        }
    )

    pruned = []

    class Callbacks(NullCallbacks):
        def __init__(self):
            self.metrics = []

        def on_step(self, step, metrics):
            self.metrics.append(metrics)

        def on_event(self, *args):
            pass

        def on_checkpoint(self, step, path, metrics):
            pass

        def on_checkpoint_pruned(self, step, path):
            pruned.append(step)

        def should_stop(self):
            return False

    cb = Callbacks()
    Trainer(cfg, tmp_path / "run", callbacks=cb).train()
    last = cb.metrics[-1]
    for key in (
        "eval_accuracy",
        "eval_avg_pass1",
        "eval_pass_at_k",
        "eval_bench/accuracy",
        "eval_bench/num_prompts",
    ):
        assert key in last
    assert last["eval_bench/num_prompts"] == 5
    scores = {m["step"]: m["eval_accuracy"] for m in cb.metrics}
    steps = (step_of_checkpoint_dir(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir())
    kept = sorted(step for step in steps if step is not None)
    best = max(sorted(scores, reverse=True), key=lambda s: scores[s])  # newest among the best
    assert 4 in kept and best in kept and len(kept) <= 2
    assert sorted(pruned + kept) == [1, 2, 3, 4]
