"""Tests of build_engine: the engine each rollout backend gets, and what the vLLM one cannot be built without."""

from __future__ import annotations

import pytest

from remix_engine.config import RolloutConfig
from remix_engine.rollout import HFRolloutEngine, build_engine
from remix_engine.toy import build_char_tokenizer, build_untrained_model


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_untrained_model(tokenizer, seed=0)


def test_the_hf_backend_generates_with_the_learner_s_own_model(model, tokenizer) -> None:
    cfg = RolloutConfig(backend="hf", max_new_tokens=4)
    engine = build_engine(cfg, model, tokenizer, max_prompt_tokens=12)
    assert isinstance(engine, HFRolloutEngine)
    assert engine.model is model
    assert engine.cfg is cfg
    assert engine.max_prompt_tokens == 12


def test_the_vllm_backend_needs_the_model_config_and_the_learner_s_weights(model, tokenizer) -> None:
    with pytest.raises(ValueError, match="model config and the learner's weights"):
        build_engine(RolloutConfig(backend="vllm", max_new_tokens=4), model, tokenizer, device="cpu")


def test_an_unknown_backend_is_refused(model, tokenizer) -> None:
    cfg = RolloutConfig(max_new_tokens=4).model_copy(update={"backend": "sglang"})
    with pytest.raises(ValueError, match="sglang"):
        build_engine(cfg, model, tokenizer)
