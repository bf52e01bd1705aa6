"""What an upload tells its owner beyond "valid": the layout found, the columns used and, when a model is
named, the first prompt as that model will see it and how long the prompts are in its tokens.

The API never loads torch or transformers' tokenizer classes, so the model's tokenizer files are read
as files: `tokenizer_config.json` (its chat template and special tokens, or `chat_template.jinja`)
and `tokenizer.json`, counted with the `tokenizers` library. The template is rendered by the same
bounded child the workers use (remix_engine/chat_format.py), with the job defaults (`{prompt}`
template, no system prompt, `chat_template: auto`), so the text is what apply_chat_template gives.
The files must be on the API host: a hub id in the local Hugging Face cache, or (admin keys only) a
local model directory. Otherwise the preview says which model was asked for and renders nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from remix_engine.chat_format import ChatTemplateError, conversation, render_bounded
from remix_engine.data import SUMMARY_EXAMPLES, DatasetSummary

log = logging.getLogger(__name__)

TOKEN_COUNT_ROWS = SUMMARY_EXAMPLES  # prompts measured at upload; the worker measures all at job start
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token")


def tokenizer_dir(model: str, *, is_admin: bool, is_hub_id: bool) -> Path | None:
    """The local folder holding the model's tokenizer files, or None when the API host has none."""
    if is_hub_id:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "tokenizer_config.json")
        return Path(found).parent if isinstance(found, str) else None
    path = Path(model)
    if is_admin and path.is_absolute() and (path / "tokenizer_config.json").is_file():
        return path
    return None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        content = value.get("content")
        if isinstance(content, str):
            return content  # an AddedToken written out
    return None


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def analyse(summary: DatasetSummary, model: str | None, folder: Path | None, max_prompt_tokens: int) -> dict[str, Any]:
    """The `analysis` stored with a dataset."""
    found: dict[str, Any] = {"detected_format": summary.detected_format, "fields_used": summary.fields_used}
    if model is None:
        return found
    found["rendered_with"] = model
    if folder is None:
        found["rendered_prompt"] = None
        return found
    config = json.loads((folder / "tokenizer_config.json").read_text())
    variables = {key: text for key in SPECIAL_TOKEN_KEYS if (text := _token_text(config.get(key))) is not None}
    template = _chat_template(folder, config)
    rows = summary.examples[:TOKEN_COUNT_ROWS]
    turns = [conversation(list(e.messages) if e.messages else None, e.prompt, system_prompt=None) for e in rows]
    try:
        texts = render_bounded(turns, template, variables) if template else ["\n\n".join(t["content"] for t in c)
                                                                            for c in turns]  # fmt: skip
    except ChatTemplateError as error:
        found["rendered_prompt"] = None
        found["render_error"] = str(error)
        return found
    found["rendered_prompt"] = texts[0] if texts else None
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.is_file():
        found["prompt_tokens"] = _token_counts(tokenizer_file, texts, variables.get("bos_token"), max_prompt_tokens)
    return found


def _token_counts(tokenizer_file: Path, texts: list[str], bos: str | None, limit: int) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    if bos is not None and tokenizer.encode("x").ids[:1] == [tokenizer.token_to_id(bos)]:
        # as the workers do: the tokenizer puts it back, keep it once (chat_format.PromptFormatter)
        texts = [t[len(bos) :] if t.startswith(bos) else t for t in texts]
    counts = [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]
    return {
        "max": max(counts, default=0),
        "checked": len(counts),
        "max_prompt_tokens": limit,
        "overlong": sum(count > limit for count in counts),
    }
