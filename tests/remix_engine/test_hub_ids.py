"""Hub ids: `name` or `owner/name`; never a path, never a climb out of a folder."""

import pytest

from remix_engine.hub_ids import is_hub_id


@pytest.mark.parametrize(
    "name", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "a_b/c.d", "0/1"]
)
def test_hub_ids_are_recognised(name):
    assert is_hub_id(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/abs/path",
        "./model",
        "../model",
        "~/model",
        ".hidden",
        "a/b/c",  # three segments: a local path, not a repository
        "a/../b",
        "a..b",
        "owner/",
        "/owner/name",
        "owner name",
        "owner/name\n",  # a trailing newline must not slip past the end anchor
        "builtin:tiny-arith",
        "job:0b9e",
    ],
)
def test_paths_and_other_names_are_not_hub_ids(name):
    assert not is_hub_id(name)
