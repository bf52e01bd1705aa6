"""The Hugging Face rollout engine: groups of responses sampled from the policy, with behaviour log-probs.

`HFRolloutEngine` generates with transformers' `model.generate` (KV cache, left-padded batches). Sampling
is exact Gumbel-max: a logits processor turns the logits into the tempered, top-k/top-p filtered
log-probabilities, adds Gumbel noise drawn from a generator seeded by that row's own seed, and greedy
decoding takes the argmax. So each response depends only on its prompt and seed, never on which other
prompts share its batch, and the log-prob of every sampled token (`rollout_logp`) is read off the same
filtered distribution it was drawn from. With top_k=0 and top_p=1 this equals the learner's
`sequence_logprobs` at the same temperature, which is why job configs allow no other filter (config/rollout.py);
the filters remain for the sampler's own tests and for callers outside training.

The vLLM engine (`rollout.backend: vllm`, vllm.py) implements the same `RolloutEngine` protocol
(engine.py); `sync_weights` is how it follows the learner.

Where a response ends is decided by engine.py's `finish_response`, for both engines; this engine stops
generating there with this module's `StopStringCriteria`. transformers' own StopStringCriteria
(generate's `stop_strings=` with `tokenizer=`) is not used: it matches token strings, special tokens
included, so a stop string "a" would end a response at a sampled "<pad>", which vLLM's detokenizer
(special tokens skipped) and the rewards' text never see.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import torch
from transformers import LogitsProcessor, StoppingCriteria

from remix_engine.batch import RolloutBatch, pad_cat
from remix_engine.config import RolloutConfig
from remix_engine.rollout.engine import (
    assemble_batch,
    finish_response,
    first_stop_end,
    prompt_of_each_response,
    stop_token_ids,
)


def filtered_logprobs(logits: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) over the top-k / nucleus set; others get -inf. (B, V) -> (B, V)."""
    scores = logits.float() / temperature  # (B, V)
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (B, V)
        sorted_probs = torch.softmax(sorted_scores, dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V)
        drop_sorted = mass_before >= top_p  # the top token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return torch.log_softmax(scores, dim=-1)


class SeededGumbelSampler(LogitsProcessor):
    """A transformers logits processor: per-row seeded Gumbel-max sampling from the filtered distribution.

    Each call (one per generated position) draws one uniform vector per row from that row's generator,
    so row r's noise at step t depends only on seeds[r] and t. It also records, one call late, the
    log-prob of the token chosen at the previous step (`input_ids[:, -1]`); `finish` collects the last one.
    """

    def __init__(self, seeds: list[int], *, temperature: float, top_k: int, top_p: float, device: torch.device):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        self.token_logp: list[torch.Tensor] = []  # per step: (B,) log-prob of the chosen token
        self._pending: torch.Tensor | None = None  # (B, V) filtered log-probs of the latest step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._collect(input_ids[:, -1])
        logp = filtered_logprobs(scores, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        uniform = torch.stack(
            [torch.rand(logp.shape[-1], generator=g, device=logp.device) for g in self.generators]
        )  # (B, V)
        gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(uniform.dtype).tiny)))
        self._pending = logp
        return cast(torch.FloatTensor, logp + gumbel)  # argmax of this is a sample from exp(logp)

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Collect the final step's token log-probs; returns (B, steps)."""
        if self._pending is not None:
            self._collect(last_tokens)
        return torch.stack(self.token_logp, dim=1)

    def _collect(self, tokens: torch.Tensor) -> None:
        assert self._pending is not None
        self.token_logp.append(self._pending.gather(-1, tokens.view(-1, 1)).squeeze(-1))
        self._pending = None


class StopStringCriteria(StoppingCriteria):
    """A transformers stopping criterion: a row is done once its response's text holds a stop string.

    After each generated token it decodes the last few tokens of every row (special tokens skipped, as
    the completions and vLLM's detokenizer do), enough to hold the longest stop string, and remembers
    how many tokens each row had when it first stopped (`stopped_at`, -1: never), so that the padding
    generate appends to a finished row is never taken for response tokens.
    """

    def __init__(
        self, tokenizer: Any, stop_strings: tuple[str, ...], prompt_length: int, rows: int, device: torch.device
    ) -> None:
        self.tokenizer, self.stop_strings, self.prompt_length = tokenizer, stop_strings, prompt_length
        self.window = max(len(s) for s in stop_strings) + 8  # tokens: most hold at least one character
        self.stopped_at = torch.full((rows,), -1, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        tails = self.tokenizer.batch_decode(input_ids[:, -min(self.window, generated) :], skip_special_tokens=True)
        done = torch.tensor(
            [first_stop_end(text, self.stop_strings) is not None for text in tails],
            dtype=torch.bool,
            device=self.stopped_at.device,
        )
        first = done & (self.stopped_at < 0)
        self.stopped_at[first] = generated
        return cast(torch.BoolTensor, done.to(input_ids.device))


def response_mask_until_stop(response_ids: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """(B, L) bool: tokens up to and including the first stop token of each row."""
    is_stop = torch.isin(response_ids, torch.tensor(stop_ids, device=response_ids.device))  # (B, L)
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()  # stop tokens strictly before each position
    return stops_before == 0


@contextlib.contextmanager
def _inference_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class HFRolloutEngine:
    """Rollouts with transformers' generate on the learner's own model object (no weight copy)."""

    def __init__(self, model: Any, tokenizer: Any, cfg: RolloutConfig, *, max_prompt_tokens: int | None = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.max_prompt_tokens = max_prompt_tokens
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (load_policy sets it to eos when missing)")
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.stop_strings = tuple(cfg.stop)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to copy: generation reads the weights of the very model the learner updates."""
        if model is not self.model:
            self.model = model

    def generate(
        self,
        prompts: list[str],
        answers: list[str],
        prompt_index: list[int],
        *,
        group_size: int,
        seeds: list[int],
        policy_version: int,
        group_id_start: int,
    ) -> RolloutBatch:
        rows = prompt_of_each_response(prompts, answers, prompt_index, group_size, seeds)
        size = self.cfg.generation_batch_size
        chunks = [
            self._sample_chunk([prompts[i] for i in rows[start : start + size]], seeds[start : start + size])
            for start in range(0, len(rows), size)
        ]
        tensors = [c[:5] for c in chunks]  # the padded tensors of each chunk, without its texts and flags
        ids, pmask, rids, rmask, rlogp = (pad_cat([t[k] for t in tensors], left=k < 2) for k in range(5))
        return assemble_batch(
            prompt_ids=ids,
            prompt_mask=pmask,
            response_ids=rids,
            response_mask=rmask,
            rollout_logp=rlogp,
            completions=[text for c in chunks for text in c[5]],
            truncated=torch.cat([c[6] for c in chunks]),
            rows=rows,
            prompts=prompts,
            answers=answers,
            prompt_index=prompt_index,
            seeds=seeds,
            policy_version=policy_version,
            group_id_start=group_id_start,
            pad_token_id=self.tokenizer.pad_token_id,
            device=ids.device,
        )

    def greedy(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        limit = max_new_tokens or self.cfg.max_new_tokens
        out: list[str] = []
        for start in range(0, len(prompts), self.cfg.generation_batch_size):
            prompt_ids, prompt_mask = self._encode(prompts[start : start + self.cfg.generation_batch_size])
            recorder = self._stop_recorder(prompt_ids)
            with _inference_mode(self.model):
                sequences = self._run_generate(prompt_ids, prompt_mask, limit, logits_processor=None, stop=recorder)
            response = sequences[:, prompt_ids.shape[1] :]  # (b, Lr)
            out.extend(self._finish(response, recorder)[1])
        return out

    # ------------------------------------------------------------------------------------ internals

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (and left-truncated) prompt ids and mask, both (b, Lp), on the model's device."""
        encoded = self.tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()  # (b, Lp)
        if self.max_prompt_tokens is not None:  # with left padding, the last columns are the prompt's end
            ids, mask = ids[:, -self.max_prompt_tokens :], mask[:, -self.max_prompt_tokens :]
        device = _model_device(self.model)
        return ids.to(device), mask.to(device)

    def _sample_chunk(
        self, prompts: list[str], seeds: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        """(prompt_ids, prompt_mask, response_ids, response_mask, rollout_logp, completions, truncated) of one
        generation batch."""
        prompt_ids, prompt_mask = self._encode(prompts)  # (b, Lp)
        sampler = SeededGumbelSampler(
            seeds,
            temperature=self.cfg.temperature,
            top_k=self.cfg.top_k,
            top_p=self.cfg.top_p,
            device=prompt_ids.device,
        )
        recorder = self._stop_recorder(prompt_ids)
        with _inference_mode(self.model):
            sequences = self._run_generate(
                prompt_ids, prompt_mask, self.cfg.max_new_tokens, logits_processor=sampler, stop=recorder
            )
        response_ids = sequences[:, prompt_ids.shape[1] :]  # (b, Lr)
        rollout_logp = sampler.finish(response_ids[:, -1])  # (b, Lr)
        response_mask, completions, truncated = self._finish(response_ids, recorder)
        return (
            prompt_ids,
            prompt_mask,
            response_ids,
            response_mask,
            rollout_logp.masked_fill(~response_mask, 0.0),
            completions,
            truncated,
        )

    def _stop_recorder(self, prompt_ids: torch.Tensor) -> StopStringCriteria | None:
        if not self.stop_strings:
            return None
        return StopStringCriteria(
            self.tokenizer, self.stop_strings, prompt_ids.shape[1], prompt_ids.shape[0], prompt_ids.device
        )

    def _finish(
        self, response_ids: torch.Tensor, recorder: StopStringCriteria | None
    ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """(response_mask (b, Lr), completions, truncated (b,)) of generated rows (see `finish_response`)."""
        if recorder is None:  # EOS tokens only: the whole batch at once
            mask = response_mask_until_stop(response_ids, self.stop_ids)  # (b, Lr)
            ended = torch.isin(response_ids, torch.tensor(self.stop_ids, device=response_ids.device)).any(dim=1)
            texts = self.tokenizer.batch_decode(
                response_ids.masked_fill(~mask, self.tokenizer.pad_token_id), skip_special_tokens=True
            )
            return mask, texts, ~ended
        width = response_ids.shape[1]
        lengths, texts, truncated = [], [], []
        for row, stopped_at in zip(response_ids.tolist(), recorder.stopped_at.tolist(), strict=True):
            generated = row if stopped_at < 0 else row[:stopped_at]  # generate pads a stopped row
            kept, text, cut_off = finish_response(
                generated, self.tokenizer, self.stop_ids, self.stop_strings, stopped=stopped_at >= 0
            )
            lengths.append(kept)
            texts.append(text)
            truncated.append(cut_off)
        device = response_ids.device
        mask = torch.arange(width, device=device).unsqueeze(0) < torch.tensor(lengths, device=device).unsqueeze(1)
        return mask, texts, torch.tensor(truncated, dtype=torch.bool, device=device)

    def _run_generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        logits_processor: Any,
        stop: StoppingCriteria | None = None,
    ) -> torch.Tensor:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        processors = LogitsProcessorList([logits_processor] if logits_processor is not None else [])
        # Stop strings through this module's StopStringCriteria (see the module docstring for why not
        # generate's `stop_strings=` and `tokenizer=`); it also records where each row stopped.
        criteria = StoppingCriteriaList([stop] if stop is not None else [])
        with _model_generation_defaults_hidden(self.model):
            sequences: torch.Tensor = self.model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask.long(),
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=criteria,
            )
            return sequences


@contextlib.contextmanager
def _model_generation_defaults_hidden(model: Any) -> Iterator[None]:
    """Hide the checkpoint's generation_config (repetition penalties, suppressed tokens, ...) during generate.

    generate() fills every unset option from model.generation_config; any processor it adds there would
    make the sampled distribution differ from the one the learner scores.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig(
        eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id, bos_token_id=saved.bos_token_id
    )
    try:
        yield
    finally:
        model.generation_config = saved


def _model_device(model: Any) -> torch.device:
    device: torch.device = next(model.parameters()).device
    return device
