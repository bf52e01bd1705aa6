"""Loading a policy model and computing its per-token log-probabilities of sampled responses.

`load_policy` accepts a builtin model id, a local Hugging Face model directory or a
hub id, and returns `(model, tokenizer)` with a pad token and left padding. `sequence_logprobs` is the
learner-side log-prob of every response token of a `RolloutBatch` under the tempered distribution
(logits / temperature), with the per-token entropy; it is the quantity the rollout engine reports as
`rollout_logp` at sampling time, so behaviour and learner log-probs agree to float precision.

Deliberately omitted: top-k / top-p renormalisation in `sequence_logprobs` (the learner scores the
full tempered distribution, as verl and TRL do; job configs refuse top-k/top-p sampling instead, whose
behaviour log-probs would not match, and a filtered learner would give replayed and reference tokens
outside its kept set a log-prob of -inf), sharding, and quantised loading.
"""

from __future__ import annotations

import inspect
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from remix_engine.batch import RolloutBatch
from remix_engine.config import (
    BUILTIN_MODEL_IDS,
    JOB_MODEL_PREFIX,
    TINY_CHAT_MODEL_ID,
    TINY_MODEL_ID,
    TINY_REASONER_MODEL_ID,
    ModelConfig,
)

BUILTIN_PREFIX = "builtin:"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """The model id names nothing that can be loaded; the message says which id and why."""


def _builtin_model_dir(model_id: str) -> Path:
    if model_id == TINY_MODEL_ID:
        from remix_engine.toy import build_tiny_model

        return build_tiny_model()
    if model_id == TINY_CHAT_MODEL_ID:
        from remix_engine.toy_chat import build_tiny_chat_model

        return build_tiny_chat_model()
    if model_id == TINY_REASONER_MODEL_ID:
        from remix_engine.toy_reasoning import build_tiny_reasoner

        return build_tiny_reasoner()
    raise ModelLoadError(f"unknown builtin model {model_id!r}; available builtin models: {list(BUILTIN_MODEL_IDS)}")


def _looks_like_local_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that is path-shaped must be local.
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_model_source(model_id: str) -> str:
    """A local directory or hub id for from_pretrained; builtin ids are built (or read from cache) first."""
    if model_id.startswith(BUILTIN_PREFIX):
        return str(_builtin_model_dir(model_id))
    if model_id.startswith(JOB_MODEL_PREFIX):
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it names a checkpoint of a service job, which only a worker "
            "resolves; here pass the checkpoint folder itself (remix download JOB_ID --step N)"
        )
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"cannot load model {model_id!r}: {path} is not a Hugging Face model directory (no config.json)"
            )
        return str(path)
    if _looks_like_local_path(model_id):
        raise ModelLoadError(f"cannot load model {model_id!r}: local path {str(path)!r} does not exist")
    return model_id


def load_policy(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) for `model_cfg.name_or_path`; the tokenizer pads on the left with a real pad token.

    Local directories and hub ids already in the Hugging Face cache load without network access. Raises
    ModelLoadError naming the id when it is unknown, missing, unreadable, or not cached while the Hub
    cannot be reached. The model is returned in eval mode, as `from_pretrained` leaves it.
    """
    model_id = model_cfg.name_or_path
    source = resolve_model_source(model_id)
    try:
        model, tokenizer = _from_pretrained(source, model_cfg, local_only=True)
    except _LOAD_ERRORS as exc:
        if Path(source).is_dir():
            raise ModelLoadError(f"cannot load model {model_id!r} from {source}: {_first_line(exc)}") from exc
        _require_on_hub(model_id)  # fails fast (one request, no retries) instead of from_pretrained's backoff
        try:
            model, tokenizer = _from_pretrained(source, model_cfg, local_only=False)
        except _LOAD_ERRORS as hub_exc:
            raise ModelLoadError(f"cannot load model {model_id!r}: {_first_line(hub_exc)}") from hub_exc
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"cannot load model {model_id!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token  # masks, not the pad id, decide what is padding
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


# Missing files, unreachable hub, unknown architecture, malformed config.
_LOAD_ERRORS = (OSError, ValueError, KeyError)


def _from_pretrained(source: str, model_cfg: ModelConfig, *, local_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = {"trust_remote_code": model_cfg.trust_remote_code, "local_files_only": local_only}
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=_DTYPES[model_cfg.dtype], **common)
    return model, tokenizer


def _require_on_hub(model_id: str) -> None:
    """Raise ModelLoadError unless the Hugging Face Hub is reachable and serves `model_id`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    try:
        HfApi().model_info(model_id, timeout=10)
    except HFValidationError as exc:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: not an existing local path and not a valid hub id ({_first_line(exc)})"
        ) from exc
    except OfflineModeIsEnabled as exc:
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        ) from exc
    except HfHubHTTPError as exc:  # includes repository-not-found and gated/private repositories
        raise ModelLoadError(
            f"cannot load model {model_id!r}: not found on the Hugging Face Hub or not accessible ({_first_line(exc)})"
        ) from exc
    except Exception as exc:  # network errors surface as httpx/requests/OSError types depending on version
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it is not a local directory, not in the local "
            f"Hugging Face cache, and the Hugging Face Hub is unreachable "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@cache
def _accepts_logits_to_keep(forward_type: type[Any]) -> bool:
    return "logits_to_keep" in inspect.signature(forward_type.forward).parameters


def sequence_logprobs(
    model: Any, batch: RolloutBatch, *, temperature: float, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (B, Lr) of each response token under softmax(logits / temperature), and its entropy (B, Lr).

    One forward over [prompt (left-padded) | response (right-padded)] with position ids counted over real
    tokens, so padding does not shift positions, and without the columns that are padding in every row
    (`RolloutBatch.trimmed`). Positions outside response_mask are exactly 0.
    Differentiable; call under torch.no_grad() when no gradient is needed.
    """
    full_width = batch.response_ids.shape[1]
    batch = batch.trimmed()
    prompt_ids, response_ids = batch.prompt_ids, batch.response_ids  # (B, Lp), (B, Lr)
    response_mask = batch.response_mask.bool()  # (B, Lr)
    num_response = response_ids.shape[1]
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, Lp+Lr)
    attention_mask = torch.cat([batch.prompt_mask.long(), response_mask.long()], dim=1)  # (B, Lp+Lr)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, Lp+Lr)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
    }
    if _accepts_logits_to_keep(type(model)):  # type: ignore[arg-type]  # a class is hashable; mypy checks its instances' __hash__
        kwargs["logits_to_keep"] = num_response + 1  # only positions that predict response tokens (+1 spare)
    logits = model(**kwargs, use_cache=False).logits  # (B, K, V) with K >= Lr + 1
    # Position Lp-1+j predicts response token j: the last Lr+1 positions, minus the final one.
    logits = logits[:, -(num_response + 1) : -1].float() / temperature  # (B, Lr, V)
    logp_all = torch.log_softmax(logits, dim=-1)  # (B, Lr, V)
    logp = logp_all.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)  # (B, Lr)
    logp = logp.masked_fill(~response_mask, 0.0)
    # Back to the batch's own width: the trimmed columns are padding, whose log-prob is 0.
    restore = (0, full_width - num_response)
    if not with_entropy:
        return torch.nn.functional.pad(logp, restore), None
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)  # (B, Lr)
    return torch.nn.functional.pad(logp, restore), torch.nn.functional.pad(
        entropy.masked_fill(~response_mask, 0.0), restore
    )
