"""Reasoning-behaviour keyword rates: word-boundary matching, both rates, the five categories."""

from __future__ import annotations

import pytest

from remix_engine.behavior import BEHAVIOR_KEYWORDS, count_hits, keyword_rates

CATEGORIES = [
    "self_reflection",
    "hypotheticals",
    "branching_analysis",
    "uncertainty_markers",
    "meta_cognition",
]


def test_keys_are_the_five_categories_and_their_appearance_rates() -> None:
    assert list(BEHAVIOR_KEYWORDS) == CATEGORIES
    assert set(keyword_rates(["x"])) == set(CATEGORIES) | {f"appear_{c}" for c in CATEGORIES}


def test_empty_inputs_give_zeros() -> None:
    for texts in ([], [""], ["   ", "..."]):
        rates = keyword_rates(texts)
        assert set(rates.values()) == {0.0}
        assert len(rates) == 10


def test_rates_by_hand() -> None:
    texts = ["Wait, let me double-check. But what if x differs? Plan  B: maybe distribute.", "nothing here"]
    # 16 words: Wait let me double check But what if x differs Plan B maybe distribute nothing here.
    # self_reflection: Wait, double-check, But = 3 (not "check" again; "distribute" holds no "but")
    # hypotheticals: "what if" and its "if" = 2 ("differs" holds no "if" as a word)
    # branching_analysis: "Plan B" across two spaces = 1; uncertainty_markers: maybe = 1.
    rates = keyword_rates(texts)
    assert rates["self_reflection"] == pytest.approx(3 / 16)
    assert rates["hypotheticals"] == pytest.approx(2 / 16)
    assert rates["branching_analysis"] == pytest.approx(1 / 16)
    assert rates["uncertainty_markers"] == pytest.approx(1 / 16)
    assert rates["meta_cognition"] == 0.0
    assert rates["appear_self_reflection"] == 0.5 and rates["appear_meta_cognition"] == 0.0


def test_word_boundaries_and_case() -> None:
    assert count_hits("Different distributions, buttons, whys", "self_reflection") == 0
    assert count_hits("different", "hypotheticals") == 0
    assert count_hits("WAIT. Why? VERIFY", "self_reflection") == 3
    assert count_hits("On the other\nhand, ANOTHER APPROACH", "branching_analysis") == 3  # + "another" itself
    assert count_hits("Let me ponder; deep   thought.", "meta_cognition") == 2


def test_appearance_is_a_fraction_of_texts() -> None:
    texts = ["perhaps", "maybe maybe", "no", "certain"]
    rates = keyword_rates(texts)
    assert rates["appear_uncertainty_markers"] == 0.5
    assert rates["uncertainty_markers"] == pytest.approx(3 / 5)  # 3 hits over 5 words


def test_every_keyword_matches_itself() -> None:
    for category, keywords in BEHAVIOR_KEYWORDS.items():
        for keyword in keywords:
            assert count_hits(f"So, {keyword.upper()}!", category) >= 1, keyword
