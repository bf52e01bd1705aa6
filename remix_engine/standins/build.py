"""Writing a stand-in: the model folder (config, random weights, generation config, tokenizer files and
the `remix_standin.json` record written last), and the cached default-sized stand-in of each family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, cast

from remix_engine.cache import build_once, default_cache_dir
from remix_engine.standins.families import FamilySpec, family_spec
from remix_engine.standins.tokenizer import (
    DEFAULT_BPE_VOCAB_SIZE,
    special_tokens_map,
    tokenizer_config,
    train_tokenizer,
)

STANDIN_VERSION = "v1"
META_FILENAME = "remix_standin.json"  # written last: the folder is complete once it exists

Dtype = Literal["float32", "bfloat16"]


# -------------------------------------------------------------------------------------------- model


def _model_config(spec: FamilySpec, vocab_size: int, ids: dict[str, int], sizes: dict[str, Any]) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "num_key_value_heads": sizes["num_kv_heads"],
        "max_position_embeddings": sizes["max_position_embeddings"],
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": sizes["tie_word_embeddings"],
        "bos_token_id": ids[spec.config_bos_token],
        "eos_token_id": ids[spec.config_eos_token],
        "use_cache": True,
        "attention_dropout": 0.0,
    }
    if spec.model_type == "qwen2":
        return Qwen2Config(
            **common,
            use_sliding_window=False,
            sliding_window=sizes["max_position_embeddings"],
            max_window_layers=sizes["num_layers"],
        )
    return LlamaConfig(
        **common,
        attention_bias=False,
        mlp_bias=False,
        head_dim=sizes["hidden_size"] // sizes["num_heads"],
        pretraining_tp=1,
    )


def _generation_config(spec: FamilySpec, ids: dict[str, int]) -> Any:
    from transformers import GenerationConfig

    eos = [ids[token] for token in spec.generation_eos_tokens]
    return GenerationConfig(
        bos_token_id=ids[spec.generation_bos_token],
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=ids[spec.pad_token],
        **spec.sampling_defaults,
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_standin(
    family: str,
    out_dir: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    bpe_vocab_size: int = DEFAULT_BPE_VOCAB_SIZE,
    tie_word_embeddings: bool | None = None,
    dtype: Dtype = "float32",
    seed: int = 0,
) -> Path:
    """Write the stand-in of `family` into `out_dir` (missing or empty) and return `out_dir`.

    Random weights from `seed` (the global RNG is left alone); `tie_word_embeddings` defaults to the
    family's (tied for Qwen2.5 small models, untied for the others). Same arguments -> byte-identical files.
    """
    import torch  # here, not at the top: importing this module (the test fixtures do) stays light
    from transformers import AutoModelForCausalLM

    spec = family_spec(family)
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must divide by num_heads ({num_heads}), "
            f"and num_heads by num_kv_heads ({num_kv_heads})"
        )
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(family, bpe_vocab_size)
    # train_tokenizer adds every one of the family's added tokens, so each has an id.
    ids = cast(dict[str, int], {content: tokenizer.token_to_id(content) for content, _ in spec.added_tokens})
    tokenizer_size = tokenizer.get_vocab_size()
    sizes = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings,
    }
    vocab_size = _round_up(tokenizer_size, spec.pad_vocab_to_multiple_of)
    config = _model_config(spec, vocab_size, ids, sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)  # float32: torch's default dtype
    model = model.to(getattr(torch, dtype))
    model.generation_config = _generation_config(spec, ids)
    model.save_pretrained(out_dir, safe_serialization=True)

    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(spec, tokenizer, max_position_embeddings))
    _write_json(out_dir / "special_tokens_map.json", special_tokens_map(spec))
    meta = {
        "family": family,
        "version": STANDIN_VERSION,
        "seed": seed,
        "architecture": type(model).__name__,
        **sizes,
        "dtype": dtype,
        "bpe_vocab_size": bpe_vocab_size,
        "tokenizer_size": tokenizer_size,
        "model_vocab_size": vocab_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "bos_token": spec.bos_token,
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "generation_eos_tokens": list(spec.generation_eos_tokens),
        "first_added_token_id": tokenizer_size - len(spec.added_tokens),
        "token_ids": {token: ids[token] for token in _named_tokens(spec)},
        "generation_eos_token_ids": [ids[token] for token in spec.generation_eos_tokens],
    }
    _write_json(out_dir / META_FILENAME, meta)  # last: marks the folder complete
    return out_dir


def _named_tokens(spec: FamilySpec) -> list[str]:
    """bos, eos, pad, the generation stop tokens and the chat tokens, once each, in that order."""
    named = [spec.bos_token, spec.eos_token, spec.pad_token, *spec.generation_eos_tokens, *spec.chat_tokens]
    return list(dict.fromkeys(token for token in named if token is not None))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_standin_meta(model_dir: Path) -> dict[str, Any]:
    """What `build_standin` recorded about a folder: family, sizes, vocabulary sizes, added-token ids."""
    meta: dict[str, Any] = json.loads((Path(model_dir) / META_FILENAME).read_text(encoding="utf-8"))
    return meta


# -------------------------------------------------------------------------------------------- cache


def standin_dir(family: str, cache_dir: Path | None = None) -> Path:
    """Where the default-sized stand-in of `family` lives in the cache (built or not)."""
    family_spec(family)
    return Path(cache_dir or default_cache_dir()) / "standins" / f"{family}-{STANDIN_VERSION}"


def standin_path(family: str, cache_dir: Path | None = None) -> Path:
    """The cached default-sized stand-in of `family` (seed 0), built atomically on first use (~1 s)."""
    target = standin_dir(family, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, lambda tmp: build_standin(family, tmp), marker=META_FILENAME)
