"""Reasoning-behaviour keyword rates of generated responses (ReMix paper, section on self-reflection).

The five keyword categories are those of the official ReMix repository's
``_count_behavior_emergence``. For each category ``<cat>`` two numbers are reported:

- ``<cat>``: total keyword hits / total words over all texts (words are ``\\b\\w+\\b`` tokens);
- ``appear_<cat>``: fraction of texts with at least one hit.

Unlike the repository, which counts case-insensitive *substrings* ("but" inside "distribute", "if"
inside "different"), matching here is case-insensitive on word boundaries, so the rates measure
the words themselves (a hyphenated word such as "double-check" is one keyword, not also a
"check"). Multi-word keywords ("what if", "plan B") match across any whitespace, and
overlapping keywords both count ("what if" is also an "if"), as they do in the repository.
"""

from __future__ import annotations

import re

# One keyword list per category reads better than one keyword per line.
# fmt: off
BEHAVIOR_KEYWORDS: dict[str, tuple[str, ...]] = {
    "self_reflection": (
        "verify", "re-examine", "double-check", "why", "root cause", "validate", "abduct", "question",
        "check", "but", "wait", "confirm", "scrutinize", "analyze", "investigate", "probe",
    ),
    "hypotheticals": (
        "suppose", "assume", "if", "hypothetically", "what if", "doubt", "presume", "envision", "try to",
        "imagine", "assuming", "speculate", "pretend", "postulate", "consider",
    ),
    "branching_analysis": (
        "alternatively", "on the other hand", "another approach", "option", "another", "otherwise",
        "instead", "conversely", "plan B", "fallback", "choose", "diverge",
    ),
    "uncertainty_markers": (
        "possibly", "uncertain", "seems", "likely", "probable", "might", "tentatively", "conceivably",
        "surmise", "perhaps", "maybe", "perchance", "plausibly", "potentially", "presumably", "guess",
    ),
    "meta_cognition": (
        "reflect", "contemplate", "meditate", "deep thought", "introspect", "ponder", "ruminate",
        "deliberate", "cogitate", "theorize", "philosophize",
    ),
}
# fmt: on

_WORD = re.compile(r"\b\w+\b")


def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive pattern; inner spaces of a phrase match any whitespace."""
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    # Hyphens count as part of a word here, so "check" is not counted again inside "double-check".
    return re.compile(rf"(?<![\w-]){body}(?![\w-])", re.IGNORECASE)


_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    category: tuple(_keyword_pattern(keyword) for keyword in keywords)
    for category, keywords in BEHAVIOR_KEYWORDS.items()
}


def count_hits(text: str, category: str) -> int:
    """Keyword occurrences of one category in ``text``."""
    return sum(len(pattern.findall(text)) for pattern in _PATTERNS[category])


def keyword_rates(texts: list[str]) -> dict[str, float]:
    """``<cat>`` (hits per word) and ``appear_<cat>`` (share of texts with a hit) for the 5 categories."""
    total_words = sum(len(_WORD.findall(text)) for text in texts)
    rates: dict[str, float] = {}
    for category in BEHAVIOR_KEYWORDS:
        hits = [count_hits(text, category) for text in texts]
        rates[category] = sum(hits) / total_words if total_words else 0.0
        rates[f"appear_{category}"] = sum(1 for h in hits if h > 0) / len(texts) if texts else 0.0
    return rates
