"""The upload preview of a real dataset: its layout, the columns used, and, with a model named, the first
prompt rendered with that model's chat template (as apply_chat_template renders it) and the prompts'
lengths in its tokens; all without the API process loading torch."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem

GSM8K = [
    {"question": f"Tom has {i} apples and buys {i} more. How many apples does he have?",
     "answer": f"He has {i}+{i} = <<{i}+{i}={2 * i}>>{2 * i} apples.\n#### {2 * i}"}
    for i in range(1, 6)
]  # fmt: skip
CHAT = [{"messages": [{"role": "system", "content": "Answer in a box."}, {"role": "user", "content": "2+3?"}],
         "reference_answer": "5"}]  # fmt: skip


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _upload(client: TestClient, caller: Caller, data: bytes, **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": ("d.jsonl", data)}, data=fields, headers=caller.headers)


def test_the_preview_names_the_layout_and_the_fields_used(client: TestClient, alice: Caller) -> None:
    response = _upload(client, alice, _jsonl(GSM8K))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["detected_format"], body["fields_used"]) == ("gsm8k", {"prompt": "question", "answer": "answer"})
    assert [row["answer"] for row in body["preview"]] == ["2", "4", "6", "8", "10"]
    assert body["rendered_prompt"] is None and body["prompt_tokens"] is None  # no model named
    assert client.get(f"/v1/datasets/{body['id']}", headers=alice.headers).json()["detected_format"] == "gsm8k"


def test_a_named_model_renders_the_first_prompt_with_its_chat_template(
    client: TestClient, admin: Caller, qwen_standin
) -> None:
    from transformers import AutoTokenizer

    response = _upload(client, admin, _jsonl(CHAT), model=str(qwen_standin), max_prompt_tokens="20")
    assert response.status_code == 201, response.text
    body = response.json()
    tokenizer = AutoTokenizer.from_pretrained(qwen_standin)
    expected = tokenizer.apply_chat_template(CHAT[0]["messages"], tokenize=False, add_generation_prompt=True)
    assert body["detected_format"] == "openai-chat"
    assert (body["rendered_prompt"], body["rendered_with"]) == (expected, str(qwen_standin))
    length = len(tokenizer(expected)["input_ids"])
    assert body["prompt_tokens"] == {"max": length, "checked": 1, "max_prompt_tokens": 20,
                                     "overlong": int(length > 20)}  # fmt: skip
    assert length > 20  # the system turn and the ChatML markup make even this prompt longer than 20


def test_a_local_model_is_for_admin_keys_and_an_uncached_hub_model_renders_nothing(
    client: TestClient, alice: Caller, qwen_standin
) -> None:
    refused = _upload(client, alice, _jsonl(GSM8K), model=str(qwen_standin))
    assert_problem(refused, 422, "model")
    absent = _upload(client, alice, _jsonl(GSM8K), model="no-such-org/no-such-model")
    assert absent.status_code == 201, absent.text
    assert (absent.json()["rendered_with"], absent.json()["rendered_prompt"]) == ("no-such-org/no-such-model", None)
    bad_limit = _upload(client, alice, _jsonl(GSM8K), max_prompt_tokens="lots")
    assert_problem(bad_limit, 422, "max_prompt_tokens")
