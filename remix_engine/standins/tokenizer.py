"""The stand-in tokenizers: a byte-level BPE trained on a built-in math corpus with each family's pipeline
and added tokens, and the tokenizer_config.json / special_tokens_map.json the releases ship with it."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from remix_engine.standins.families import FamilySpec, family_spec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DEFAULT_BPE_VOCAB_SIZE = 1024
MAX_BPE_VOCAB_SIZE = 2048  # the built-in corpus has merges for about 3500
BYTE_ALPHABET_SIZE = 256  # byte-level BPE: every byte is a token before any merge


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


def tokenizer_config(spec: FamilySpec, tokenizer: Tokenizer, model_max_length: int) -> dict[str, Any]:
    """The family's tokenizer_config.json, keys sorted: added tokens by id, special tokens, chat template."""
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


def special_tokens_map(spec: FamilySpec) -> dict[str, Any]:
    """The family's special_tokens_map.json."""
    entries: dict[str, Any] = {}
    if spec.additional_special_tokens:
        entries["additional_special_tokens"] = list(spec.additional_special_tokens)
    if spec.bos_token is not None:
        entries["bos_token"] = _special_token_entry(spec.bos_token)
    entries["eos_token"] = _special_token_entry(spec.eos_token)
    entries["pad_token"] = _special_token_entry(spec.pad_token)
    return entries
