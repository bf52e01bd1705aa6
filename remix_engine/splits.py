"""Training and held-out prompt sets for a job, from its DataConfig and its extra `eval_sets`.

The builtin addition tasks have disjoint train and eval splits. A user dataset is evaluated on
`eval_path` when given; otherwise on a fixed, seeded sample of its own training prompts
(reported as such in the evaluation result). Extra eval sets are builtin benchmarks shipped with
the package (remix_engine/eval_benchmarks.py) or files, each evaluated on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from remix_engine.config import REASONING_DATASET_ID, TOY_DATASET_ID, BuiltinEvalSetSpec, TrainConfig
from remix_engine.data import Example, load_examples
from remix_engine.eval_benchmarks import load_benchmark

if TYPE_CHECKING:
    from remix_engine.toy import Split

TOY_TRAIN_SIZE = 4000


def _builtin_examples(dataset_id: str) -> Callable[[Split, int, int], list[Example]] | None:
    """The (split, n, seed) -> examples function of a builtin dataset; None for any other path."""
    if dataset_id == TOY_DATASET_ID:
        from remix_engine.toy import toy_examples

        return toy_examples
    if dataset_id == REASONING_DATASET_ID:
        from remix_engine.toy_reasoning import reasoning_examples

        return reasoning_examples
    return None


def load_train_eval(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    data = cfg.data
    builtin = _builtin_examples(data.train_path)
    if builtin is not None:
        return builtin("train", TOY_TRAIN_SIZE, cfg.seed), builtin("eval", data.eval_size, cfg.seed)
    fields = {"prompt_field": data.prompt_field, "answer_field": data.answer_field}
    train = load_examples(data.train_path, **fields)
    if data.eval_path:
        return train, load_examples(data.eval_path, **fields)[: data.eval_size]
    picked = random.Random(cfg.seed).sample(range(len(train)), min(data.eval_size, len(train)))
    return train, [train[i] for i in sorted(picked)]


class ExtraEvalSet(NamedTuple):
    name: str  # metric prefix
    examples: list[Example]
    samples: int  # k of avg@k for this set (0: greedy only)


def load_extra_eval_sets(cfg: TrainConfig) -> list[ExtraEvalSet]:
    """The extra held-out sets of `cfg.eval_sets`, each cut to its size, with its avg@k k."""
    sets = []
    for spec in cfg.eval_sets:
        if isinstance(spec, BuiltinEvalSetSpec):
            examples = load_benchmark(spec.name, spec.size)
        else:
            fields = {"prompt_field": spec.prompt_field, "answer_field": spec.answer_field}
            examples = load_examples(spec.path, **fields)[: spec.size]
        samples = cfg.eval_samples if spec.samples is None else spec.samples
        sets.append(ExtraEvalSet(spec.name, examples, samples))
    return sets
