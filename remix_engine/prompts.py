"""The prompts of a job, as the model sees them: rendered once, measured, never truncated.

`PromptSet.prepare(examples, what)` renders each example with the job's prompt template, system
prompt and chat template (remix_engine/chat_format.py), counts its tokens with the policy's tokenizer,
and applies `data.overlong_prompts` to those longer than `data.max_prompt_tokens`: `drop` leaves them
out (counted in `dropped`, reported as an event and in every step's metrics), `error` fails the job
with `OverlongPromptsError` naming the count and the longest. Training, evaluation and the samples on
the dashboard all use these texts.

`completions_for_rewards` gives rewards each completion as the model wrote it after its prompt: when
the prompt left a `<think>` block open (DeepSeek-R1-Distill's generation prompt), the completion is
read as if it began with `<think>`, so the answer is looked for after `</think>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from remix_engine.chat_format import THINK_OPEN, PromptFormatter, think_opened
from remix_engine.config import DataConfig
from remix_engine.data import Example
from remix_engine.prompt_template import render_prompt


class OverlongPromptsError(ValueError):
    """Prompts longer than data.max_prompt_tokens under data.overlong_prompts: error."""


class PromptSet:
    def __init__(self, tokenizer: Any, data: DataConfig) -> None:
        self.tokenizer = tokenizer
        self.data = data
        self.formatter = PromptFormatter(tokenizer, chat_template=data.chat_template, system_prompt=data.system_prompt)
        self.dropped: dict[str, int] = {}  # what ("training", ...) -> prompts left out

    def render(self, examples: Sequence[Example]) -> list[str]:
        template = self.data.prompt_template
        rows = [
            (ex.messages, render_prompt(template, ex.prompt) if ex.messages is None else ex.prompt)
            for ex in examples
        ]
        return self.formatter.format(rows)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def prepare(self, examples: Sequence[Example], what: str) -> tuple[list[Example], list[str]]:
        """The examples that fit and their prompt texts, aligned."""
        texts = self.render(examples)
        counts = self.token_counts(texts)
        limit = self.data.max_prompt_tokens
        fits = [count <= limit for count in counts]
        overlong = len(fits) - sum(fits)
        if overlong:
            longest = max(counts)
            layout = " with the chat template" if self.formatter.uses_chat_template else ""
            message = (
                f"{overlong} of {len(fits)} {what} prompts are longer than data.max_prompt_tokens={limit} "
                f"(the longest has {longest} tokens{layout})"
            )
            if self.data.overlong_prompts == "error" or overlong == len(fits):
                raise OverlongPromptsError(
                    message + ("; raise max_prompt_tokens" if overlong == len(fits) else "")
                    + (" or set data.overlong_prompts: drop" if self.data.overlong_prompts == "error" else "")
                )
            self.dropped[what] = overlong
        return [e for e, ok in zip(examples, fits, strict=True) if ok], [t for t, ok in zip(texts, fits, strict=True) if ok]


def completions_for_rewards(prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
    """Each completion as rewards read it: after an open `<think>`, prefixed with it."""
    return [
        THINK_OPEN + completion if think_opened(prompt) else completion
        for prompt, completion in zip(prompts, completions, strict=True)
    ]
