"""How a dataset row becomes the text a model is prompted with.

A row is a conversation: its chat messages (OpenAI `messages`, verl's prompt lists; every turn kept,
content given as text or as a list of text parts) or, for a plain prompt, one user turn holding the
job's `prompt_template` around it. `data.system_prompt` is put first when the conversation has no
system turn. The conversation is then laid out by a chat template (`data.chat_template`):

- `auto`: the tokenizer's own template when it has one, else plain text;
- `none`: plain text (the turns' contents, separated by blank lines);
- any other value: a Jinja template of the job's own.

Templates are rendered exactly as transformers' `apply_chat_template(..., add_generation_prompt=True)`
does (its `render_jinja_template`, with the tokenizer's special tokens as variables), in a child
process with a time budget (`render_bounded`): a template is code, and one from a tenant (or from a
hub repository) could loop for ever, which must not stall a worker or the API. When the tokenizer
adds its BOS token by itself and the rendered text starts with it, that BOS is left out of the text,
so that tokenizing the text gives the ids apply_chat_template(tokenize=True) gives, on every backend.

`think_opened(text)` says whether a rendered prompt leaves a `<think>` block open (DeepSeek-R1-Distill
opens one in its generation prompt); rewards then read the completion as if it began with `<think>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

CHAT_TEMPLATE_AUTO, CHAT_TEMPLATE_NONE = "auto", "none"
CHAT_TEMPLATE_MODES = (CHAT_TEMPLATE_AUTO, CHAT_TEMPLATE_NONE)
ROLES = ("system", "user", "assistant", "tool")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RENDER_BASE_TIMEOUT_S = 30.0
RENDER_PER_PROMPT_S = 0.01
RENDER_MEMORY_BYTES = 2 << 30

Message = dict[str, str]


class ChatTemplateError(ValueError):
    """A chat template that does not compile, fails, or takes too long on the job's prompts."""


def check_chat_template_syntax(template: str) -> None:
    """Refuse a Jinja template that does not parse (cheap: parsing runs none of it)."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except TemplateSyntaxError as error:
        raise ValueError(f"chat_template is not a valid Jinja template: {error.message} (line {error.lineno})") from None


def message_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list of content parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                return None  # images, audio...: not something a text model can be prompted with
        return "\n".join(parts)
    return None


def normalise_messages(value: Any) -> list[Message] | None:
    """Chat messages as [{"role", "content": text}], or None when `value` is not a valid message list."""
    if not isinstance(value, list) or not value:
        return None
    messages = []
    for item in value:
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            return None
        text = message_text(item.get("content"))
        if text is None:
            return None
        messages.append({"role": str(item["role"]), "content": text})
    return messages


def conversation(messages: Sequence[Message] | None, prompt: str, *, system_prompt: str | None) -> list[Message]:
    """The turns a row is prompted with: its messages, or one user turn holding `prompt`."""
    turns = [dict(m) for m in messages] if messages else [{"role": "user", "content": prompt}]
    if system_prompt and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system_prompt})
    return turns


def plain_text(turns: Sequence[Message]) -> str:
    """A conversation without a chat template: the contents, separated by blank lines."""
    return "\n\n".join(turn["content"] for turn in turns)


def resolve_template(setting: str, tokenizer_template: str | None) -> str | None:
    """The Jinja template to render with, or None for plain text."""
    if setting == CHAT_TEMPLATE_NONE:
        return None
    if setting == CHAT_TEMPLATE_AUTO:
        return tokenizer_template or None
    return setting


def special_tokens(tokenizer: Any) -> dict[str, str]:
    """The variables apply_chat_template gives a template (bos_token, eos_token, ...)."""
    return {key: str(value) for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}


def adds_bos_itself(tokenizer: Any) -> bool:
    """Whether tokenizing text puts the BOS token in front by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos


def render_in_process(
    conversations: Sequence[Sequence[Message]], template: str, variables: dict[str, str]
) -> list[str]:
    """transformers' own rendering of apply_chat_template (no tokenization), in this process."""
    from transformers.utils.chat_template_utils import render_jinja_template

    # transformers annotates it `-> str`, but it returns the rendered chats and their generation indices;
    # the template variables travel in its **kwargs.
    render = cast("Callable[..., tuple[list[str], Any]]", render_jinja_template)
    rendered, _ = render(
        conversations=[list(c) for c in conversations],
        chat_template=template,
        add_generation_prompt=True,
        **variables,
    )
    return list(rendered)


def render_timeout_s(prompts: int) -> float:
    return RENDER_BASE_TIMEOUT_S + RENDER_PER_PROMPT_S * prompts


def render_bounded(
    conversations: Sequence[Sequence[Message]],
    template: str,
    variables: dict[str, str],
    *,
    timeout_s: float | None = None,
) -> list[str]:
    """`render_in_process` in a child process under a time and memory budget; ChatTemplateError past it."""
    timeout = render_timeout_s(len(conversations)) if timeout_s is None else timeout_s
    request = json.dumps({"conversations": conversations, "template": template, "variables": variables})
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "REMIX_RENDER_MEMORY_BYTES": str(RENDER_MEMORY_BYTES)}  # fmt: skip
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "remix_engine.chat_render_child"],
            input=request.encode(),
            capture_output=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ChatTemplateError(
            f"the chat template took longer than {timeout:g}s to render {len(conversations)} prompts"
        ) from None
    if completed.returncode != 0:
        detail = completed.stderr.decode(errors="replace").strip().splitlines()
        raise ChatTemplateError(f"the chat template could not be rendered: {detail[-1] if detail else 'crashed'}")
    reply = json.loads(completed.stdout)
    if "error" in reply:
        raise ChatTemplateError(f"the chat template fails on these prompts: {reply['error']}")
    return [str(text) for text in reply["rendered"]]


def think_opened(text: str) -> bool:
    """Whether the text leaves a `<think>` block open at its end."""
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


class PromptFormatter:
    """Renders rows for one tokenizer and one DataConfig-like setting (chat_template, system_prompt)."""

    def __init__(self, tokenizer: Any, *, chat_template: str, system_prompt: str | None) -> None:
        self.template = resolve_template(chat_template, getattr(tokenizer, "chat_template", None))
        self.system_prompt = system_prompt
        self.variables = special_tokens(tokenizer)
        bos = getattr(tokenizer, "bos_token", None)
        self.leading_bos = str(bos) if bos and self.template is not None and adds_bos_itself(tokenizer) else None

    @property
    def uses_chat_template(self) -> bool:
        return self.template is not None

    def format(self, rows: Sequence[tuple[Sequence[Message] | None, str]]) -> list[str]:
        """The prompt text of each (messages or None, user text) row."""
        turns = [conversation(messages, prompt, system_prompt=self.system_prompt) for messages, prompt in rows]
        if self.template is None:
            return [plain_text(t) for t in turns]
        rendered = render_bounded(turns, self.template, self.variables)
        if self.leading_bos:  # the tokenizer puts it back: keep it once
            rendered = [t[len(self.leading_bos) :] if t.startswith(self.leading_bos) else t for t in rendered]
        return rendered
