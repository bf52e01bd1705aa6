"""The dataset shapes people have, read as they are: OpenAI chat `messages` (every turn, content parts,
a reference field or the final assistant turn), GSM8K (`#### N`), MATH (boxed solutions), verl
parquet (`reward_model.ground_truth`), with the layout and the fields used shown in the preview."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from remix_engine.data import DatasetError, validate_dataset_bytes
from remix_engine.rewards import REWARDS


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


GSM8K_ROW = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
    "altogether in April and May.\n#### 72",
}


def test_gsm8k_references_are_cut_to_the_number_after_the_marks() -> None:
    summary = validate_dataset_bytes(_jsonl([GSM8K_ROW, {**GSM8K_ROW, "answer": "So... #### 1,250"}]), "jsonl")
    assert summary.detected_format == "gsm8k"
    assert summary.fields_used == {"prompt": "question", "answer": "answer"}
    assert [row["answer"] for row in summary.preview] == ["72", "1250"]
    # and a completion written the GSM8K way, or boxed, scores against it
    math_verify = REWARDS.get("math_verify")
    assert math_verify(["...so 72 in all.\n#### 72", "\\boxed{72}", "#### 71"], ["72"] * 3) == [1.0, 1.0, 0.0]


def test_openai_chat_rows_keep_every_turn_and_content_parts() -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are a careful mathematician."},
                {"role": "user", "content": "Warm-up: 1+1?"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": [{"type": "text", "text": "Now: 2+3?"}, {"type": "text", "text": "Box it."}]},
            ],
            "reference_answer": "5",
            "difficulty": "easy",
        }
    ]
    summary = validate_dataset_bytes(_jsonl(rows), "jsonl")
    (example,) = summary.examples
    assert summary.detected_format == "openai-chat"
    assert summary.fields_used == {"prompt": "messages", "answer": "reference_answer"}
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "user"]
    assert example.messages[-1]["content"] == "Now: 2+3?\nBox it."
    assert (example.prompt, example.answer, example.extra) == ("Now: 2+3?\nBox it.", "5", {"difficulty": "easy"})
    assert summary.preview[0]["messages"][0] == {"role": "system", "content": "You are a careful mathematician."}


def test_a_chat_row_without_a_reference_field_uses_its_final_assistant_turn() -> None:
    rows = [{"messages": [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "It is \\boxed{42}."}]}]
    summary = validate_dataset_bytes(_jsonl(rows), "jsonl")
    (example,) = summary.examples
    assert example.answer == "42" and [m["role"] for m in example.messages] == ["user"]
    assert summary.fields_used["answer"] == "messages (final assistant turn)"


def test_math_solutions_and_long_worked_references_give_their_boxed_answer() -> None:
    long_solution = "We compute carefully. " * 40 + "Hence the answer is $\\boxed{\\frac{3}{4}}$."
    rows = [{"problem": "Find x.", "solution": long_solution}]
    summary = validate_dataset_bytes(_jsonl(rows), "jsonl")
    assert summary.detected_format == "math" and summary.examples[0].answer == "\\frac{3}{4}"
    # DeepScaleR-style rows with both a worked answer field and a solution: the answer field, cut
    worked = [{"problem": "Find y.", "answer": long_solution, "solution": "..."}]
    assert validate_dataset_bytes(_jsonl(worked), "jsonl").examples[0].answer == "\\frac{3}{4}"
    # and a boxed completion scores against a reference of over 512 characters
    assert len(long_solution) > 512
    assert REWARDS.get("math_verify")(["\\boxed{0.75}"], [long_solution]) == [1.0]


def test_verl_parquet_keeps_the_whole_chat_prompt() -> None:
    table = pa.Table.from_pylist(
        [
            {
                "data_source": "deepscaler",
                "prompt": [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "2+2?"}],
                "reward_model": {"style": "rule", "ground_truth": "4"},
                "extra_info": {"index": 0},
            }
        ]
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    summary = validate_dataset_bytes(buffer.getvalue(), "parquet")
    (example,) = summary.examples
    assert summary.detected_format == "verl"
    assert summary.fields_used == {"prompt": "prompt", "answer": "reward_model.ground_truth"}
    assert [m["role"] for m in example.messages] == ["system", "user"] and example.answer == "4"


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user"}], "must be a list of chat messages"),
        ([{"role": "wizard", "content": "x"}], "must be a list of chat messages"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "text content"),
        ([{"role": "system", "content": "only a system turn"}], "must be a user turn with text"),
    ],
)
def test_bad_chat_rows_name_the_line_and_the_field(messages: list, reason: str) -> None:
    rows = [{"messages": [{"role": "user", "content": "ok"}], "answer": "1"}, {"messages": messages, "answer": "2"}]
    with pytest.raises(DatasetError) as info:
        validate_dataset_bytes(_jsonl(rows), "jsonl", source="chat.jsonl")
    assert info.value.line == 2 and info.value.field == "messages" and reason in info.value.reason
