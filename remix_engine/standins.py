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

`standin_path(family)` returns the default-sized stand-in from the cache (`$REMIX_CACHE_DIR` or
`~/.cache/remix`, under ``standins/<family>-<version>``), building it on first use atomically under a lock
(`remix_engine.cache.build_once`).

Deliberately different from the releases: the sizes, `model_max_length` (set to the model's
`max_position_embeddings` rather than 131072 / 16384 / 1e30), the float32 weights (``dtype="bfloat16"``
gives the released dtype), and the pad token of Llama 3. Tool-calling tokens of DeepSeek's template that
the distilled release's vocabulary lacks are plain text here too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from remix_engine.cache import build_once, default_cache_dir

if TYPE_CHECKING:
    from tokenizers import Tokenizer

STANDIN_VERSION = "v1"
META_FILENAME = "remix_standin.json"  # written last: the folder is complete once it exists
QWEN25_INSTRUCT, R1_DISTILL_QWEN, LLAMA3_INSTRUCT = "qwen2.5-instruct", "deepseek-r1-distill-qwen", "llama-3-instruct"
FAMILIES = (QWEN25_INSTRUCT, R1_DISTILL_QWEN, LLAMA3_INSTRUCT)
DEFAULT_BPE_VOCAB_SIZE = 1024
MAX_BPE_VOCAB_SIZE = 2048  # the built-in corpus has merges for about 3500
BYTE_ALPHABET_SIZE = 256  # byte-level BPE: every byte is a token before any merge

Dtype = Literal["float32", "bfloat16"]

# --------------------------------------------------------------------------------- tokenizer pieces

# The pre-tokenizer regexes of the releases: Qwen splits numbers into single digits, Llama 3 into runs of 1-3.
_CONTRACTIONS_AND_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_PUNCTUATION_AND_SPACES = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_PRETOKENIZE_REGEX = _CONTRACTIONS_AND_WORDS + r"\p{N}" + _PUNCTUATION_AND_SPACES
LLAMA3_PRETOKENIZE_REGEX = _CONTRACTIONS_AND_WORDS + r"\p{N}{1,3}" + _PUNCTUATION_AND_SPACES

QWEN_DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's tokenizer_config.json chat_template, verbatim (the escapes are Jinja's).
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501

# DeepSeek-R1-Distill-Qwen's chat_template (the revision that opens <think>), verbatim: one line, Jinja escapes.
R1_DISTILL_CHAT_TEMPLATE = (
    r"{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    r"{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    r"{%- for message in messages %}{%- if message['role'] == 'system' %}"
    r"{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    r"{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    r"{{'<｜User｜>' + message['content']}}{%- endif %}"
    r"{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    r"{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    r"{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>'"
    r" + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```'"
    r" + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}"
    r"{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n'"
    r" + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}"
    r"{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    r"{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    r"{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    r"{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    r"{% set content = content.split('</think>')[-1] %}{% endif %}"
    r"{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    r"{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    r"{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    r"{%- set ns.is_output_first = false %}{%- else %}"
    r"{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
    r"{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    r"{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}"
)

# Meta-Llama-3-8B-Instruct's chat_template, verbatim (its "\n\n" are real newlines inside Jinja strings).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

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


# ------------------------------------------------------------------------------------------- corpus

_CORPUS_TEXT = r"""Question: What is 2+3? Answer: 5.
Question: What is the sum of 12 and 30? Answer: The sum is 42, so the answer is \boxed{42}.
Solve the following math problem step by step. Put your final answer within \boxed{}.
Please reason step by step, and put your final answer within \boxed{}.
Let me think about this question carefully before I answer.
Wait, let me check that again. I made a mistake in the second step.
Let me double check the calculation: 7 \times 8 = 56, and 56 + 4 = 60. Yes, that is correct.
Hmm, wait. That does not look right. Let me recompute the answer.
So the final answer is \boxed{\frac{1}{2}}.
The probability is \frac{3}{4}, so the answer is \boxed{\frac{3}{4}}.
We have $x^2 + 2x + 1 = (x+1)^2$, so $x = -1$.
If $a = 3$ and $b = 4$, then $c = \sqrt{a^2 + b^2} = \sqrt{25} = 5$.
The area of a circle with radius $r$ is $\pi r^2$.
Therefore, $\frac{6}{8} = \frac{3}{4}$ after dividing the numerator and the denominator by 2.
First, we compute the product. Then we add the remainder. Finally, we check the result.
Now let's verify: 100 - 37 = 63. The answer checks out.
The equation $2x + 5 = 17$ gives $2x = 12$, hence $x = 6$.
Let $n$ be the number of apples. Then $n + 5 = 12$, so $n = 7$.
\[ \sum_{k=1}^{n} k = \frac{n(n+1)}{2} \]
\( \left( \frac{a}{b} \right)^2 = \frac{a^2}{b^2} \)
Since $3 \cdot 4 = 12$ and $12 \div 4 = 3$, the two operations undo each other.
The inequality $x \le 5$ and $x \ge 2$ means $2 \le x \le 5$.
A train travels 60 miles per hour for 3 hours. How far does it travel? It travels 180 miles.
Tom has 5 apples and buys 7 more. How many apples does he have now? He has 12 apples.
Sarah had 24 cookies and gave away a third of them. She has 16 cookies left.
The answer is 15. Is that correct? Let me check: 3 \times 5 = 15. Yes.
I think the answer is 8, but wait, let me verify the question again.
Okay, so the question asks for the remainder when 17 is divided by 5. The remainder is 2.
Alternatively, we can solve the problem by substitution.
To find the mean, add the numbers and divide by how many there are.
The greatest common divisor of 12 and 18 is 6, and the least common multiple is 36.
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.
You are a helpful assistant. Answer the user's question.
system
user
assistant
The user asks a question and the assistant answers it.
<think>
Let me work through the problem.
</think>
The final answer is: $\boxed{10}$. I hope it is correct.
"""

_NAMES = ("Tom", "Sarah", "Alex", "Maria", "John", "Emma", "Liam", "Olivia", "Noah", "Ava")
_ITEMS = ("apples", "books", "cookies", "marbles", "pencils", "stickers", "coins", "cards")
# Words of everyday English, of math problems and of step-by-step reasoning: the generated sentences use each
# of them many times, so the merges learn whole words.
_WORDS = """
the a an and or but if then else so because since while when where which who whom whose what why how that
this these those there here it its they them their we us our you your he him his she her i me my is are was
were be been being am do does did done doing have has had having can could will would shall should may might
must not no yes all any some many much more most less least few several each every other another same such
only also just even still yet again already always never often sometimes usually about above across after
against along among around at before behind below beneath beside between beyond by down during except for
from in inside into like near of off on onto out outside over past through to toward under until up upon with
within without one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
hundred thousand million first second third fourth fifth last next previous final total sum difference
product quotient remainder ratio rate average mean median mode range percent percentage fraction decimal
numerator denominator integer integers number numbers digit digits prime composite factor factors multiple
multiples divisor divisible even odd positive negative zero square squares cube root roots power exponent
base logarithm equation equations expression variable variables constant coefficient term terms polynomial
linear quadratic function functions graph slope intercept point points line lines segment angle angles
triangle triangles circle circles radius diameter area perimeter volume length width height side sides
rectangle square polygon parallel perpendicular probability chance event events outcome outcomes random
sequence series arithmetic geometric limit derivative integral matrix vector set sets element subset union
intersection solve solving solved solution solutions answer answers answered question questions problem
problems compute computing computed calculate calculating calculated evaluate simplify simplified expand
factor substitute substituting check checking checked verify verifying verified confirm double wait hmm okay
alright actually maybe perhaps probably certainly clearly therefore thus hence consequently however although
instead otherwise indeed recall note notice observe assume suppose given let consider find finding found
determine show prove proof true false correct incorrect wrong right mistake error careful carefully step steps
reason reasoning think thinking thought idea approach method way case cases example examples result results
value values get gets got give gives gave take takes took make makes made add adds added adding subtract
subtracting multiply multiplying multiplied divide dividing divided times plus minus equal equals equality
greater smaller larger bigger less fewer half twice triple double quarter dozen each per apples oranges books
cookies marbles pencils coins cards stickers students teacher class school store shop money dollars cents
price cost costs buy buys bought sell sells sold pay paid spend spent save saved earn earned hour hours minute
minutes day days week weeks month months year years time speed distance miles kilometers meters feet inches
travel travels traveled train car bus walk walks walked run runs ran people person friend friends family
brother sister mother father child children boy girl man woman name age old older younger new small large big
little long short high low fast slow early late start starts started end ends ended begin begins began
continue stop left right top bottom front back full empty open close closed number count counted counting
list table row column chart box boxes bag bags group groups team teams game games play plays played win won
lose lost score scores points answer assistant user system helpful harmless honest help helps helped please
thank thanks sorry know known knows understand understood explain explains explained describe described write
writes wrote written read reads say says said ask asks asked tell tells told mean means meant need needs
needed want wants wanted use uses used using try tries tried work works worked look looks looked see sees saw
seen seem seems call called keep kept put puts set sets turn turns move moves moved change changes changed
follow following follows order ordered compare compared between both either neither whether formula formulas
rule rules property properties theorem lemma definition defined define denote denotes represent represents
""".split()
_SENTENCE_SHAPES = (
    "{W} {w} {w} {w} {w}, {w} {w} {w} {w}.",
    "{W} {w} {w} {w}? {W} {w} {w} {w} {w}.",
    "{W}, {w} {w} {w} {w} {w}: {w} {w} {w}!",
    "{W} {w} {w} ({w} {w}) {w} {w} {w}; {w} {w}.",
)


def standin_corpus() -> list[str]:
    """The text the stand-in tokenizers are trained on: fixed sentences plus generated math (seeded, fixed)."""
    rng = random.Random("remix-standins-corpus-v1")
    lines = _CORPUS_TEXT.splitlines()
    for _ in range(1500):
        a, b = rng.randint(0, 999), rng.randint(1, 999)
        p, q = rng.randint(1, 20), rng.randint(2, 30)
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        lines += [
            f"Question: What is {a}+{b}? Answer: \\boxed{{{a + b}}}",
            f"{a} - {b} = {a - b}, and {a} \\times {b} = {a * b}.",
            f"Wait, let me check: {a} + {b} = {a + b}. So the answer is $\\boxed{{{a + b}}}$.",
            f"The fraction \\frac{{{p}}}{{{q}}} is about {p / q:.3f}, so we get \\boxed{{\\frac{{{p}}}{{{q}}}}}.",
            f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have? {a + b}",
            f"$x^{{{p}}} \\cdot x^{{{q}}} = x^{{{p + q}}}$ and ${a} \\div {p} = {a // p}$ remainder ${a % p}$.",
            f"system\nYou are a helpful assistant.\nuser\nWhat is {a}+{b}?\nassistant\nThe answer is {a + b}.",
            f"user\n\nHow many {item} are left?\n\nassistant\n\nFirst, {a} - {p} = {a - p}.\n\nSo {a - p} are left.",
        ]
        for shape in _SENTENCE_SHAPES:
            lines.append(_fill_sentence(shape, rng))
    return lines


def _fill_sentence(shape: str, rng: random.Random) -> str:
    out = []
    for piece in shape.split("{"):
        if piece.startswith("W}"):
            out.append(rng.choice(_WORDS).capitalize() + piece[2:])
        elif piece.startswith("w}"):
            out.append(rng.choice(_WORDS) + piece[2:])
        else:
            out.append(piece)
    return "".join(out)


# ---------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(family: str, bpe_vocab_size: int = DEFAULT_BPE_VOCAB_SIZE) -> Tokenizer:
    """The family's byte-level BPE tokenizer (a `tokenizers.Tokenizer`), trained on `standin_corpus()`.

    Ids 0..bpe_vocab_size-1 are the 256 byte symbols and the learned merges; the family's added tokens follow.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    spec = family_spec(family)
    if not BYTE_ALPHABET_SIZE < bpe_vocab_size <= MAX_BPE_VOCAB_SIZE:
        raise ValueError(
            f"bpe_vocab_size must be in ({BYTE_ALPHABET_SIZE}, {MAX_BPE_VOCAB_SIZE}], got {bpe_vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE())
    if spec.nfc_normalizer:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.pretokenize_regex), behavior="isolated", invert=False),
            # Llama 3's tokenizer.json trims offsets here, Qwen's does not; neither changes the ids.
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=spec.model_type == "llama", use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(standin_corpus(), trainer=trainer)
    if tokenizer.get_vocab_size() != bpe_vocab_size:
        raise ValueError(
            f"the built-in corpus yields only {tokenizer.get_vocab_size()} BPE tokens; ask for fewer than "
            f"{bpe_vocab_size}"
        )
    # The model section as the releases write it (the trainer leaves some of these fields null).
    data = json.loads(tokenizer.to_str())
    data["model"].update(
        dropout=None,
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
        ignore_merges=spec.ignore_merges,
    )
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.decoder = decoders.ByteLevel()
    for content, special in spec.added_tokens:
        token = AddedToken(content, special=special, normalized=False)
        (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([token])
        if tokenizer.token_to_id(content) != tokenizer.get_vocab_size() - 1:
            raise RuntimeError(f"added token {content!r} did not land at the end of the vocabulary")
    tokenizer.post_processor = _post_processor(spec, tokenizer)
    return tokenizer


def _post_processor(spec: FamilySpec, tokenizer: Tokenizer) -> Any:
    from tokenizers import processors

    llama = spec.model_type == "llama"  # the flags of the releases' ByteLevel post-processors (offsets only)
    byte_level = processors.ByteLevel(add_prefix_space=llama, trim_offsets=False, use_regex=llama)
    if not spec.add_bos:
        return byte_level
    assert spec.bos_token is not None
    bos = spec.bos_token
    template = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, tokenizer.token_to_id(bos))],
    )
    return processors.Sequence([byte_level, template]) if llama else template


def _added_token_entry(content: str, special: bool) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _special_token_entry(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def _tokenizer_config(spec: FamilySpec, tokenizer: Tokenizer, model_max_length: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(content)): _added_token_entry(content, special)
            for content, special in spec.added_tokens
        },
        "bos_token": spec.bos_token,
        "chat_template": spec.chat_template,
        "clean_up_tokenization_spaces": spec.model_type == "llama",  # as released: only Llama 3 turns it on
        "eos_token": spec.eos_token,
        "model_max_length": model_max_length,
        "pad_token": spec.pad_token,
        "tokenizer_class": spec.tokenizer_class,
        **spec.tokenizer_config_extra,
    }
    if spec.model_type == "qwen2":
        config["unk_token"] = None
    if spec.additional_special_tokens:
        config["additional_special_tokens"] = list(spec.additional_special_tokens)
    return dict(sorted(config.items()))


def _special_tokens_map(spec: FamilySpec) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    if spec.additional_special_tokens:
        entries["additional_special_tokens"] = list(spec.additional_special_tokens)
    if spec.bos_token is not None:
        entries["bos_token"] = _special_token_entry(spec.bos_token)
    entries["eos_token"] = _special_token_entry(spec.eos_token)
    entries["pad_token"] = _special_token_entry(spec.pad_token)
    return entries


# -------------------------------------------------------------------------------------------- model


def _model_config(spec: FamilySpec, vocab_size: int, ids: dict[str, int], sizes: dict[str, Any]) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "num_key_value_heads": sizes["num_kv_heads"],
        "max_position_embeddings": sizes["max_position_embeddings"],
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": sizes["tie_word_embeddings"],
        "bos_token_id": ids[spec.config_bos_token],
        "eos_token_id": ids[spec.config_eos_token],
        "use_cache": True,
        "attention_dropout": 0.0,
    }
    if spec.model_type == "qwen2":
        return Qwen2Config(
            **common,
            use_sliding_window=False,
            sliding_window=sizes["max_position_embeddings"],
            max_window_layers=sizes["num_layers"],
        )
    return LlamaConfig(
        **common,
        attention_bias=False,
        mlp_bias=False,
        head_dim=sizes["hidden_size"] // sizes["num_heads"],
        pretraining_tp=1,
    )


def _generation_config(spec: FamilySpec, ids: dict[str, int]) -> Any:
    from transformers import GenerationConfig

    eos = [ids[token] for token in spec.generation_eos_tokens]
    return GenerationConfig(
        bos_token_id=ids[spec.generation_bos_token],
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=ids[spec.pad_token],
        **spec.sampling_defaults,
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_standin(
    family: str,
    out_dir: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    bpe_vocab_size: int = DEFAULT_BPE_VOCAB_SIZE,
    tie_word_embeddings: bool | None = None,
    dtype: Dtype = "float32",
    seed: int = 0,
) -> Path:
    """Write the stand-in of `family` into `out_dir` (missing or empty) and return `out_dir`.

    Random weights from `seed` (the global RNG is left alone); `tie_word_embeddings` defaults to the
    family's (tied for Qwen2.5 small models, untied for the others). Same arguments -> byte-identical files.
    """
    import torch  # here, not at the top: importing this module (the test fixtures do) stays light
    from transformers import AutoModelForCausalLM

    spec = family_spec(family)
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must divide by num_heads ({num_heads}), "
            f"and num_heads by num_kv_heads ({num_kv_heads})"
        )
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(family, bpe_vocab_size)
    ids = {content: tokenizer.token_to_id(content) for content, _ in spec.added_tokens}
    tokenizer_size = tokenizer.get_vocab_size()
    sizes = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings,
    }
    vocab_size = _round_up(tokenizer_size, spec.pad_vocab_to_multiple_of)
    config = _model_config(spec, vocab_size, ids, sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)  # float32: torch's default dtype
    model = model.to(getattr(torch, dtype))
    model.generation_config = _generation_config(spec, ids)
    model.save_pretrained(out_dir, safe_serialization=True)

    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(spec, tokenizer, max_position_embeddings))
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map(spec))
    meta = {
        "family": family,
        "version": STANDIN_VERSION,
        "seed": seed,
        "architecture": type(model).__name__,
        **sizes,
        "dtype": dtype,
        "bpe_vocab_size": bpe_vocab_size,
        "tokenizer_size": tokenizer_size,
        "model_vocab_size": vocab_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "bos_token": spec.bos_token,
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "generation_eos_tokens": list(spec.generation_eos_tokens),
        "first_added_token_id": tokenizer_size - len(spec.added_tokens),
        "token_ids": {token: ids[token] for token in _named_tokens(spec)},
        "generation_eos_token_ids": [ids[token] for token in spec.generation_eos_tokens],
    }
    _write_json(out_dir / META_FILENAME, meta)  # last: marks the folder complete
    return out_dir


def _named_tokens(spec: FamilySpec) -> list[str]:
    """bos, eos, pad, the generation stop tokens and the chat tokens, once each, in that order."""
    named = [spec.bos_token, spec.eos_token, spec.pad_token, *spec.generation_eos_tokens, *spec.chat_tokens]
    return list(dict.fromkeys(token for token in named if token is not None))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_standin_meta(model_dir: Path) -> dict[str, Any]:
    """What `build_standin` recorded about a folder: family, sizes, vocabulary sizes, added-token ids."""
    return json.loads((Path(model_dir) / META_FILENAME).read_text(encoding="utf-8"))


# -------------------------------------------------------------------------------------------- cache


def standin_dir(family: str, cache_dir: Path | None = None) -> Path:
    """Where the default-sized stand-in of `family` lives in the cache (built or not)."""
    family_spec(family)
    return Path(cache_dir or default_cache_dir()) / "standins" / f"{family}-{STANDIN_VERSION}"


def standin_path(family: str, cache_dir: Path | None = None) -> Path:
    """The cached default-sized stand-in of `family` (seed 0), built atomically on first use (~1 s)."""
    target = standin_dir(family, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, lambda tmp: build_standin(family, tmp), marker=META_FILENAME)
