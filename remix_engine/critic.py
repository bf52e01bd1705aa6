"""Value model for PPO: the policy's transformer backbone with a scalar head per token.

Initialised from the base model's weights (verl convention), so any Hugging Face causal LM
works. values(batch) returns V(s_h) for every response position h, aligned with the
response tokens exactly like the policy's log-probs.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from remix_engine.batch import RolloutBatch


class ValueModel(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        # The policy is a transformers causal LM; nn.Module's typing does not know its attributes.
        self.backbone: nn.Module = copy.deepcopy(cast(nn.Module, policy.base_model))
        config: Any = policy.config
        hidden: int = config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: RolloutBatch) -> torch.Tensor:
        full_width = batch.response_ids.shape[1]
        batch = batch.trimmed()  # columns that are padding in every row change no value
        input_ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)  # (B, Lp+Lr)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).long()  # (B, Lp+Lr)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids
        ).last_hidden_state  # (B, Lp+Lr, H)
        prompt_len = batch.prompt_ids.shape[1]
        # The state before response token h is the hidden state one position to its left.
        states = hidden[:, prompt_len - 1 : prompt_len - 1 + batch.response_ids.shape[1]]  # (B, Lr, H)
        values: torch.Tensor = self.head(states.to(self.head.weight.dtype)).squeeze(-1)  # (B, Lr)
        values = values * batch.response_mask
        return nn.functional.pad(values, (0, full_width - values.shape[1]))  # (B, Lr), 0 on padding
