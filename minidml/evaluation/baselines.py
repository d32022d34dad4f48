"""Published scores to measure minidml's against: the official BabyLM 2026 baseline.

The organisers' strict-small baseline is a 124M-parameter GPT-2 trained for 10 epochs of 10M
words; its final scores on the official 2026 pipeline are in the ``babylm-org/babylm-eval``
README, and its EWoK score (GPT-2 small) in the 2025 pipeline's README. Scores are in the
units of minidml's results (accuracies as fractions, wug tasks as Spearman's ρ), by suite;
a fast set is measured against its full task's final score, as the official curves are.
"""

from __future__ import annotations

OFFICIAL_2026_STRICT_SMALL = {
    "blimp": 0.6508, "blimp-supplement": 0.5725, "entity-tracking": 0.2107, "wug-adj": 0.56,
    "comps": 0.5181, "wug-past": 0.16, "ewok": 0.4980,
}


# a fast set whose full task is named otherwise
FULL_TASK = {"supplement-fast": "blimp-supplement"}


def full_task(suite: str) -> str:
    """The full task of a fast set (``suite`` itself otherwise)."""
    return FULL_TASK.get(suite, suite.removesuffix("-fast"))


def official_baseline(suite: str) -> float | None:
    """The official 2026 strict-small baseline's final score on ``suite`` (or on the full
    task of a fast set), or None where it published none."""
    return OFFICIAL_2026_STRICT_SMALL.get(full_task(suite))
