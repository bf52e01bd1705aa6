"""docs/tuning.md stays true to the code: config paths, metric names, YAML snippets, plots, links."""

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from remix_engine.callbacks import NullCallbacks
from remix_engine.config import TrainConfig
from remix_engine.toy import build_char_tokenizer, build_untrained_model
from remix_engine.trainer import Trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDE = DOCS / "tuning.md"
# A whole inline-code span that is a dotted path, optionally followed by ": value" or "=value".
DOTTED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\s*[:=][^`]*)?`")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
METRIC_BLOCK = re.compile(r"<!-- metrics:begin -->(.*?)<!-- metrics:end -->", re.S)
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)
LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")
SNAKE = re.compile(r"[a-z][a-z0-9_]*")
EVENT_KINDS = {"reincarnated", "evaluation", "checkpoint", "samples", "resumed"}  # trainer events
NOT_CONFIG = ("remix_engine.",)  # module paths named in prose, not job fields
FILE_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".json", ".jsonl", ".png")


@pytest.fixture(scope="module")
def text():
    return GUIDE.read_text(encoding="utf-8")


def resolves(path: str) -> bool:
    """True if the dotted path names a field of TrainConfig, walking nested models."""
    model: type[BaseModel] | None = TrainConfig
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def test_every_backticked_config_path_is_a_train_config_field(text):
    paths = {p for p in DOTTED.findall(text) if not p.startswith(NOT_CONFIG) and not p.endswith(FILE_SUFFIXES)}
    assert len(paths) >= 15, sorted(paths)  # the guide covers every knob
    assert sorted(p for p in paths if not resolves(p)) == []
    for knob in (
        "algorithm.off_policy_fraction",
        "algorithm.history_window",
        "algorithm.utd_ratio",
        "algorithm.reincarnation_step",
        "algorithm.lambda_start_step",
        "algorithm.kl_coef",
        "algorithm.kl_estimator",
        "algorithm.clip_eps",
        "algorithm.entropy_coef",
        "algorithm.loss_aggregation",
        "rollout.group_size",
        "rollout.prompts_per_step",
        "optim.lr",
    ):
        assert knob in paths, knob


def test_yaml_snippets_are_valid_jobs(text):
    blocks = YAML_BLOCK.findall(text)
    assert blocks
    for block in blocks:
        TrainConfig.model_validate(yaml.safe_load(block))


class KeyRecorder(NullCallbacks):
    """Trainer callbacks that keep the union of every step's metric keys."""

    def __init__(self):
        self.keys: set[str] = set()

    def on_step(self, _step, metrics):
        self.keys.update(metrics)

    def on_event(self, *_args):
        pass

    def on_checkpoint(self, *_args):
        pass

    def should_stop(self):
        return False


@pytest.fixture(scope="module")
def emitted_metric_keys(tmp_path_factory):
    """Metric keys of short remix-grpo (Mix with replay, then on-policy) and remix-ppo runs."""
    model_dir = tmp_path_factory.mktemp("untrained-tiny")
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    keys: set[str] = set()
    for name, steps in (("remix-grpo", 3), ("remix-ppo", 2)):
        cfg = TrainConfig.model_validate(
            {
                "model": {"name_or_path": str(model_dir)},
                "data": {"eval_size": 8},
                "rollout": {"prompts_per_step": 5, "group_size": 2, "max_new_tokens": 6},
                # An untrained model never boxes an answer; rewarding any digit gives rewards with variance.
                "reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "[0-9]", "target": "completion"}}]},
                "algorithm": {
                    "name": name,
                    "reincarnation_step": 2,
                    "lambda_start_step": 1,
                    "lambda_interval": 1,
                    "minibatch_size": 6,
                },
                "optim": {"lr": 1e-3},
                "total_steps": steps,
                "checkpoint_every": steps,
                "log_completions": 0,
                "seed": 7,
            }
        )
        recorder = KeyRecorder()
        Trainer(cfg, tmp_path_factory.mktemp(name), callbacks=recorder).train()
        keys |= recorder.keys
    return keys


def test_metric_names_in_the_guide_are_emitted_by_the_trainer(text, emitted_metric_keys):
    blocks = METRIC_BLOCK.findall(text)
    assert len(blocks) >= 1
    # Dotted spans in these tables are config paths (checked above); every other one is a metric.
    names = {span for block in blocks for span in CODE_SPAN.findall(block) if "." not in span}
    # Outside the tables, a backticked snake_case word is a metric unless it is a job field or an event.
    prose = METRIC_BLOCK.sub("", text)
    names |= {
        span
        for span in CODE_SPAN.findall(prose)
        if SNAKE.fullmatch(span) and span not in TrainConfig.model_fields and span not in EVENT_KINDS
    }
    assert {
        "clip_frac",
        "kl_ref",
        "kl_prev",
        "lambda",
        "phase",
        "fresh_rollouts_total",
        "replay_ratio_max",
        "response_length_replay",
    } <= names
    assert sorted(names - emitted_metric_keys) == []


def test_linked_images_and_files_exist(text):
    images, files = [], []
    for bang, target in LINK.findall(text):
        if "://" in target or target.startswith("#"):
            continue
        (images if bang else files).append(target.split("#")[0])
    assert {
        "benchmarks/analysis_signals.png",
        "benchmarks/analysis_signals_ablation.png",
        "benchmarks/trl_comparison.png",
        "benchmarks/rollout_efficiency.png",
    } <= set(images)
    missing = [t for t in images + files if not (DOCS / t).exists()]
    assert missing == []
