"""Length-bucketed micro-batches: which rows of a batch share one forward pass, and each one's share of a loss.

A forward pass costs about rows x (longest prompt + longest response) tokens of its rows, padding
included. Sorting rows by length before cutting them into passes under a token budget keeps short
responses from being padded to the longest one of the whole batch. The learner accumulates the
gradients of a minibatch's micro-batches, each loss weighted by `loss_share`, so the sum is the
gradient of the minibatch's loss; the no-grad log-prob passes put the rows back in their order.
"""

from __future__ import annotations

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.losses import agg_denominator


def length_buckets(batch: RolloutBatch, *, max_rows: int, max_tokens: int | None) -> list[torch.Tensor]:
    """Row indices of each pass over `batch`; every row is in exactly one.

    Without `max_tokens`: consecutive chunks of `max_rows` rows, in the batch's order. With it: rows
    sorted by prompt plus response length, cut where the next row would take the pass over `max_rows`
    rows or over `max_tokens` padded tokens (rows x (longest prompt + longest response) of the pass); a
    row longer than the budget gets a pass of its own.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is None:
        return list(torch.arange(len(batch)).split(max_rows))
    prompt_lengths = batch.prompt_mask.bool().sum(dim=1).cpu()  # (B,)
    response_lengths = batch.response_mask.bool().sum(dim=1).cpu()  # (B,)
    order = torch.argsort(prompt_lengths + response_lengths, stable=True).tolist()
    buckets: list[list[int]] = []
    current: list[int] = []
    longest_prompt = longest_response = 0
    for row in order:
        prompt, response = int(prompt_lengths[row]), int(response_lengths[row])
        grown_prompt, grown_response = max(longest_prompt, prompt), max(longest_response, response)
        if current and (len(current) >= max_rows or (len(current) + 1) * (grown_prompt + grown_response) > max_tokens):
            buckets.append(current)
            current, grown_prompt, grown_response = [], prompt, response
        current.append(row)
        longest_prompt, longest_response = grown_prompt, grown_response
    if current:
        buckets.append(current)
    return [torch.tensor(rows, dtype=torch.long) for rows in buckets]


def loss_share(part_mask: torch.Tensor, whole_mask: torch.Tensor, aggregation: str) -> float:
    """Weight of a part's aggregated loss so the weighted parts add up to the whole batch's loss.

    Every aggregation divides by a count that adds up over rows (valid tokens, non-empty sequences,
    sequences: `agg_denominator`), so part loss x part count / whole count sums to the whole loss.
    """
    whole = float(agg_denominator(whole_mask, aggregation))
    return float(agg_denominator(part_mask, aggregation)) / max(whole, 1.0)
