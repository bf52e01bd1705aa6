"""Prompt/answer datasets: loading for training and validation of uploads for the API.

Formats: JSONL (one object per line), JSON (a list of objects, or an object holding that list
under "data", "rows", "examples", "items", "train" or "test") and parquet. The bytes are parsed
once by ``parse_examples`` (loading.py); ``load_examples`` (engine) and ``validate_dataset_bytes`` (API) both
use it, so a file the API accepts is a file a worker can train on.

Field resolution: the requested ``prompt_field`` / ``answer_field`` are used when the dataset has
them (a dotted name such as ``reward_model.ground_truth`` reads a nested object). When a requested
field is missing from every row, known aliases are tried in order, so public benchmark files load
as-is:

- prompt: ``problem``, ``question``, ``prompt``, ``messages``;
- answer: ``answer``, ``final_answer``, ``reference_answer``, ``reference``, ``ground_truth``,
  ``reward_model.ground_truth`` (verl layout), then ``solution``, from which the last ``\\boxed{}``
  is taken; for chat rows without any of these, the final assistant turn.

Values: a prompt given as a list of chat messages (OpenAI ``messages``, verl) keeps every turn in
``Example.messages`` (content as text or a list of text parts); ``Example.prompt`` is then the text of
its last user turn. A reference that is a worked solution is cut to its final answer: its last
``\\boxed{}``, or what follows GSM8K's ``####`` (``final_answer``). Numeric answers become strings
(``142.0`` -> ``"142"``); a list of answers (alternative forms of one answer, as in Minerva) keeps the
first and stores the rest in ``extra["answer_alternatives"]``. Every other column of a row is kept in
``Example.extra``. ``detect_layout`` names the public layout a file follows (openai-chat, verl, gsm8k,
math, prompt-answer) for the upload preview.

Limits: a row may nest at most 64 levels, a JSONL line (or a JSON/parquet row's text) may be at
most 1 MiB, one text value at most 256 Ki characters, and a parquet file may decode to at most
512 MiB (``remix_engine.dataset_limits``), so a hostile file is a DatasetError, never a crash.

Errors are ``DatasetError`` naming the file, the line (JSONL) or row (JSON, parquet), counted from 1,
and the reason.
"""

from remix_engine.data.examples import DatasetError, DatasetFormat, DatasetSummary, Example, detect_format
from remix_engine.data.layouts import ANSWER_ALIASES, PROMPT_ALIASES, detect_layout
from remix_engine.data.loading import (
    PREVIEW_CHARS,
    PREVIEW_ROWS,
    SUMMARY_EXAMPLES,
    load_examples,
    validate_dataset_bytes,
)

__all__ = [
    "ANSWER_ALIASES",
    "PREVIEW_CHARS",
    "PREVIEW_ROWS",
    "PROMPT_ALIASES",
    "SUMMARY_EXAMPLES",
    "DatasetError",
    "DatasetFormat",
    "DatasetSummary",
    "Example",
    "detect_format",
    "detect_layout",
    "load_examples",
    "validate_dataset_bytes",
]
