"""Training and held-out prompt sets for a job, from its DataConfig.

The builtin addition task has disjoint train and eval splits. A user dataset is evaluated on
`eval_path` when given; otherwise on a fixed, seeded sample of its own training prompts
(reported as such in the evaluation result).
"""

from __future__ import annotations

import random

from remix_engine.config import TOY_DATASET_ID, TrainConfig
from remix_engine.data import Example, load_examples

TOY_TRAIN_SIZE = 4000


def load_train_eval(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    data = cfg.data
    if data.train_path == TOY_DATASET_ID:
        from remix_engine.toy import toy_examples

        return (
            toy_examples("train", TOY_TRAIN_SIZE, cfg.seed),
            toy_examples("eval", data.eval_size, cfg.seed),
        )
    fields = {"prompt_field": data.prompt_field, "answer_field": data.answer_field}
    train = load_examples(data.train_path, **fields)
    if data.eval_path:
        return train, load_examples(data.eval_path, **fields)[: data.eval_size]
    picked = random.Random(cfg.seed).sample(range(len(train)), min(data.eval_size, len(train)))
    return train, [train[i] for i in sorted(picked)]


def load_extra_eval_sets(cfg: TrainConfig) -> list[tuple[str, list[Example]]]:
    """The extra held-out sets of `cfg.eval_sets`, each cut to its size."""
    return [
        (
            spec.name,
            load_examples(spec.path, prompt_field=spec.prompt_field, answer_field=spec.answer_field)[: spec.size],
        )
        for spec in cfg.eval_sets
    ]
