"""The stand-in families: their names and, per family, what its release looks like minus the sizes
(`FamilySpec`: architecture, pre-tokenizer, added tokens in id order, special tokens, chat template,
sampling defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from remix_engine.standins.chat_templates import LLAMA3_CHAT_TEMPLATE, QWEN25_CHAT_TEMPLATE, R1_DISTILL_CHAT_TEMPLATE

QWEN25_INSTRUCT, R1_DISTILL_QWEN, LLAMA3_INSTRUCT = "qwen2.5-instruct", "deepseek-r1-distill-qwen", "llama-3-instruct"
FAMILIES = (QWEN25_INSTRUCT, R1_DISTILL_QWEN, LLAMA3_INSTRUCT)

# The pre-tokenizer regexes of the releases: Qwen splits numbers into single digits, Llama 3 into runs of 1-3.
_CONTRACTIONS_AND_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_PUNCTUATION_AND_SPACES = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_PRETOKENIZE_REGEX = _CONTRACTIONS_AND_WORDS + r"\p{N}" + _PUNCTUATION_AND_SPACES
LLAMA3_PRETOKENIZE_REGEX = _CONTRACTIONS_AND_WORDS + r"\p{N}{1,3}" + _PUNCTUATION_AND_SPACES

_QWEN_VISION_TOKENS = (
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_CODE_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# (content, special) in id order, starting right after the BPE vocabulary, as in the releases.
_QWEN25_ADDED = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    *((token, True) for token in _QWEN_VISION_TOKENS),
    *((token, False) for token in _QWEN_CODE_TOKENS),
)
_R1_DISTILL_ADDED = (
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True),
    ("<|EOT|>", False),
    ("<think>", False),
    ("</think>", False),
    *((token, True) for token in _QWEN_VISION_TOKENS[4:]),  # the quad/vision tokens; object_ref/box gave way
    *((token, False) for token in _QWEN_CODE_TOKENS),
)
_LLAMA3_ADDED = (
    ("<|begin_of_text|>", True),
    ("<|end_of_text|>", True),
    *((f"<|reserved_special_token_{i}|>", True) for i in range(4)),
    ("<|start_header_id|>", True),
    ("<|end_header_id|>", True),
    ("<|reserved_special_token_4|>", True),
    ("<|eot_id|>", True),
    *((f"<|reserved_special_token_{i}|>", True) for i in range(5, 251)),
)


@dataclass(frozen=True)
class FamilySpec:
    """What a family's release looks like, minus the sizes."""

    name: str
    model_type: Literal["qwen2", "llama"]
    pretokenize_regex: str
    nfc_normalizer: bool
    ignore_merges: bool
    added_tokens: tuple[tuple[str, bool], ...]
    bos_token: str | None  # the tokenizer's bos (None: none)
    add_bos: bool  # the post-processor prepends bos to every encoding
    eos_token: str  # the tokenizer's eos: the end of an assistant turn
    chat_tokens: tuple[str, ...]  # the added tokens the chat template writes (besides bos/eos)
    pad_token: str
    generation_eos_tokens: tuple[str, ...]  # generation_config.eos_token_id, in the release's order
    config_bos_token: str
    config_eos_token: str
    generation_bos_token: str
    chat_template: str
    tokenizer_class: str
    tie_word_embeddings: bool
    rope_theta: float
    rms_norm_eps: float
    pad_vocab_to_multiple_of: int
    sampling_defaults: dict[str, float | int | bool]
    tokenizer_config_extra: dict[str, Any] = field(default_factory=dict)
    additional_special_tokens: tuple[str, ...] = ()


FAMILY_SPECS: dict[str, FamilySpec] = {
    QWEN25_INSTRUCT: FamilySpec(
        name=QWEN25_INSTRUCT,
        model_type="qwen2",
        pretokenize_regex=QWEN_PRETOKENIZE_REGEX,
        nfc_normalizer=True,
        ignore_merges=False,
        added_tokens=_QWEN25_ADDED,
        bos_token=None,
        add_bos=False,
        eos_token="<|im_end|>",
        chat_tokens=("<|im_start|>", "<|im_end|>"),
        pad_token="<|endoftext|>",
        generation_eos_tokens=("<|im_end|>", "<|endoftext|>"),
        config_bos_token="<|endoftext|>",
        config_eos_token="<|im_end|>",
        generation_bos_token="<|endoftext|>",
        chat_template=QWEN25_CHAT_TEMPLATE,
        tokenizer_class="Qwen2Tokenizer",
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        pad_vocab_to_multiple_of=128,
        sampling_defaults={"do_sample": True, "repetition_penalty": 1.1, "temperature": 0.7, "top_k": 20, "top_p": 0.8},
        tokenizer_config_extra={"add_prefix_space": False, "errors": "replace", "split_special_tokens": False},
        additional_special_tokens=("<|im_start|>", "<|im_end|>", *_QWEN_VISION_TOKENS),
    ),
    R1_DISTILL_QWEN: FamilySpec(
        name=R1_DISTILL_QWEN,
        model_type="qwen2",
        pretokenize_regex=QWEN_PRETOKENIZE_REGEX,
        nfc_normalizer=True,
        ignore_merges=False,
        added_tokens=_R1_DISTILL_ADDED,
        bos_token="<｜begin▁of▁sentence｜>",
        add_bos=True,
        eos_token="<｜end▁of▁sentence｜>",
        chat_tokens=("<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"),
        pad_token="<｜end▁of▁sentence｜>",
        generation_eos_tokens=("<｜end▁of▁sentence｜>",),
        config_bos_token="<｜end▁of▁sentence｜>",  # the release's config.json keeps Qwen's 151643 for both
        config_eos_token="<｜end▁of▁sentence｜>",
        generation_bos_token="<｜begin▁of▁sentence｜>",
        chat_template=R1_DISTILL_CHAT_TEMPLATE,
        tokenizer_class="LlamaTokenizerFast",  # as released; transformers maps qwen2 models to Qwen2Tokenizer
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        pad_vocab_to_multiple_of=128,
        sampling_defaults={"do_sample": True, "temperature": 0.6, "top_p": 0.95},
        tokenizer_config_extra={
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": True,
            "sp_model_kwargs": {},
            "use_default_system_prompt": False,
        },
    ),
    LLAMA3_INSTRUCT: FamilySpec(
        name=LLAMA3_INSTRUCT,
        model_type="llama",
        pretokenize_regex=LLAMA3_PRETOKENIZE_REGEX,
        nfc_normalizer=False,
        ignore_merges=True,
        added_tokens=_LLAMA3_ADDED,
        bos_token="<|begin_of_text|>",
        add_bos=True,
        eos_token="<|eot_id|>",
        chat_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        pad_token="<|reserved_special_token_0|>",  # the release has none
        generation_eos_tokens=("<|end_of_text|>", "<|eot_id|>"),
        config_bos_token="<|begin_of_text|>",
        config_eos_token="<|eot_id|>",
        generation_bos_token="<|begin_of_text|>",
        chat_template=LLAMA3_CHAT_TEMPLATE,
        tokenizer_class="PreTrainedTokenizerFast",
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        pad_vocab_to_multiple_of=1,
        sampling_defaults={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
        tokenizer_config_extra={"model_input_names": ["input_ids", "attention_mask"]},
    ),
}


def family_spec(family: str) -> FamilySpec:
    try:
        return FAMILY_SPECS[family]
    except KeyError:
        raise ValueError(f"unknown stand-in family {family!r}; known: {', '.join(FAMILIES)}") from None
