"""Session-scoped stand-in models (`remix_engine/standins/`) for any suite: Hugging Face folders with the
structure, tokenizer and chat template of a real chat model family and tiny random weights.

Each folder is built on first use (about a second) into the test session's temporary directory and shared
by every test of the session; tests must not write into it. `tests/conftest.py` registers the fixtures:

    def test_something(qwen_standin: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(qwen_standin)

`standin_for(request, family)` gives the folder of a family by name, for tests parametrised over families.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from remix_engine.standins import LLAMA3_INSTRUCT, QWEN25_INSTRUCT, R1_DISTILL_QWEN, build_standin

FIXTURE_OF_FAMILY = {QWEN25_INSTRUCT: "qwen_standin", R1_DISTILL_QWEN: "r1_standin", LLAMA3_INSTRUCT: "llama_standin"}


def _build(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    return build_standin(family, tmp_path_factory.mktemp(f"standin-{family}"))


@pytest.fixture(scope="session")
def qwen_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2.5-Instruct stand-in: Qwen2ForCausalLM, ChatML with the default system prompt, tied embeddings."""
    return _build(tmp_path_factory, QWEN25_INSTRUCT)


@pytest.fixture(scope="session")
def r1_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepSeek-R1-Distill-Qwen stand-in: Qwen2ForCausalLM, <｜User｜>/<｜Assistant｜><think> template, bos added."""
    return _build(tmp_path_factory, R1_DISTILL_QWEN)


@pytest.fixture(scope="session")
def llama_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-3-Instruct stand-in: LlamaForCausalLM, header chat template, <|eot_id|> eos, a reserved pad."""
    return _build(tmp_path_factory, LLAMA3_INSTRUCT)


def standin_for(request: pytest.FixtureRequest, family: str) -> Path:
    """The session's stand-in folder of `family` (one of remix_engine.standins.FAMILIES)."""
    return request.getfixturevalue(FIXTURE_OF_FAMILY[family])
