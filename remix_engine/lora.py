"""LoRA training of the policy with peft: adapters, cheap policy copies, merged checkpoints.

`LoraPolicy` injects peft LoRA layers into the loaded model *in place*: the trainer keeps using
the same transformers model object (generation, log-probs and the PPO critic work unchanged) but
only the adapter weights require gradients. Copies of the policy that ReMix needs (the precedent
pi_{t-1}, and the KL anchor after reincarnation) are `AdapterSnapshot`s: adapter weights only,
swapped into the live model for a forward pass, so a copy costs megabytes, not a second model.
Before reincarnation the anchor is the base model itself (adapters disabled).

Checkpoints get a `MergedExport`: the folder holds full weights W + (alpha/r) B A that load with
`AutoModelForCausalLM.from_pretrained`, and `adapter/` holds the peft adapter, which loads with
`PeftModel.from_pretrained(base, path / "adapter")` and restores training exactly.

Deliberately omitted: QLoRA (quantised base), several named adapters, LoRA on embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import peft
import torch
from peft.tuners.lora import LoraLayer

from remix_engine.config import LoraConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER_DIR = "adapter"
ADAPTER_NAME = "default"  # peft's name of the single adapter
_BASE_LAYER = ".base_layer"


class LoraPolicy:
    """A transformers causal LM with LoRA adapters injected; `model` stays the same object."""

    def __init__(self, model: torch.nn.Module, cfg: LoraConfig) -> None:
        peft_cfg = peft.LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft annotates int but only divides it by r
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        try:
            self.peft_model = peft.get_peft_model(model, peft_cfg)
        except ValueError as exc:  # peft names the missing modules
            raise ValueError(f"lora.target_modules {cfg.target_modules} do not fit the model: {exc}") from exc
        # `model`, now with LoRA layers and a frozen base; peft types it as a plain Module.
        self.model = cast("PreTrainedModel", self.peft_model.get_base_model())
        self.adapter_params = {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the adapter weights (the only trained weights)."""
        return {name: p.detach().clone() for name, p in self.adapter_params.items()}

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.adapter_params):
            raise ValueError("adapter weights do not match this LoRA configuration (other modules or rank)")
        for name, param in self.adapter_params.items():
            param.copy_(state[name])

    @contextlib.contextmanager
    def weights(self, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
        """Run the model with `state` as adapter weights (None: adapters disabled), then restore exactly."""
        if state is None:
            with self.peft_model.disable_adapter():
                yield
            return
        live = self.adapter_state()
        self.load_adapter_state(state)
        try:
            yield
        finally:
            self.load_adapter_state(live)

    def load_adapter_dir(self, path: Path) -> None:
        """Adapter weights saved by `save_adapter` (bit-exact: safetensors keeps the dtype)."""
        saved = peft.load_peft_weights(str(path), device=str(next(self.model.parameters()).device))
        # peft annotates a bare namedtuple; it is load_state_dict's (missing_keys, unexpected_keys).
        result: Any = peft.set_peft_model_state_dict(self.peft_model, saved, adapter_name=ADAPTER_NAME)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise ValueError(f"adapter in {path} lacks weights for {missing[:3]}")

    def save_adapter(self, path: Path) -> None:
        self.peft_model.save_pretrained(str(path))

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights under the base model's own names, each LoRA layer merged as W + delta."""
        state: dict[str, torch.Tensor] = {}
        # Each concrete LoRA layer (Linear, Embedding, Conv) has get_delta_weight; their LoraLayer base lacks it.
        lora_layers: dict[str, Any] = {name: m for name, m in self.model.named_modules() if isinstance(m, LoraLayer)}
        for name, tensor in self.model.state_dict().items():
            if ".lora_" in name:
                continue
            owner = name.rsplit(".", 2)[0] if _BASE_LAYER in name else None
            plain = name.replace(_BASE_LAYER, "")
            if owner is not None and name.endswith(_BASE_LAYER + ".weight") and owner in lora_layers:
                delta = lora_layers[owner].get_delta_weight(ADAPTER_NAME)
                tensor = (tensor.float() + delta.float()).to(tensor.dtype)
            state[plain] = tensor
        return state


class AdapterSnapshot(torch.nn.Module):
    """A frozen copy of the policy that stores only adapter weights (None: the base model).

    Calling it runs the live model with these adapter weights swapped in (no gradients); its
    `state_dict` / `load_state_dict` are the adapter weights, as the trainer's checkpoints expect.
    """

    def __init__(self, lora: LoraPolicy, state: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self._lora = [lora]  # a list, so nn.Module does not register the live model as a child
        self.state = None if state is None else {k: v.detach().clone() for k, v in state.items()}

    @property
    def config(self) -> Any:
        return self._lora[0].model.config

    def forward(self, *, logits_to_keep: int = 0, **kwargs: Any) -> Any:
        lora = self._lora[0]
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        with torch.no_grad(), lora.weights(self.state):
            return lora.model(**kwargs)

    def state_dict(self, *_args: Any, **_kwargs: Any) -> dict[str, torch.Tensor] | None:  # type: ignore[override]  # None: the base model's snapshot
        return None if self.state is None else {k: v.clone() for k, v in self.state.items()}

    def load_state_dict(  # type: ignore[override]  # returns nothing: the checkpoints only hand it adapter weights
        self, state: dict[str, torch.Tensor], *_args: Any, **_kwargs: Any
    ) -> None:
        if set(state) != set(self._lora[0].adapter_params):
            raise ValueError("adapter snapshot: weights do not match the policy's adapters")
        self.state = {k: v.detach().clone() for k, v in state.items()}


class MergedExport:
    """What `checkpoint.save_checkpoint` saves for a LoRA policy: merged weights plus `adapter/`."""

    def __init__(self, lora: LoraPolicy) -> None:
        self.lora = lora

    def save_pretrained(self, path: Path, **kwargs: Any) -> None:
        path = Path(path)
        self.lora.model.save_pretrained(path, state_dict=self.lora.merged_state_dict(), **kwargs)
        self.lora.save_adapter(path / ADAPTER_DIR)
