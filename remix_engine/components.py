"""Names of the algorithm's interchangeable parts, importable without torch.

The implementations are registered under these names in remix_engine/advantages.py (`ADVANTAGES`)
and remix_engine/losses.py (`POLICY_LOSSES`), which import torch. The job schema, which the API
process loads, validates `algorithm.advantage_estimator` and `algorithm.policy_loss` against these
lists instead; a test checks that each list equals the keys of its registry.
"""

from __future__ import annotations

ADVANTAGE_ESTIMATOR_NAMES: tuple[str, ...] = ("gae", "grpo")
POLICY_LOSS_NAMES: tuple[str, ...] = ("mix_ppg", "ppo_clip")
