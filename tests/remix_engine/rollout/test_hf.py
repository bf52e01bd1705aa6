"""Tests of the Hugging Face rollout engine: seeded sampling, masks, layout, behaviour log-probs, stop
strings and truncation."""

from __future__ import annotations

import pytest
import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import RolloutConfig
from remix_engine.modeling import sequence_logprobs
from remix_engine.rollout.engine import finish_response
from remix_engine.rollout.hf import (
    HFRolloutEngine,
    SeededGumbelSampler,
    StopStringCriteria,
    filtered_logprobs,
    response_mask_until_stop,
)
from remix_engine.toy import build_char_tokenizer, build_untrained_model

PROMPTS = ["1+1=", "What is 12+34? ", "7", "abc def"]
ANSWERS = ["2", "46", "7", "x"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    """A random tiny Llama whose EOS is likely enough to give empty, short and full-length responses.

    Every token embedding gets the same value on dimension 0 and the (tied) EOS row a larger one, so the
    final hidden state's shared component favours EOS over the other tokens.
    """
    policy = build_untrained_model(tokenizer, seed=0)
    with torch.no_grad():
        policy.model.embed_tokens.weight[:, 0] = 0.1
        policy.model.embed_tokens.weight[tokenizer.eos_token_id, 0] = 1.0
    return policy


def _generate(model, tokenizer, prompts, seeds, *, group_size=1, batch_size=512, top_k=0, top_p=1.0, **cfg):
    rollout_cfg = RolloutConfig(max_new_tokens=10, generation_batch_size=batch_size, **cfg)
    # The sampler implements top-k/top-p; job configs refuse them (config.py) because the learner scores
    # the unfiltered distribution. model_copy does not validate: these tests reach the sampler itself.
    rollout_cfg = rollout_cfg.model_copy(update={"top_k": top_k, "top_p": top_p})
    engine = HFRolloutEngine(model, tokenizer, rollout_cfg)
    answers = [str(i) for i in range(len(prompts))]
    return engine.generate(
        prompts,
        answers,
        list(range(len(prompts))),
        group_size=group_size,
        seeds=seeds,
        policy_version=7,
        group_id_start=100,
    )


def _valid_tokens(batch: RolloutBatch, row: int) -> list[int]:
    return batch.response_ids[row][batch.response_mask[row]].tolist()


@pytest.mark.parametrize(("temperature", "batch_size"), [(1.0, 512), (0.7, 5), (1.6, 4)])
def test_rollout_logp_equals_learner_logprobs(model, tokenizer, temperature: float, batch_size: int) -> None:
    """The key invariant: behaviour log-probs from generation equal the learner's, token by token."""
    batch = _generate(
        model,
        tokenizer,
        PROMPTS,
        list(range(12)),
        group_size=3,
        batch_size=batch_size,
        temperature=temperature,
    )
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, batch, temperature=temperature)
    torch.testing.assert_close(batch.rollout_logp, logp, atol=1e-4, rtol=0)
    assert torch.all(batch.rollout_logp[batch.response_mask] < 0)


def test_masks_stop_after_the_first_eos_and_empty_responses_are_kept(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, PROMPTS, list(range(64)), group_size=16)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lengths = batch.response_mask.sum(dim=1)
    assert (lengths == 1).any() and ((lengths > 1) & (lengths < 10)).any() and (lengths == 10).any()
    assert batch.response_ids.shape[1] == 10  # max_new_tokens
    for row in range(len(batch)):
        n = int(lengths[row])
        assert batch.response_mask[row, :n].all() and not batch.response_mask[row, n:].any()  # a prefix
        tokens = batch.response_ids[row].tolist()
        if n < 10:
            assert tokens[n - 1] == eos and eos not in tokens[: n - 1]  # EOS itself is a response token
        assert all(t == pad for t in tokens[n:])
        assert torch.all(batch.rollout_logp[row, n:] == 0)
        if n == 1 and tokens[0] == eos:
            assert batch.completions[row] == ""
    assert torch.all(batch.prompt_ids[~batch.prompt_mask] == pad)
    assert batch.prompt_mask[:, -1].all()  # left padding: every prompt ends in the last column


def test_completions_decode_the_valid_response_tokens(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, PROMPTS, list(range(8)), group_size=2)
    for row in range(len(batch)):
        assert batch.completions[row] == tokenizer.decode(_valid_tokens(batch, row), skip_special_tokens=True)


def test_same_seed_gives_the_same_response_in_any_batch(model, tokenizer) -> None:
    alone = _generate(model, tokenizer, ["What is 12+34? "], [42])
    crowded = _generate(model, tokenizer, ["7", "abc def", "What is 12+34? ", "1+1="], [5, 6, 42, 8], batch_size=3)
    regrouped = _generate(model, tokenizer, ["What is 12+34? ", "7"], [9, 10, 11, 42], group_size=2, batch_size=1)
    expected = _valid_tokens(alone, 0)
    assert _valid_tokens(crowded, 2) == expected
    assert _valid_tokens(regrouped, 3) == _valid_tokens(_generate(model, tokenizer, ["7"], [42]), 0)
    assert crowded.completions[2] == alone.completions[0]
    n = len(expected)
    torch.testing.assert_close(crowded.rollout_logp[2, :n], alone.rollout_logp[0, :n], atol=1e-5, rtol=0)


def test_different_seeds_give_different_responses(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, ["What is 12+34? "], list(range(16)), group_size=16)
    distinct = {tuple(_valid_tokens(batch, row)) for row in range(len(batch))}
    assert len(distinct) >= 12


def test_batch_layout_groups_and_metadata(model, tokenizer) -> None:
    seeds = [11, 12, 13, 21, 22, 23]
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=4, generation_batch_size=4))
    batch = engine.generate(
        ["1+1=", "12+34="],
        ["2", "46"],
        [17, 3],
        group_size=3,
        seeds=seeds,
        policy_version=5,
        group_id_start=40,
    )
    assert len(batch) == 6
    assert batch.group_ids.tolist() == [40, 40, 40, 41, 41, 41]
    assert batch.prompt_index.tolist() == [17, 17, 17, 3, 3, 3]
    assert batch.seeds.tolist() == seeds
    assert batch.policy_version.tolist() == [5] * 6
    assert batch.prompts == ["1+1="] * 3 + ["12+34="] * 3
    assert batch.answers == ["2"] * 3 + ["46"] * 3
    assert len(batch.completions) == 6
    for row in range(6):
        prompt = batch.prompt_ids[row][batch.prompt_mask[row]].tolist()
        assert tokenizer.decode(prompt, skip_special_tokens=True) == batch.prompts[row]


def test_generate_rejects_a_wrong_number_of_seeds(model, tokenizer) -> None:
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match="seeds"):
        engine.generate(["1+1="], ["2"], [0], group_size=2, seeds=[1], policy_version=0, group_id_start=0)


@pytest.mark.parametrize("training", [True, False])
def test_generation_restores_the_training_mode(model, tokenizer, training: bool) -> None:
    model.train(training)
    _generate(model, tokenizer, ["1+1="], [1])
    HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=3)).greedy(["1+1="])
    assert model.training is training
    model.eval()


def test_greedy_equals_top1_sampling_and_ignores_batch_composition(model, tokenizer) -> None:
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=10, generation_batch_size=2))
    greedy = engine.greedy(PROMPTS)
    top1 = _generate(model, tokenizer, PROMPTS, [1, 2, 3, 4], top_k=1)
    assert greedy == top1.completions
    assert engine.greedy([PROMPTS[2]]) == [greedy[2]]
    assert engine.greedy(PROMPTS, max_new_tokens=2) == [
        tokenizer.decode(_valid_tokens(top1, row)[:2], skip_special_tokens=True) for row in range(len(PROMPTS))
    ]


def test_top_k_and_top_p_restrict_samples_to_the_allowed_set(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, PROMPTS, list(range(32)), group_size=8, top_k=3, temperature=2.0)
    with torch.no_grad():
        full_logp, _ = sequence_logprobs(model, batch, temperature=2.0)
    mask = batch.response_mask
    # Renormalised over 3 tokens, a sampled token is at least as likely as under the full distribution.
    assert torch.all(batch.rollout_logp[mask] >= full_logp[mask] - 1e-6)
    assert torch.all(batch.rollout_logp[mask] > torch.log(torch.tensor(1 / 3)) - 1.0)
    # ...and strictly more likely wherever other tokens had mass: behaviour log-probs under a filter are not
    # the learner's, the bias in importance ratios and clip centre for which configs refuse filters.
    assert float((batch.rollout_logp - full_logp)[mask].max()) > 0.1


def test_a_nucleus_filter_biases_behaviour_log_probs_against_the_learner(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, PROMPTS, list(range(16)), group_size=4, top_p=0.5, temperature=1.5)
    with torch.no_grad():
        full_logp, _ = sequence_logprobs(model, batch, temperature=1.5)
    mask = batch.response_mask
    gap = (batch.rollout_logp - full_logp)[mask]
    assert float(gap.min()) > -1e-5 and float(gap.max()) > 0.5  # filtered: renormalised over half the mass
    unfiltered = _generate(model, tokenizer, PROMPTS, list(range(16)), group_size=4, temperature=1.5)
    with torch.no_grad():
        learner, _ = sequence_logprobs(model, unfiltered, temperature=1.5)
    torch.testing.assert_close(unfiltered.rollout_logp, learner, atol=1e-4, rtol=0)  # what configs allow


def test_filtered_logprobs_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = filtered_logprobs(logits, temperature=1.0, top_k=2).exp()
    torch.testing.assert_close(top2, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # Nucleus 0.8: 0.5 + 0.3 reaches it, so the third and fourth tokens go.
    nucleus = filtered_logprobs(logits, temperature=1.0, top_p=0.8).exp()
    torch.testing.assert_close(nucleus, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    nucleus = filtered_logprobs(logits, temperature=1.0, top_p=0.81).exp()
    torch.testing.assert_close(nucleus, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)
    # Temperature 2 on log-probs is the square root of the probabilities, renormalised.
    tempered = filtered_logprobs(logits, temperature=2.0).exp()
    expected = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).sqrt()
    torch.testing.assert_close(tempered, expected / expected.sum())


def test_gumbel_sampler_draws_from_the_filtered_distribution() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20_000
    sampler = SeededGumbelSampler(list(range(n)), temperature=1.0, top_k=0, top_p=1.0, device=torch.device("cpu"))
    scores = sampler(torch.zeros((n, 1), dtype=torch.long), probs.log().expand(n, -1).clone())
    frequencies = torch.bincount(scores.argmax(dim=-1), minlength=4).float() / n
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)  # ~4 standard errors


def test_response_mask_until_stop_handles_several_stop_tokens() -> None:
    ids = torch.tensor([[5, 2, 7, 2], [9, 9, 9, 9], [3, 5, 5, 5], [6, 3, 2, 0]])
    mask = response_mask_until_stop(ids, stop_ids=[2, 3])
    assert mask.tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
        [True, True, False, False],
    ]


def test_sync_weights_keeps_sampling_from_the_learner_model(model, tokenizer) -> None:
    engine = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=3))
    engine.sync_weights(model)
    assert engine.model is model


# ------------------------------------------------------------------------------- stop strings, truncation

SEEDS = list(range(40, 56))


def _rows(batch):
    return [batch.response_ids[i][batch.response_mask[i]].tolist() for i in range(len(batch))]


def test_responses_that_hit_max_new_tokens_without_eos_are_truncated(model, tokenizer) -> None:
    batch = _generate(model, tokenizer, PROMPTS * 4, SEEDS)
    eos = tokenizer.eos_token_id
    ended = [bool(row) and row[-1] == eos for row in _rows(batch)]
    assert batch.truncated.tolist() == [not e for e in ended]
    assert any(ended) and not all(ended)
    assert all(n == 10 for n, t in zip(batch.response_lengths.tolist(), batch.truncated.tolist()) if t)


# Stop strings picked from the responses sampled without any: one character, two, and a two-character
# string (over two tokens of this character tokenizer).
PICKS = {
    "one character": lambda texts: [texts[0][2]],
    "two characters": lambda texts: [texts[1][3], texts[2][1]],
    "a two-token string": lambda texts: [texts[3][4:6]],
}


@pytest.mark.parametrize("pick", PICKS.values(), ids=PICKS.keys())
def test_a_stop_string_ends_the_response_with_the_token_that_completes_it(model, tokenizer, pick) -> None:
    plain = _generate(model, tokenizer, PROMPTS * 4, SEEDS)
    stop = pick([text for text in plain.completions if len(text) >= 6])
    stopped = _generate(model, tokenizer, PROMPTS * 4, SEEDS, stop=stop)
    hits = 0
    for i, (full, cut) in enumerate(zip(_rows(plain), _rows(stopped), strict=True)):
        text = tokenizer.decode(full, skip_special_tokens=True)
        ends = [text.find(s) + len(s) for s in stop if s in text]
        if not ends:  # no stop string: the same response (sampling is per row and per seed)
            assert (cut, stopped.completions[i]) == (full, plain.completions[i])
            assert bool(stopped.truncated[i]) == bool(plain.truncated[i])
            continue
        hits += 1
        # the trained tokens are a prefix ending with the token that completes the stop string
        assert cut == full[: len(cut)]
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in (cut, cut[:-1])]
        assert [any(s in text for s in stop) for text in texts] == [True, False]
        assert any(stopped.completions[i].endswith(s) for s in stop)  # the stop string is kept
        assert stopped.completions[i] == text[: min(ends)]
        assert not bool(stopped.truncated[i])
        assert float(stopped.rollout_logp[i, len(cut) :].abs().sum()) == 0.0
    assert hits > 0


def test_greedy_evaluation_stops_at_stop_strings_too(tokenizer) -> None:
    model = build_untrained_model(tokenizer, seed=1)  # random text, EOS rare
    plain = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=10)).greedy(PROMPTS)
    stop = sorted({text[1] for text in plain if len(text) > 2})[:2]  # a character of some completions
    stopped = HFRolloutEngine(model, tokenizer, RolloutConfig(max_new_tokens=10, stop=stop)).greedy(PROMPTS)
    for full, cut in zip(plain, stopped, strict=True):
        ends = [full.find(s) + len(s) for s in stop if s in full]
        assert cut == (full[: min(ends)] if ends else full)
    assert stopped != plain


class _PieceTokenizer:
    """Decodes ids to fixed pieces of text: tokens that span a stop string's end, or hold all of it."""

    PIECES = {0: "", 1: "ab", 2: "c}x", 3: "d", 4: "</ans", 5: "wer>tail", 9: "<eos>"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if (i == 9 and skip_special_tokens) else self.PIECES[i] for i in ids)


@pytest.mark.parametrize(
    ("tokens", "stop", "expected"),
    [
        ([1, 2, 3], ["}"], (2, "abc}", False)),  # the token completing "}" is kept; its "x" is cut from the text
        ([1, 4, 5, 3], ["</answer>"], (3, "ab</answer>", False)),  # a stop string over two tokens
        ([1, 3, 9, 2], ["}"], (3, "abd", False)),  # EOS first
        ([1, 2, 9], [], (3, "abc}x", False)),  # no stop strings: EOS ends it
        ([1, 3, 1], ["}"], (3, "abdab", True)),  # neither: truncated
        ([1, 3], ["}", "bd"], (2, "abd", False)),
        ([0, 0, 1, 2], ["}", "c"], (4, "abc", False)),  # the earliest-ending stop string cuts the text
    ],
)
def test_finish_response_keeps_the_tokens_up_to_the_stop_and_the_stop_string_in_the_text(tokens, stop, expected):
    assert finish_response(tokens, _PieceTokenizer(), [9], stop) == expected


def test_a_response_the_engine_reports_stopped_is_not_truncated() -> None:
    assert finish_response([1, 3], _PieceTokenizer(), [9], ["zz"], stopped=True) == (2, "abd", False)


def test_stop_strings_match_the_text_never_a_special_token_s_name(tokenizer) -> None:
    # transformers' own StopStringCriteria would stop at a sampled "<pad>" for the stop string "a"
    ids = tokenizer.convert_tokens_to_ids
    criteria = StopStringCriteria(tokenizer, ("a",), prompt_length=1, rows=3, device=torch.device("cpu"))
    rows = torch.tensor([[ids("1"), ids("<pad>")], [ids("1"), ids("a")], [ids("1"), ids("<bos>")]])
    assert criteria(rows, None).tolist() == [False, True, False]
    assert criteria.stopped_at.tolist() == [-1, 1, -1]
