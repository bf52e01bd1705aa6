r"""Tests of the stand-in models: each family's folder loads with the Auto classes and behaves like the release
(chat template text, added-token positions, bos/eos/pad conventions, generation stop ids), the byte-level BPE
tokenizer round-trips math text, builds are byte-identical, and the cache builds once."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from standin_fixtures import standin_for

from remix_engine import standins
from remix_engine.standins import (
    FAMILIES,
    LLAMA3_INSTRUCT,
    META_FILENAME,
    QWEN25_INSTRUCT,
    R1_DISTILL_QWEN,
    build_standin,
    family_spec,
    read_standin_meta,
    standin_path,
)
from remix_engine.standins import build as standin_build

REPO_ROOT = Path(__file__).resolve().parents[2]
USER_TURN = [{"role": "user", "content": "What is 2+3?"}]

# add_generation_prompt=True on USER_TURN, as the released tokenizers render it.
GENERATION_PROMPT = {
    QWEN25_INSTRUCT: (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    ),
    R1_DISTILL_QWEN: "<｜begin▁of▁sentence｜><｜User｜>What is 2+3?<｜Assistant｜><think>\n",
    LLAMA3_INSTRUCT: (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}

# The released ids of the tokens that matter; the stand-in keeps their offsets from the first added token.
RELEASE_IDS = {
    QWEN25_INSTRUCT: {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|file_sep|>": 151664},
    R1_DISTILL_QWEN: {
        "<｜end▁of▁sentence｜>": 151643,
        "<｜User｜>": 151644,
        "<｜Assistant｜>": 151645,
        "<｜begin▁of▁sentence｜>": 151646,
        "<think>": 151648,
        "</think>": 151649,
    },
    LLAMA3_INSTRUCT: {
        "<|begin_of_text|>": 128000,
        "<|end_of_text|>": 128001,
        "<|reserved_special_token_0|>": 128002,
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|eot_id|>": 128009,
        "<|reserved_special_token_250|>": 128255,
    },
}
RELEASE_FIRST_ADDED_ID = {QWEN25_INSTRUCT: 151643, R1_DISTILL_QWEN: 151643, LLAMA3_INSTRUCT: 128000}

# (bos, eos, pad, generation_config.eos_token_id, config.json bos/eos) as released (Llama's pad is ours).
CONVENTIONS = {
    QWEN25_INSTRUCT: (
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ["<|im_end|>", "<|endoftext|>"],
        ("<|endoftext|>", "<|im_end|>"),
    ),
    R1_DISTILL_QWEN: (
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        ("<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    ),
    LLAMA3_INSTRUCT: (
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|reserved_special_token_0|>",
        ["<|end_of_text|>", "<|eot_id|>"],
        ("<|begin_of_text|>", "<|eot_id|>"),
    ),
}

MATH_TEXTS = [
    "\\boxed{\\frac{1}{2}}",
    "Wait, let me check: 12 \\times 7 = 84, so the answer is \\boxed{84}.",
    "Question: What is 1234567 + 89? Answer: $\\boxed{1234656}$",
    "\\[ \\sum_{k=1}^{n} k = \\frac{n(n+1)}{2} \\]\n\nHmm, check n = 10: 55.",
    "  two spaces,\ttabs and unicode: \u03c0 \u2248 3.14159, \u00e9t\u00e9, \u65e5\u672c\u8a9e\n",
]


def _load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


# ------------------------------------------------------------------------------------ folder and loading


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_loads_with_the_auto_classes_as_the_family_architecture(
    request: pytest.FixtureRequest, family: str
) -> None:
    path = standin_for(request, family)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        META_FILENAME,
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tokenizer_config["chat_template"] == family_spec(family).chat_template
    tokenizer, model = _load(path)
    expected = {
        QWEN25_INSTRUCT: "Qwen2ForCausalLM",
        R1_DISTILL_QWEN: "Qwen2ForCausalLM",
        LLAMA3_INSTRUCT: "LlamaForCausalLM",
    }
    assert type(model).__name__ == expected[family]
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (64, 2, 128)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)  # grouped-query attention
    assert config.max_position_embeddings == 2048
    assert config.tie_word_embeddings is (family == QWEN25_INSTRUCT)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied is (family == QWEN25_INSTRUCT)
    if family == LLAMA3_INSTRUCT:
        assert len(tokenizer) == config.vocab_size == 1024 + 256
    else:  # Qwen's embedding has rows past the tokenizer (151936 vs 151665): padded to a multiple of 128
        assert len(tokenizer) == 1024 + 22
        assert config.vocab_size == 1152
        assert model.model.layers[0].self_attn.q_proj.bias is not None  # Qwen2's q/k/v biases
    assert 100_000 < model.num_parameters() < 300_000
    meta = read_standin_meta(path)
    assert (meta["family"], meta["tokenizer_size"], meta["model_vocab_size"]) == (
        family,
        len(tokenizer),
        config.vocab_size,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_a_forward_pass_of_random_weights_is_near_uniform(request: pytest.FixtureRequest, family: str) -> None:
    tokenizer, model = _load(standin_for(request, family))
    ids = tokenizer(MATH_TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert abs(out.loss.item() - math.log(model.config.vocab_size)) < 0.5  # small random init: ~uniform


# ----------------------------------------------------------------------------------------- chat template


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_renders_the_family_generation_prompt(request: pytest.FixtureRequest, family: str) -> None:
    tokenizer = _tokenizer(standin_for(request, family))
    text = tokenizer.apply_chat_template(USER_TURN, tokenize=False, add_generation_prompt=True)
    assert text == GENERATION_PROMPT[family]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def _conversation(system: str, assistant: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": "And 3+4?"},
    ]


def test_qwen_template_uses_a_given_system_message_instead_of_the_default(qwen_standin: Path) -> None:
    text = _tokenizer(qwen_standin).apply_chat_template(
        _conversation("Be brief.", "5"), tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n<|im_start|>user\nAnd 3+4?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_r1_template_drops_the_reasoning_of_earlier_assistant_turns(r1_standin: Path) -> None:
    text = _tokenizer(r1_standin).apply_chat_template(
        _conversation("Be brief.", "<think>\n2+3 is 5.\n</think>\n\nThe answer is 5."),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+3?<｜Assistant｜>\n\nThe answer is 5."
        "<｜end▁of▁sentence｜><｜User｜>And 3+4?<｜Assistant｜><think>\n"
    )


def test_llama_template_writes_headers_and_trims_contents(llama_standin: Path) -> None:
    text = _tokenizer(llama_standin).apply_chat_template(
        _conversation("  Be brief.\n", "5"), tokenize=False, add_generation_prompt=False
    )
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+4?<|eot_id|>"
    )


# ---------------------------------------------------------------------------------- tokens and their ids


@pytest.mark.parametrize("family", FAMILIES)
def test_added_tokens_encode_to_single_ids_at_the_release_offsets(request: pytest.FixtureRequest, family: str) -> None:
    tokenizer = _tokenizer(standin_for(request, family))
    first_added = 1024
    for token, release_id in RELEASE_IDS[family].items():
        assert _id(tokenizer, token) - first_added == release_id - RELEASE_FIRST_ADDED_ID[family], token
    plain = tokenizer("2+3", add_special_tokens=False)["input_ids"]
    for offset, (token, _) in enumerate(family_spec(family).added_tokens):
        token_id = first_added + offset
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id], token
        inner = tokenizer(f"2+3{token}2+3", add_special_tokens=False)["input_ids"]
        assert inner == [*plain, token_id, *plain], token  # matched inside text too, never split


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_eos_pad_and_generation_stop_ids_follow_the_release(request: pytest.FixtureRequest, family: str) -> None:
    path = standin_for(request, family)
    tokenizer, model = _load(path)
    bos, eos, pad, generation_eos, (config_bos, config_eos) = CONVENTIONS[family]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (bos, eos, pad)
    assert tokenizer.pad_token_id is not None and tokenizer.unk_token is None
    expected_eos = (
        [_id(tokenizer, t) for t in generation_eos]
        if isinstance(generation_eos, list)
        else _id(tokenizer, generation_eos)
    )
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == expected_eos == model.generation_config.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id == model.generation_config.pad_token_id
    assert generation["do_sample"] is True  # the releases sample by default
    assert (model.config.bos_token_id, model.config.eos_token_id) == (
        _id(tokenizer, config_bos),
        _id(tokenizer, config_eos),
    )
    stop_ids = expected_eos if isinstance(expected_eos, list) else [expected_eos]
    assert tokenizer.eos_token_id in stop_ids  # the chat turn's end stops generation


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_is_prepended_when_encoding_as_the_release_does(request: pytest.FixtureRequest, family: str) -> None:
    tokenizer = _tokenizer(standin_for(request, family))
    ids = tokenizer("What is 2+3?")["input_ids"]
    plain = tokenizer("What is 2+3?", add_special_tokens=False)["input_ids"]
    if family == QWEN25_INSTRUCT:
        assert ids == plain
    else:  # R1-Distill and Llama 3 prepend bos: re-encoding a rendered chat with it would double the bos
        assert ids == [tokenizer.bos_token_id, *plain]


def test_skip_special_tokens_keeps_r1s_reasoning_and_turn_tokens_as_released(r1_standin: Path) -> None:
    tokenizer = _tokenizer(r1_standin)
    text = "<｜User｜>hi<｜Assistant｜><think>\nok\n</think>\n\nDone.<｜end▁of▁sentence｜>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert (
        tokenizer.decode(ids, skip_special_tokens=True) == "<｜User｜>hi<｜Assistant｜><think>\nok\n</think>\n\nDone."
    )


def test_skip_special_tokens_drops_qwens_chat_tokens(qwen_standin: Path) -> None:
    tokenizer = _tokenizer(qwen_standin)
    ids = tokenizer("<|im_start|>assistant\n5<|im_end|>\n<tool_call>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n5\n<tool_call>"  # tool_call: not special


# ------------------------------------------------------------------------------------------- the BPE


@pytest.mark.parametrize("text", MATH_TEXTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_bpe_round_trips_math_text(request: pytest.FixtureRequest, family: str, text: str) -> None:
    tokenizer = _tokenizer(standin_for(request, family))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert len(ids) < len(text.encode())  # merges were learned: fewer tokens than bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loaded_tokenizer_encodes_as_its_tokenizer_json(request: pytest.FixtureRequest, family: str) -> None:
    from tokenizers import Tokenizer

    path = standin_for(request, family)
    tokenizer, raw = _tokenizer(path), Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in [*MATH_TEXTS, GENERATION_PROMPT[family]]:
        assert tokenizer(text)["input_ids"] == raw.encode(text).ids


@pytest.mark.parametrize("family", FAMILIES)
def test_digits_split_as_in_the_release(request: pytest.FixtureRequest, family: str) -> None:
    tokenizer = _tokenizer(standin_for(request, family))
    tokens = tokenizer.tokenize("x = 1234567")
    digits = [t for t in tokens if t.isdigit()]
    assert "".join(digits) == "1234567" and "".join(tokens).endswith("1234567")
    if family == LLAMA3_INSTRUCT:  # runs of at most three digits, grouped from the left
        pieces = [p for p, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("1234567")]
        assert pieces == ["123", "456", "7"]
        assert all(len(t) <= 3 for t in digits)
    else:  # Qwen: one token per digit
        assert digits == list("1234567")
    common = {"Ġ\\", "boxed", "frac", "Ġanswer", "Ġcheck", "Ġquestion"}
    assert common <= set(tokenizer.get_vocab())  # the corpus's math and reasoning words are whole tokens


# ------------------------------------------------------------------------------------------ generation


class _ForceTokenAfter:
    """A logits processor that allows only `token_id` once `steps` tokens have been generated."""

    def __init__(self, prompt_length: int, steps: int, token_id: int) -> None:
        self.prompt_length, self.steps, self.token_id = prompt_length, steps, token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] - self.prompt_length >= self.steps:
            forced = torch.full_like(scores, -math.inf)
            forced[:, self.token_id] = 0.0
            return forced
        return scores


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_from_the_chat_prompt_and_stops_at_the_turn_end(request: pytest.FixtureRequest, family: str) -> None:
    from transformers import LogitsProcessorList

    tokenizer, model = _load(standin_for(request, family))
    tokenizer.padding_side = "left"
    chats = [USER_TURN, [{"role": "user", "content": "Compute \\frac{1}{2} + \\frac{1}{3}, then check it."}]]
    texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    prompt_length = batch["input_ids"].shape[1]
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id  # the shorter prompt is left-padded

    greedy = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert greedy.shape[0] == 2 and prompt_length < greedy.shape[1] <= prompt_length + 5
    assert int(greedy.max()) < model.config.vocab_size

    torch.manual_seed(0)
    sampled = model.generate(**batch, max_new_tokens=4)  # the checkpoint's own sampling defaults
    assert sampled.shape[1] <= prompt_length + 4

    stop = LogitsProcessorList([_ForceTokenAfter(prompt_length, 2, tokenizer.eos_token_id)])
    stopped = model.generate(**batch, max_new_tokens=20, do_sample=False, logits_processor=stop)
    assert stopped.shape[1] == prompt_length + 3  # two free tokens, then the turn's end stops both rows
    assert (stopped[:, -1] == tokenizer.eos_token_id).all()


# --------------------------------------------------------------------------------------- determinism


_BUILD_ALL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from remix_engine.standins import FAMILIES, build_standin

    for family in FAMILIES:
        build_standin(family, Path(sys.argv[1]) / family)
    """
)


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_builds_are_byte_identical_across_processes(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", _BUILD_ALL, str(tmp_path)], env=env, check=True, timeout=300)
    for family in FAMILIES:
        assert _files(tmp_path / family) == _files(standin_for(request, family)), family


def test_the_seed_changes_the_weights_only(qwen_standin: Path, tmp_path: Path) -> None:
    other = _files(build_standin(QWEN25_INSTRUCT, tmp_path / "seed1", seed=1))
    same = _files(qwen_standin)
    assert other["model.safetensors"] != same["model.safetensors"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert other[name] == same[name], name


def test_sizes_vocabulary_and_dtype_are_arguments(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = build_standin(
        LLAMA3_INSTRUCT,
        tmp_path / "m",
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=64,
        max_position_embeddings=256,
        bpe_vocab_size=512,
        tie_word_embeddings=True,
        dtype="bfloat16",
    )
    tokenizer, model = _load(path)
    assert len(tokenizer) == model.config.vocab_size == 512 + 256
    assert tokenizer.eos_token_id == 512 + 9 and tokenizer.model_max_length == 256
    assert (model.config.hidden_size, model.config.num_key_value_heads, model.config.tie_word_embeddings) == (
        32,
        1,
        True,
    )
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.bfloat16}


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stand-in family 'gpt-2'"):
        build_standin("gpt-2", tmp_path / "a")
    with pytest.raises(ValueError, match="num_kv_heads"):
        build_standin(QWEN25_INSTRUCT, tmp_path / "b", num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="bpe_vocab_size"):
        build_standin(QWEN25_INSTRUCT, tmp_path / "c", bpe_vocab_size=100_000)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stale.json").write_text("{}")
    with pytest.raises(FileExistsError):
        build_standin(QWEN25_INSTRUCT, tmp_path / "d")


# --------------------------------------------------------------------------------------------- cache


def test_standin_path_builds_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REMIX_CACHE_DIR", str(tmp_path))
    path = standin_path(R1_DISTILL_QWEN)
    assert path == tmp_path / "standins" / f"{R1_DISTILL_QWEN}-{standins.STANDIN_VERSION}"
    assert read_standin_meta(path)["family"] == R1_DISTILL_QWEN
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{path.name}.lock", path.name]  # no temp dirs

    def unexpected_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached stand-in was rebuilt")

    monkeypatch.setattr(standin_build, "build_standin", unexpected_build)
    assert standin_path(R1_DISTILL_QWEN) == path
    assert standin_path(R1_DISTILL_QWEN, cache_dir=tmp_path) == path
