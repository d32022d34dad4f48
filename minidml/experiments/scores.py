"""A model's suite scores as a comparison records them: each suite's macro score and its
standard error, read from a results document, and their mean (:data:`MACRO`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["MACRO", "model_scores", "score_text"]

# the report's column for the mean of a model's suite scores (the BabyLM leaderboard's macro
# when the suites are BLiMP, the supplement, EWoK and GLUE)
MACRO = "macro"


def model_scores(doc: dict[str, Any], label: str, suites: Sequence[str]) -> dict[str, Any]:
    """Per suite, the macro score and its stderr for one model; with two suites or more,
    also their mean (:data:`MACRO`; its stderr from the suites' as independent)."""
    groups = doc["groups"].get(label, {})
    out = {}
    for name in suites:
        g = groups.get(name) or next((v for v in groups.values() if v.get("suite") == name),
                                     None)
        if g is not None:
            out[name] = {"score": g["score"], "stderr": g["score_stderr"],
                         "n_tasks": g["n_tasks"]}
    if len(suites) > 1 and len(out) == len(suites):
        n = len(out)
        out[MACRO] = {"score": sum(c["score"] for c in out.values()) / n,
                      "stderr": math.sqrt(sum(c["stderr"] ** 2 for c in out.values())) / n,
                      "n_tasks": sum(c["n_tasks"] for c in out.values())}
    return out


def score_text(score: float, stderr: float) -> str:
    """A score in percent with its standard error, or alone where it has none (a
    correlation, a mean over suites)."""
    return f"{100 * score:.1f}" + (f" ± {100 * stderr:.1f}" if math.isfinite(stderr) else "")
