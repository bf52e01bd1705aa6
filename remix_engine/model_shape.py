"""The shape of a decoder-only model, read without weights, torch or transformers where possible.

`ModelShape` is what the memory pre-flight (remix_engine/preflight.py) counts with: a dense
parameter count and the sizes of the activations, the KV cache and the logits. It comes from a
transformers config, a plain config.json dict, or a bare parameter count.

`offline_model_config` / `offline_model_shape` read a model's config.json without network, torch or
transformers (builtin models are described here, local folders are read directly, hub ids are
looked up in the local Hugging Face cache only): the HTTP API checks jobs with them.
`load_model_config` is the worker's reading, through transformers' AutoConfig.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remix_engine.config import TINY_CHAT_MODEL_ID, TINY_MODEL_ID, TINY_REASONER_MODEL_ID, ModelConfig
from remix_engine.hub_ids import is_hub_id

log = logging.getLogger(__name__)

# Architectures whose MLP has two matrices (up, down); the others are gated (gate, up, down).
_UNGATED_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode", "starcoder2"}
# config.json names of the same quantity in other architectures (transformers' attribute_map).
_CONFIG_ALIASES = {
    "hidden_size": ("n_embd", "d_model"),
    "num_hidden_layers": ("n_layer", "num_layers"),
    "num_attention_heads": ("n_head", "num_heads"),
    "intermediate_size": ("n_inner", "ffn_dim"),
}
# The builtin tiny Llama (remix_engine/toy.py: build_untrained_model), described without torch.
TINY_MODEL_CONFIG = {
    "model_type": "llama",
    "vocab_size": 101,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,  # toy.MAX_POSITIONS: bounds vLLM's context (context_length.py)
    "tie_word_embeddings": True,
}
# The builtin tiny chat model (remix_engine/toy_chat.py: MODEL_SIZES on the Qwen2.5-Instruct stand-in, whose
# 1024 BPE tokens + 22 added ones are padded to 1152 embedding rows), described without torch.
TINY_CHAT_MODEL_CONFIG = {
    "model_type": "qwen2",
    "vocab_size": 1152,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,  # toy_chat.MODEL_SIZES: bounds vLLM's context (context_length.py)
    "tie_word_embeddings": True,
}
# The builtin tiny reasoning model (remix_engine/toy_reasoning.py: MODEL_SIZES on the tiny Llama's layout).
TINY_REASONER_MODEL_CONFIG = {
    **TINY_MODEL_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 128,
    "max_position_embeddings": 128,  # toy_reasoning.MAX_POSITIONS
}
BUILTIN_MODEL_CONFIGS = {
    TINY_MODEL_ID: TINY_MODEL_CONFIG,
    TINY_CHAT_MODEL_ID: TINY_CHAT_MODEL_CONFIG,
    TINY_REASONER_MODEL_ID: TINY_REASONER_MODEL_CONFIG,
}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only transformer."""

    num_params: int
    hidden_size: int | None = None
    num_layers: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool = False

    @property
    def known(self) -> bool:
        return self.hidden_size is not None

    @staticmethod
    def from_config(config: Any) -> ModelShape:
        """Dense decoder parameter count from a transformers config (Llama, Qwen, Mistral, GPT-2, ...)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(text.hidden_size)
        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
        intermediate = int(getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden)
        vocab = int(text.vocab_size)
        mlp_matrices = 2 if getattr(text, "model_type", "") in _UNGATED_MLP else 3
        attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
        per_layer = attention + mlp_matrices * hidden * intermediate + 2 * hidden  # + two norms
        tied = bool(getattr(text, "tie_word_embeddings", False))
        embeddings = vocab * hidden * (1 if tied else 2)
        return ModelShape(
            num_params=embeddings + layers * per_layer + hidden,  # + final norm
            hidden_size=hidden,
            num_layers=layers,
            intermediate_size=intermediate,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            tied_embeddings=tied,
        )

    @staticmethod
    def from_dict(config: dict[str, Any]) -> ModelShape:
        """The shape from a config.json as a plain dict (no transformers needed)."""
        return ModelShape.from_config(_DictConfig(config))

    def lora_params(self, r: int, target_modules: list[str]) -> int:
        """Adapter parameters: r * (fan_in + fan_out) per targeted matrix per layer."""
        if not self.known:
            raise ValueError("LoRA memory estimates need the model config, not only a parameter count")
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim  # type: ignore[operator]  # a known shape has every size
        fans = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        per_layer = sum(r * sum(fans.get(name, (h, h))) for name in target_modules)  # type: ignore[arg-type,misc]  # a known shape has every size
        return self.num_layers * per_layer  # type: ignore[operator]  # a known shape has every size


class _DictConfig:
    """Attribute access to a config.json dict, with the common aliases and a nested text_config."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__["_data"]
        for key in (name, *_CONFIG_ALIASES.get(name, ())):
            if data.get(key) is not None:
                return data[key]
        if name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            raise AttributeError(f"config.json has no {name}")
        return None

    def get_text_config(self) -> _DictConfig:
        text = self._data.get("text_config")
        return _DictConfig({**self._data, **text}) if isinstance(text, dict) else self


def load_model_config(model_cfg: ModelConfig) -> Any:
    """The transformers config of the job's model, without downloading weights.

    Hub ids and local folders go through AutoConfig; the builtin tiny model's architecture is
    built from its definition (which imports torch; it is small enough never to need a check).
    """
    name = model_cfg.name_or_path
    if name == TINY_MODEL_ID:
        from remix_engine.toy import build_char_tokenizer, build_untrained_model

        return build_untrained_model(build_char_tokenizer(), seed=0).config
    from transformers import AutoConfig

    if name in (TINY_CHAT_MODEL_ID, TINY_REASONER_MODEL_ID):
        config: dict[str, Any] = dict(BUILTIN_MODEL_CONFIGS[name])
        return AutoConfig.for_model(config.pop("model_type"), **config)

    return AutoConfig.from_pretrained(name, trust_remote_code=model_cfg.trust_remote_code)


def offline_model_config(model_cfg: ModelConfig) -> dict[str, Any] | None:
    """The model's config.json as a dict when it can be read here without network, torch or transformers.

    Builtin models are known; a local folder is read directly; a hub id is looked up in the local
    Hugging Face cache only. None when the config is not available (or not a JSON object): the caller
    then skips its check, and the worker's own checks still run before training.
    """
    name = model_cfg.name_or_path
    if name in BUILTIN_MODEL_CONFIGS:
        return dict(BUILTIN_MODEL_CONFIGS[name])
    if name.startswith("builtin:"):
        return None
    path = _local_config_path(name)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.info("cannot read the config of %s from %s (%s)", name, path, error)
        return None
    return data if isinstance(data, dict) else None


def offline_model_shape(model_cfg: ModelConfig) -> ModelShape | None:
    """The model's shape from `offline_model_config`; None when that is unavailable or not understood."""
    data = offline_model_config(model_cfg)
    if data is None:
        return None
    try:
        return ModelShape.from_dict(data)
    except (ValueError, TypeError, AttributeError, ZeroDivisionError) as error:
        log.info("memory pre-flight skipped: cannot read the shape of %s (%s)", model_cfg.name_or_path, error)
        return None


def _local_config_path(name: str) -> Path | None:
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return folder / "config.json"
    if not is_hub_id(name):
        return None
    from huggingface_hub import try_to_load_from_cache  # no network: the cache only

    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached) if isinstance(cached, str) else None
