"""Reward functions: boxed extraction, the math verifier on MATH500 answers, string_check on a row's
fields, the rows every reward sees, composition and the per-reward step metrics."""

from __future__ import annotations

import json
import math
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from remix_engine.config import RewardConfig, RewardSpec
from remix_engine.eval_benchmarks import data_file
from remix_engine.reward_specs import REWARD_KINDS, REWARD_NAMES
from remix_engine.rewards import (
    REWARDS,
    compose_rewards,
    count_reward_errors,
    extract_boxed,
    is_equivalent,
    like_matcher,
    normalize_answer,
    reward_metrics,
    reward_row,
    score_rewards,
    symbolic_equivalent,
)

def math500_answers() -> list[str]:
    # MATH500 as shipped inside the package (remix_engine/benchmarks_data/math.json).
    path = data_file("math.json")
    assert path.is_file(), f"benchmark data missing from the package: expected {path}"
    return [str(row["answer"]) for row in json.loads(path.read_text(encoding="utf-8"))]


math_verify = REWARDS.get("math_verify")


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{\\left(2+x^{2}\\right)}}", "\\frac{\\sqrt{3}}{\\left(2+x^{2}\\right)}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("a \\boxed{1} b \\fbox{7}", "7"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are literal, not groups
        ("$\\boxed 5$", "5"),  # the brace-less form
        ("\\boxed{ 3 }", "3"),
        ("\\boxed{a} and a cut-off \\boxed{\\frac{1}{", "a"),  # the last complete box wins
        ("\\boxed{}", ""),
    ],
)
def test_extract_boxed(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", ["no box here", "\\boxed{3", "\\boxedfoo{3}", ""])
def test_extract_boxed_none(text: str) -> None:
    assert extract_boxed(text) is None


def test_normalize_answer_strips_presentation_only() -> None:
    assert normalize_answer(" $\\left( 3, \\dfrac{\\pi}{2} \\right)$. ") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("\\text{Evelyn}") == "Evelyn"
    assert normalize_answer("30^\\circ") == normalize_answer("30^{\\circ}") == "30"
    assert normalize_answer("2x+1") != normalize_answer("1+2x")  # reordering is left to math-verify


# --------------------------------------------------------------------------- math_verify on MATH500


def test_math_verify_accepts_every_math500_answer() -> None:
    answers = math500_answers()
    completions = [f"Reasoning... so the answer is $\\boxed{{{answer}}}$." for answer in answers]
    scores = math_verify(completions, answers)
    rejected = [a for a, s in zip(answers, scores, strict=True) if s != 1.0]
    assert rejected == []


def test_symbolic_path_alone_accepts_every_math500_answer() -> None:
    # Without the string fast path: math-verify itself must parse every reference answer.
    rejected = [answer for answer in math500_answers() if not symbolic_equivalent(answer, answer)]
    assert rejected == []


def test_math_verify_rejects_different_integers() -> None:
    integers = [a for a in math500_answers() if re.fullmatch(r"-?\d+", a)]
    rng = random.Random(0)
    pairs = []
    while len(pairs) < 150:
        a, b = rng.sample(integers, 2)
        if int(a) != int(b):
            pairs.append((a, b))
    scores = math_verify([f"\\boxed{{{b}}}" for _, b in pairs], [a for a, _ in pairs])
    assert scores == [0.0] * len(pairs)


def test_math_verify_rejects_random_distinct_math500_answers() -> None:
    # Two different MATH500 answers (after normalisation) drawn with a fixed seed: fractions,
    # intervals, expressions, words. None of the drawn pairs is mathematically equivalent.
    answers = math500_answers()
    rng = random.Random(1)
    pairs = []
    while len(pairs) < 100:
        a, b = rng.sample(answers, 2)
        if normalize_answer(a) != normalize_answer(b) and not (a.lstrip("-").isdigit() and b.lstrip("-").isdigit()):
            pairs.append((a, b))
    scores = math_verify([f"\\boxed{{{b}}}" for _, b in pairs], [a for a, _ in pairs])
    accepted = [pair for pair, score in zip(pairs, scores, strict=True) if score != 0.0]
    assert accepted == []


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{3}{4}", "\\frac34"),
        ("1+2x", "2x+1"),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
        ("[1,2)", "[1, 2)"),
        ("\\{2,1\\}", "\\{1,2\\}"),
        ("30", "30^\\circ"),
        ("x=5", "5"),
        ("25", "025"),
        ("142", "142.0"),
    ],
)
def test_equivalent_answers(candidate: str, reference: str) -> None:
    assert is_equivalent(candidate, reference)
    assert math_verify([f"The answer is \\boxed{{{candidate}}}"], [reference]) == [1.0]


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [("3", "4"), ("\\frac{1}{3}", "0.3"), ("(1,2]", "[1,2)"), ("(2,3)", "(3,2)"), ("2x", "2y"), ("}{", "1")],
)
def test_different_answers(candidate: str, reference: str) -> None:
    assert not is_equivalent(candidate, reference)
    assert math_verify([f"\\boxed{{{candidate}}}"], [reference]) == [0.0]


@pytest.mark.parametrize(
    ("candidate", "reference", "equal"),
    [
        ("46", "64", False),
        ("-7", "7", False),
        ("1.50", "1.5", True),
        (".5", "0.5", True),
        ("+3", "3", True),
        ("-0", "0", True),
        ("100", "1000", False),
        ("2.0001", "2", False),
    ],
)
def test_plain_numerals_are_compared_by_value_as_math_verify_would(candidate: str, reference: str, equal: bool) -> None:
    assert is_equivalent(candidate, reference) is equal
    assert symbolic_equivalent(candidate, reference) is equal  # the slow path agrees


def test_math_verify_edge_cases() -> None:
    completions = ["The answer is 5.", "\\boxed{}", "\\boxed{5", "\\boxed{5}", "\\boxed{5}"]
    answers = ["5", "5", "5", "5", ""]
    # no box, empty box, unbalanced box -> 0; an empty reference is "not applicable".
    assert math_verify(completions, answers) == [0.0, 0.0, 0.0, 1.0, None]


def test_math_verify_uses_text_after_think() -> None:
    reasoning = "<think>maybe \\boxed{4}</think> final: \\boxed{5}"
    assert math_verify([reasoning, "<think>\\boxed{5}</think> no final box"], ["5", "5"]) == [1.0, 0.0]
    # Without a closing think tag the whole response is searched.
    assert math_verify(["<think>\\boxed{5}"], ["5"]) == [1.0]


def test_math_verify_works_off_the_main_thread() -> None:
    # math-verify's own timeouts use signal.alarm, which raises outside the main thread.
    pairs = [("0.5", "\\frac{1}{2}"), ("1+2x", "2x+1"), ("3", "4")] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: math_verify([f"\\boxed{{{p[0]}}}"], [p[1]])[0], pairs))
    assert results == [1.0, 1.0, 0.0] * 4


def test_math_verify_never_raises_on_garbage() -> None:
    garbage = [
        "\\boxed{\\frac{}{}}",
        "\\boxed{\\sqrt}",
        "\\boxed{" + "(" * 300 + "}",
        "\\boxed{\\begin{matrix}}",
    ]
    assert math_verify(garbage, ["1"] * len(garbage)) == [0.0] * len(garbage)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_verify(["a", "b"], ["a"])


# --------------------------------------------------------------------------- other rewards


def test_exact_match() -> None:
    assert REWARDS.get("exact_match")([" 46\n", "46", "4 6", "x"], ["46", " 46 ", "46", ""]) == [
        1.0,
        1.0,
        0.0,
        None,
    ]


def test_regex_on_boxed_answer_full_match() -> None:
    regex = REWARDS.get("regex")
    completions = ["\\boxed{-12}", "\\boxed{12.5}", "12 but no box"]
    assert regex(completions, ["", "", ""], pattern=r"-?\d+") == [1.0, 0.0, 0.0]


def test_regex_search_in_completion() -> None:
    regex = REWARDS.get("regex")
    assert regex(["Final answer: 7", "no"], ["", ""], pattern=r"Final answer: \d", target="completion") == [
        1.0,
        0.0,
    ]


def test_regex_config_errors() -> None:
    regex = REWARDS.get("regex")
    with pytest.raises(ValueError, match="pattern"):
        regex(["a"], ["a"])
    with pytest.raises(ValueError, match="invalid pattern"):
        regex(["a"], ["a"], pattern="(")
    with pytest.raises(ValueError, match="target"):
        regex(["a"], ["a"], pattern="a", target="prompt")


def test_format_reward() -> None:
    assert REWARDS.get("format")(["\\boxed{x}", "\\boxed{}", "x", "\\fbox{1}"], ["", "", "", ""]) == [
        1.0,
        0.0,
        0.0,
        1.0,
    ]


# --------------------------------------------------------------------------- registry and composition


def test_every_configurable_reward_is_registered() -> None:
    configurable = set(RewardSpec.model_fields["name"].annotation.__args__)
    # One list of names (reward_specs.py); rewards.py implements each of them and nothing else.
    assert configurable == set(REWARD_NAMES) == set(REWARD_KINDS) == set(REWARDS.names())


def test_compose_rewards_weighted_sum() -> None:
    specs = [RewardSpec(name="math_verify", weight=1.0), RewardSpec(name="format", weight=0.25)]
    completions = ["\\boxed{\\frac{1}{2}}", "\\boxed{3}", "0.5"]
    total, per_fn = compose_rewards(specs, completions, ["0.5", "0.5", "0.5"])
    assert per_fn == {"math_verify": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0]}
    assert total == pytest.approx([1.25, 0.25, 0.0])
    assert list(per_fn) == ["math_verify", "format"]  # order of specs: the first defines accuracy


def test_compose_rewards_none_counts_as_zero_and_repeats_get_suffix() -> None:
    specs = [
        RewardSpec(name="exact_match", weight=2.0),
        RewardSpec(name="regex", weight=-1.0, kwargs={"pattern": "a+"}),
        RewardSpec(name="regex", weight=0.5, kwargs={"pattern": "^b$", "target": "completion"}),
    ]
    total, per_fn = compose_rewards(specs, ["\\boxed{aa}", "b"], ["\\boxed{aa}", ""])
    assert per_fn == {"exact_match": [1.0, 0.0], "regex": [1.0, 0.0], "regex#2": [0.0, 1.0]}
    assert total == pytest.approx([2.0 - 1.0, 0.5])


def test_compose_rewards_default_config() -> None:
    total, per_fn = compose_rewards(RewardConfig().functions, ["\\boxed{2}"], ["2"])
    assert total == [1.0] and per_fn == {"math_verify": [1.0]}


def test_a_catastrophic_backtracking_pattern_matches_in_linear_time() -> None:
    # (.+.+)+# backtracks exponentially in Python's re on text without '#'; RE2 has no backtracking.
    regex = REWARDS.get("regex")
    text = "a" * 50_000
    assert regex([text, text + "#"], ["", ""], pattern="(.+.+)+#", target="completion") == [0.0, 1.0]


def test_patterns_re2_cannot_run_in_linear_time_are_refused() -> None:
    regex = REWARDS.get("regex")
    for pattern in (r"(a)\1", r"(?=a)a", r"(?<!b)a"):
        with pytest.raises(ValueError, match="invalid pattern"):
            regex(["a"], ["a"], pattern=pattern)


# --------------------------------------------------------------------------- rows


def test_a_reward_row_is_the_prompt_and_the_json_columns_but_the_answer() -> None:
    extra = {"label": "x", "level": 3, "tags": ["a", {"b": 1.5}], "when": object(), "nan": math.nan, 7: "int key"}
    row = reward_row("What is 2+2?", extra)
    assert row == {"label": "x", "level": 3, "tags": ["a", {"b": 1.5}], "prompt": "What is 2+2?"}
    assert json.loads(json.dumps(row)) == row  # it crosses process boundaries as JSON unchanged
    assert reward_row("p", {"prompt": "another column"}) == {"prompt": "p"}  # the prompt wins


def test_every_reward_is_given_the_rows_and_a_count_mismatch_is_refused() -> None:
    check = RewardSpec(name="string_check", kwargs={"operation": "eq", "field": "label"})
    specs = [RewardSpec(name="exact_match"), check]
    rows = [{"label": "4"}, {"label": "5"}]
    total, per_fn = compose_rewards(specs, ["4", "4"], ["4", "4"], rows)
    assert per_fn["string_check"] == [1.0, 0.0] and total == [2.0, 1.0]
    with pytest.raises(ValueError, match="1 rows for 2 completions"):
        compose_rewards(specs, ["4", "4"], ["4", "4"], rows[:1])


# --------------------------------------------------------------------------- string_check

string_check = REWARDS.get("string_check")


@pytest.mark.parametrize(
    ("operation", "completion", "reference", "expected"),
    [
        ("eq", " Paris \n", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),  # eq is case-sensitive, like OpenAI's string_check
        ("ne", "Lyon", "Paris", 1.0),
        ("ne", "Paris", " Paris", 0.0),
        ("contains", "The capital is Paris.", "Paris", 1.0),
        ("contains", "The capital is paris.", "Paris", 0.0),
        ("ilike", "The capital is PARIS.", "%paris%", 1.0),
        ("ilike", "Paris", "p_ris", 1.0),
        ("ilike", "Pariss", "p_ris", 0.0),  # a LIKE pattern matches the whole input
        ("ilike", "100%", "100\\%", 1.0),  # a backslash makes % literal
        ("ilike", "100 percent", "100\\%", 0.0),
        ("ilike", "a_b", "a\\_b", 1.0),
        ("ilike", "axb", "a\\_b", 0.0),
        ("ilike", "line one\nline two", "line%two", 1.0),  # % spans newlines
        ("ilike", "(a+b)*[c]", "(A+B)*[C]", 1.0),  # regex metacharacters are literal
        ("ilike", "Ünïcode", "üNÏCODE", 1.0),
    ],
)
def test_string_check_operations(operation: str, completion: str, reference: str, expected: float) -> None:
    result = string_check([completion], [""], operation=operation, reference=reference)
    assert list(result) == [expected] and result.errors == [None]


def test_string_check_reads_the_reference_from_a_row_field_or_the_answer() -> None:
    rows = [{"label": "cat"}, {"label": "dog"}, {"label": 42}, {"other": 1}, {"label": ["a"]}]
    completions = ["cat", "cat", "42", "cat", "a"]
    result = string_check(completions, ["cat"] * 5, operation="eq", field="label", rows=rows)
    assert list(result) == [1.0, 0.0, 1.0, None, None]
    assert result.errors[:3] == [None, None, None]
    assert result.errors[3] == "string_check: the row has no field 'label'"
    assert "field 'label' is list, not text or a number" in str(result.errors[4])
    by_answer = string_check(["cat", "dog"], ["cat", "cat"], operation="eq", rows=[{}, {}])  # field defaults to answer
    assert list(by_answer) == [1.0, 0.0]


def test_string_check_on_the_boxed_answer() -> None:
    completions = ["I think \\boxed{Paris}", "Paris but no box", "<think>\\boxed{Lyon}</think> \\boxed{paris}"]
    result = string_check(completions, ["Paris"] * 3, operation="ilike", target="boxed")
    assert list(result) == [1.0, 0.0, 1.0]


def test_an_ilike_pattern_matches_in_linear_time() -> None:
    # A naive backtracking matcher takes exponential time on many %'s against a near miss.
    pattern = "%a" * 200 + "%b"
    text = "a" * 60_000
    started = time.monotonic()
    assert like_matcher(pattern).fullmatch(text) is None
    assert like_matcher(pattern).fullmatch(text + "b") is not None
    assert time.monotonic() - started < 5


def test_string_check_errors_are_counted_and_reported_by_the_composition() -> None:
    specs = [RewardSpec(name="string_check", kwargs={"operation": "contains", "field": "keyword"})]
    result = score_rewards(specs, ["has foo", "has bar"], ["", ""], [{"keyword": "foo"}, {}])
    assert result.parts == {"string_check": [1.0, 0.0]}
    assert result.errors == {"string_check": [None, "string_check: the row has no field 'keyword'"]}
    assert count_reward_errors(result.per_fn()) == 1


# --------------------------------------------------------------------------- per-reward metrics


def test_reward_metrics_give_each_rewards_mean_and_error_rate() -> None:
    per_fn = {
        "math_verify": [1.0, 0.0, 1.0, 1.0],
        "python": [0.5, 0.0, 0.0, 1.0],
        "python/errors": [0.0, 1.0, 1.0, 0.0],
        "regex#2": [0.0, 0.0, 0.0, 1.0],
    }
    assert reward_metrics(per_fn) == {
        "reward/math_verify/mean": 0.75,
        "reward/math_verify/error_rate": 0.0,
        "reward/python/mean": 0.375,
        "reward/python/error_rate": 0.5,
        "reward/regex#2/mean": 0.25,
        "reward/regex#2/error_rate": 0.0,
    }
    # Two processes with the same shard: sums double, means stay.
    doubled = reward_metrics(per_fn, all_sum=lambda value: 2 * value)
    assert doubled["reward/python/mean"] == 0.375 and doubled["reward/python/error_rate"] == 0.5
