r"""Local stand-ins for real chat models: random weights, the real structure, no download.

`build_standin(family, out_dir)` writes a complete Hugging Face model folder that loads with
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` and behaves, structurally, like the
released checkpoint of its family: the same architecture class and config fields, a byte-level BPE tokenizer
with the same pre-tokenizer, normalizer, post-processor and special tokens (at the same positions after the
regular vocabulary), the released chat template, and the released eos/pad/bos conventions in
`tokenizer_config.json`, `special_tokens_map.json`, `config.json` and `generation_config.json`. Only the sizes
are tiny (hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128, a 1024-token BPE vocabulary) so that building
takes about a second and a forward pass is instant on a CPU. The weights are random (the text they generate
is noise); tests, benchmarks and examples use them to exercise chat templates, special tokens, stop ids,
padding, GQA, tied/untied embeddings and checkpoint round trips the way the real models would.

Families (`FAMILIES`):

- ``qwen2.5-instruct`` (like Qwen/Qwen2.5-0.5B-Instruct): `Qwen2ForCausalLM` (q/k/v biases, GQA) with tied
  embeddings; Qwen's digit-by-digit pre-tokenizer regex and NFC normalizer; after the BPE vocabulary come
  Qwen's 22 added tokens in Qwen's order (``<|endoftext|>`` first, then ``<|im_start|>``, ``<|im_end|>``, the
  vision/box tokens, ``<tool_call>``, the FIM tokens). Pad ``<|endoftext|>``, eos ``<|im_end|>``, no bos, no
  bos added when encoding. The ChatML template is Qwen2.5-Instruct's, verbatim: without a system message it
  inserts "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.". `generation_config.json`
  stops at ``[<|im_end|>, <|endoftext|>]`` and carries Qwen's sampling defaults.
- ``deepseek-r1-distill-qwen`` (like deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B): `Qwen2ForCausalLM` with
  untied embeddings and Qwen's tokenizer pipeline, but the R1 added tokens in their positions
  (``<｜end▁of▁sentence｜>`` first: eos *and* pad; ``<｜User｜>``, ``<｜Assistant｜>``,
  ``<｜begin▁of▁sentence｜>``: bos, added to every encoding as in the release; ``<think>``, ``</think>``, ...;
  User/Assistant/think tokens are added tokens that are *not* special, as released, so
  ``skip_special_tokens`` keeps them). The chat template is the released one: it puts the bos token first,
  drops the reasoning (up to ``</think>``) of earlier assistant turns and opens ``<｜Assistant｜><think>\n``
  in the generation prompt.
- ``llama-3-instruct`` (like meta-llama/Meta-Llama-3-8B-Instruct): `LlamaForCausalLM` (GQA, untied
  embeddings, rope theta 500000) with Llama 3's 1-to-3-digit pre-tokenizer regex, ``ignore_merges``, a bos
  ``<|begin_of_text|>`` added to every encoding, and the 256 special tokens of Llama 3 (``<|begin_of_text|>``,
  ``<|end_of_text|>``, ``<|reserved_special_token_0..3|>``, ``<|start_header_id|>``, ``<|end_header_id|>``,
  ``<|reserved_special_token_4|>``, ``<|eot_id|>``, then reserved tokens). Eos ``<|eot_id|>`` (generation
  stops at ``[<|end_of_text|>, <|eot_id|>]``); the release has no pad token, the stand-in sets
  ``<|reserved_special_token_0|>``. The chat template is Llama 3's header format, verbatim. As released,
  ``clean_up_tokenization_spaces`` is on (transformers 5 ignores it for BPE with a warning; 4.x applies it,
  so decoding rewrites " ," to "," and the like).

Every BPE tokenizer is trained here, with the `tokenizers` library, on a small built-in corpus of math text
(arithmetic, ``\boxed{}``, ``\frac``, reasoning words such as "question", "answer", "wait", "check") and the
chat templates' own words; it depends only on the family and `bpe_vocab_size`, never on the seed. Building is
deterministic: the same arguments give byte-identical files. The model vocabulary of the Qwen families is
padded to a multiple of 128 rows beyond the tokenizer, as Qwen's 151936-row embedding exceeds its 151665
tokens, so ids past `len(tokenizer)` exist in the logits (the Llama vocabulary, 1024 + 256, needs none).

Modules: families.py (names and `FamilySpec`s), chat_templates.py (the released templates), tokenizer.py
(corpus, BPE training, tokenizer files), build.py (the model folder and the cache).

`standin_path(family)` returns the default-sized stand-in from the cache (`$REMIX_CACHE_DIR` or
`~/.cache/remix`, under ``standins/<family>-<version>``), building it on first use atomically under a lock
(`remix_engine.cache.build_once`).

Deliberately different from the releases: the sizes, `model_max_length` (set to the model's
`max_position_embeddings` rather than 131072 / 16384 / 1e30), the float32 weights (``dtype="bfloat16"``
gives the released dtype), and the pad token of Llama 3. Tool-calling tokens of DeepSeek's template that
the distilled release's vocabulary lacks are plain text here too.
"""

from remix_engine.standins.build import (
    META_FILENAME,
    STANDIN_VERSION,
    build_standin,
    read_standin_meta,
    standin_dir,
    standin_path,
)
from remix_engine.standins.chat_templates import (
    LLAMA3_CHAT_TEMPLATE,
    QWEN25_CHAT_TEMPLATE,
    QWEN_DEFAULT_SYSTEM_PROMPT,
    R1_DISTILL_CHAT_TEMPLATE,
)
from remix_engine.standins.families import (
    FAMILIES,
    FAMILY_SPECS,
    LLAMA3_INSTRUCT,
    QWEN25_INSTRUCT,
    R1_DISTILL_QWEN,
    FamilySpec,
    family_spec,
)
from remix_engine.standins.tokenizer import DEFAULT_BPE_VOCAB_SIZE, standin_corpus, train_tokenizer

__all__ = [
    "DEFAULT_BPE_VOCAB_SIZE",
    "FAMILIES",
    "FAMILY_SPECS",
    "LLAMA3_CHAT_TEMPLATE",
    "LLAMA3_INSTRUCT",
    "META_FILENAME",
    "QWEN25_CHAT_TEMPLATE",
    "QWEN25_INSTRUCT",
    "QWEN_DEFAULT_SYSTEM_PROMPT",
    "R1_DISTILL_CHAT_TEMPLATE",
    "R1_DISTILL_QWEN",
    "STANDIN_VERSION",
    "FamilySpec",
    "build_standin",
    "family_spec",
    "read_standin_meta",
    "standin_corpus",
    "standin_dir",
    "standin_path",
    "train_tokenizer",
]
