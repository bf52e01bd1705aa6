"""The one way a job's `data.prompt_template` turns a dataset prompt into the text the model sees.

Training, evaluation and anything that previews a prompt call `render_prompt`, so they render
identically. The template is not a Python format string: the only placeholder is `{prompt}`,
replaced by plain substitution, and every other brace is literal text, so LaTeX such as
`\\boxed{}`, `\\frac{1}{2}` or `{0}` stays as written (and `{{` stays `{{`: there is no escaping).

`check_prompt_template` is the validator of the config schema (remix_engine/config/); the API runs
it before a job is queued, so a template that passes it always renders on the worker. Imports only
the standard library: the API process loads it.
"""

from __future__ import annotations

import re

PLACEHOLDER = "{prompt}"
MAX_TEMPLATE_CHARS = 16 * 1024
# Each placeholder is a copy of the prompt in every rendered prompt: this bounds the rendered size
# to len(template) + MAX_PROMPT_COPIES * len(prompt).
MAX_PROMPT_COPIES = 8
# Rendering this sample at validation must stay within MAX_RENDERED_SAMPLE_CHARS.
SAMPLE_PROMPT = "x" * 4096
MAX_RENDERED_SAMPLE_CHARS = MAX_TEMPLATE_CHARS + MAX_PROMPT_COPIES * len(SAMPLE_PROMPT)
# `{prompt` followed by anything but `}`: a format field on the placeholder ({prompt:>9}, {prompt!r},
# {prompt.x}, {prompt[0]}) or a misspelt one ({prompts}, {prompt }); rendered literally, either would
# silently leave the prompt out or in the wrong shape, so it is refused.
_NEAR_PLACEHOLDER = re.compile(r"\{prompt(?!\})")

PROMPT_TEMPLATE_RULE = (
    f"must contain the placeholder '{PLACEHOLDER}' (at most {MAX_PROMPT_COPIES} times), which is replaced by the "
    "prompt; every other brace is literal text (e.g. '\\boxed{}'); '{prompt' followed by anything but '}' "
    f"(format specs such as '{{prompt:>10}}', '{{prompt!r}}') is refused; at most {MAX_TEMPLATE_CHARS} characters"
)


def render_prompt(template: str, prompt: str) -> str:
    """The template with every `{prompt}` replaced by `prompt` (one pass: text inside the prompt,
    even `{prompt}`, is never substituted again)."""
    return template.replace(PLACEHOLDER, prompt)


def check_prompt_template(template: str) -> str:
    """Return the template if it follows the rule above, else raise ValueError saying why."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"prompt_template is {len(template)} characters long; at most {MAX_TEMPLATE_CHARS}")
    near = _NEAR_PLACEHOLDER.search(template)
    if near is not None:
        close = template.find("}", near.start())
        end = near.start() + 24 if close < 0 else min(close + 1, near.start() + 24)
        snippet = template[near.start() : end]
        raise ValueError(
            f"prompt_template: {snippet!r} is not a placeholder; the only one is '{PLACEHOLDER}', substituted "
            "as is (no format specs, conversions, attributes or indexes)"
        )
    copies = template.count(PLACEHOLDER)
    if copies == 0:
        raise ValueError(f"prompt_template must contain the placeholder '{PLACEHOLDER}'")
    if copies > MAX_PROMPT_COPIES:
        raise ValueError(
            f"prompt_template has '{PLACEHOLDER}' {copies} times; at most {MAX_PROMPT_COPIES} "
            "(each one copies the whole prompt)"
        )
    rendered = render_prompt(template, SAMPLE_PROMPT)
    if SAMPLE_PROMPT not in rendered or len(rendered) > MAX_RENDERED_SAMPLE_CHARS:
        raise ValueError(
            f"prompt_template renders a {len(SAMPLE_PROMPT)}-character prompt to {len(rendered)} characters; "
            f"at most {MAX_RENDERED_SAMPLE_CHARS}"
        )
    return template
