"""Fixtures of the engine tests: an untrained tiny Llama saved as an ordinary local Hugging Face folder."""

from __future__ import annotations

import pytest

from remix_engine.toy import build_char_tokenizer, build_untrained_model


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Random weights (seed 1) and the character tokenizer: loads like any local model directory."""
    path = tmp_path_factory.mktemp("random-llama")
    tokenizer = build_char_tokenizer()
    build_untrained_model(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
