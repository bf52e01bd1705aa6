"""vLLM's context window and the prompt budget inside it: read from every kind of model config, sized so
that no prompt reaches vLLM that it would refuse, and refused with the sizes when nothing fits."""

import pytest
from transformers import GPT2Config, LlamaConfig

from remix_engine.config import TrainConfig
from remix_engine.context_length import (
    ContextLengthError,
    check_vllm_context,
    model_position_limit,
    prompt_budget,
    vllm_max_model_len,
)
from remix_engine.model_shape import TINY_MODEL_CONFIG
from remix_engine.toy import build_char_tokenizer, build_untrained_model


def test_the_position_limit_is_read_from_configs_and_config_json_dicts():
    assert model_position_limit(LlamaConfig(max_position_embeddings=4096)) == 4096
    assert model_position_limit({"max_position_embeddings": 4096}) == 4096
    assert model_position_limit(GPT2Config(n_positions=1024)) == 1024  # transformers maps the name itself
    assert model_position_limit({"n_positions": 1024}) == 1024  # a config.json dict keeps GPT-2's own name
    # like vLLM: the smallest stated limit wins; a vision-language model's text decoder bounds it
    assert model_position_limit({"max_position_embeddings": 8192, "seq_length": 2048}) == 2048
    vision_language = {"max_position_embeddings": 1 << 20, "text_config": {"max_position_embeddings": 32768}}
    assert model_position_limit(vision_language) == 32768
    assert model_position_limit({"max_position_embeddings": True, "hidden_size": 8}) is None  # not a count
    assert model_position_limit({}) is None and model_position_limit(None) is None


def test_the_tiny_model_known_without_torch_has_the_positions_of_the_one_built():
    built = build_untrained_model(build_char_tokenizer(), seed=0).config
    assert model_position_limit(TINY_MODEL_CONFIG) == model_position_limit(built) == 64


@pytest.mark.parametrize(
    ("max_prompt_tokens", "max_new_tokens", "positions", "max_model_len", "budget"),
    [
        (512, 16, 4096, 528, 512),  # room for the longest prompt and the whole response
        (512, 16, 64, 64, 48),  # the model's positions bind: prompts keep their last 48 tokens
        (512, 63, 64, 64, 1),
        (20, 16, None, 36, 20),  # no stated limit: the length the job needs
        (None, 16, 64, 64, 48),
    ],
)
def test_every_prompt_leaves_room_for_the_whole_response(
    max_prompt_tokens, max_new_tokens, positions, max_model_len, budget
):
    assert vllm_max_model_len(max_prompt_tokens, max_new_tokens, positions) == max_model_len
    assert prompt_budget(max_prompt_tokens, max_new_tokens, max_model_len) == budget
    assert budget + max_new_tokens <= max_model_len  # below max_model_len: vLLM takes the prompt


def test_no_room_for_a_prompt_is_refused_naming_the_sizes():
    with pytest.raises(ContextLengthError) as info:
        prompt_budget(512, 64, vllm_max_model_len(512, 64, 64))
    message = str(info.value)
    assert "rollout.max_new_tokens 64 leaves no room for a prompt" in message
    assert "at most 64 tokens per sequence" in message and "below 64" in message
    assert info.value.field == "rollout.max_new_tokens"
    assert prompt_budget(None, 64, None) is None  # nothing known, nothing refused


def test_the_job_check_applies_to_the_vllm_backend_only():
    long_responses = {"max_new_tokens": 64}
    check_vllm_context(TrainConfig.model_validate({"rollout": long_responses}), 64)  # HF: not its context
    vllm = TrainConfig.model_validate({"rollout": {"backend": "vllm", **long_responses}})
    with pytest.raises(ContextLengthError):
        check_vllm_context(vllm, 64)
    check_vllm_context(vllm, 65)
    check_vllm_context(vllm, None)  # the model states no limit: vLLM derives its own, the engine asks no more
