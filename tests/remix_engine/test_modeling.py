"""Tests of policy loading and of learner-side response log-probabilities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import ModelConfig
from remix_engine.modeling import ModelLoadError, load_policy, sequence_logprobs
from remix_engine.toy import build_char_tokenizer, build_untrained_model


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_untrained_model(tokenizer, seed=0)


def _batch(tokenizer, prompts: list[str], responses: list[str], eos_rows: set[int]) -> RolloutBatch:
    """A hand-built batch: left-padded prompts, right-padded responses (EOS appended on `eos_rows`)."""
    encoded = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    rows = [
        tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if i in eos_rows else [])
        for i, r in enumerate(responses)
    ]
    width = max(len(r) for r in rows)
    response_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        response_ids[i, : len(row)] = torch.tensor(row)
        response_mask[i, : len(row)] = True
    n = len(rows)
    return RolloutBatch(
        prompt_ids=encoded["input_ids"],
        prompt_mask=encoded["attention_mask"].bool(),
        response_ids=response_ids,
        response_mask=response_mask,
        rollout_logp=torch.zeros(response_ids.shape),
        policy_version=torch.zeros(n, dtype=torch.long),
        seeds=torch.arange(n),
        group_ids=torch.arange(n),
        prompt_index=torch.arange(n),
    )


def _reference_logprobs(
    model, batch: RolloutBatch, temperature: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Slow reference: each row alone, without any padding, through a full forward."""
    logps, entropies = [], []
    for i in range(len(batch)):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i]]
        response = batch.response_ids[i][batch.response_mask[i]]
        ids = torch.cat([prompt, response]).unsqueeze(0)  # (1, L)
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / temperature  # (Lr_i, V)
        logp_all = torch.log_softmax(logits, dim=-1)
        logps.append(logp_all.gather(-1, response.unsqueeze(-1)).squeeze(-1))
        entropies.append(-(logp_all.exp() * logp_all).sum(-1))
    return logps, entropies


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_sequence_logprobs_match_unpadded_per_row_reference(model, tokenizer, temperature: float) -> None:
    batch = _batch(tokenizer, ["1+1=", "What is 12+34? ", "7"], ["\\boxed{2}", "4", "abc de"], eos_rows={0, 1})
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, temperature=temperature)
        ref_logp, ref_entropy = _reference_logprobs(model, batch, temperature)
    assert logp.shape == entropy.shape == batch.response_ids.shape
    for i in range(len(batch)):
        n = int(batch.response_mask[i].sum())
        torch.testing.assert_close(logp[i, :n], ref_logp[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy[i, :n], ref_entropy[i], atol=1e-5, rtol=1e-5)


def test_masked_positions_are_exactly_zero_and_entropy_is_bounded(model, tokenizer) -> None:
    batch = _batch(tokenizer, ["1+1=", "99+99="], ["", "\\boxed{198}"], eos_rows={0, 1})
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, temperature=1.0)
    padding = ~batch.response_mask
    assert padding.any()
    assert torch.all(logp[padding] == 0) and torch.all(entropy[padding] == 0)
    valid = batch.response_mask
    assert torch.all(logp[valid] < 0)
    vocab = model.config.vocab_size
    assert torch.all(entropy[valid] > 0) and torch.all(entropy[valid] <= torch.log(torch.tensor(float(vocab))) + 1e-5)


def test_sequence_logprobs_are_differentiable(model, tokenizer) -> None:
    batch = _batch(tokenizer, ["1+1=", "12+34="], ["\\boxed{2}", "\\boxed{46}"], eos_rows={0})
    model.zero_grad(set_to_none=True)
    logp, entropy = sequence_logprobs(model, batch, temperature=1.0)
    (logp.sum() + entropy.sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_no_grad_use_and_entropy_switch(model, tokenizer) -> None:
    batch = _batch(tokenizer, ["1+1="], ["\\boxed{2}"], eos_rows={0})
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, temperature=1.0, with_entropy=False)
    assert entropy is None
    assert not logp.requires_grad


# -------------------------------------------------------------------------------------- load_policy


def test_load_policy_reads_a_local_directory_and_fixes_padding(tmp_path: Path, tokenizer) -> None:
    from transformers import PreTrainedTokenizerFast

    saved = build_untrained_model(tokenizer, seed=5)
    saved.generation_config.pad_token_id = None
    saved.save_pretrained(tmp_path)
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>", bos_token="<bos>")
    no_pad.save_pretrained(tmp_path)

    model, loaded = load_policy(ModelConfig(name_or_path=str(tmp_path), dtype="bfloat16"))
    assert loaded.pad_token == "<eos>"
    assert loaded.padding_side == "left"
    assert model.generation_config.pad_token_id == loaded.eos_token_id
    assert next(model.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(
        model.model.embed_tokens.weight.float(), saved.model.embed_tokens.weight.bfloat16().float()
    )


def test_load_policy_names_a_missing_local_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_policy(ModelConfig(name_or_path=str(missing)))
    assert str(missing) in str(info.value)


def test_load_policy_rejects_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json") as info:
        load_policy(ModelConfig(name_or_path=str(tmp_path)))
    assert str(tmp_path) in str(info.value)


def test_load_policy_names_an_unknown_hub_id() -> None:
    model_id = "remix-tests-nonexistent-org/definitely-not-a-model-4711"
    with pytest.raises(ModelLoadError) as info:
        load_policy(ModelConfig(name_or_path=model_id))
    message = str(info.value)
    assert model_id in message
    assert "Hub" in message  # says why: unreachable, or not found there


def test_load_policy_lists_builtin_models_for_an_unknown_builtin_id() -> None:
    with pytest.raises(ModelLoadError, match="builtin:tiny-arith") as info:
        load_policy(ModelConfig(name_or_path="builtin:no-such-model"))
    assert "builtin:no-such-model" in str(info.value)
    assert isinstance(info.value, ValueError)
