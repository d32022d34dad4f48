"""``wug-adj`` and ``wug-past``: the BabyLM 2025/2026 morphological wug tests, with their
fast sets, scored as the official strict pipeline scores them.

Each row holds two full sentences (``sentences``, tab-separated) that differ in the form of
a made-up word (``-ity`` against ``-ness`` for adjective nominalisation; the regular against
an irregular past tense), and ``ratio``, the share of human participants who chose the first
form. Each sentence is scored whole by the evaluation's protocol; the model's preference for
the first form is its softmax over the two sentences' log-probabilities, p₁ = σ(ℓ₁ − ℓ₂),
taken in float32 as the pipeline takes it (near 1, float32 makes some p₁ equal, and equal
values share their rank). The task's score is Spearman's rank correlation between p₁ and the
human ratios over all rows (``rho``, between −1 and 1; the pipeline reports it as it is, not
as a percentage).
Defined under ``babylm-2026`` only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import (
    EvalContext,
    Pair,
    SuiteResult,
    TaskResult,
    read_jsonl,
    score_pairs,
    spearman,
)

ROOT = "babylm-eval-2026"
# suite name: (official task name, folder under the data root)
SETS = {
    "wug-adj": ("wug_adj", f"{ROOT}/full_eval/wug_adj_nominalization"),
    "wug-adj-fast": ("wug_adj", f"{ROOT}/fast_eval/wug_adj_nominalization"),
    "wug-past": ("wug_past", f"{ROOT}/full_eval/wug_past_tense"),
    "wug-past-fast": ("wug_past", f"{ROOT}/fast_eval/wug_past_tense"),
}


def wug_rows(path: Path) -> list[tuple[Pair, float]]:
    """(the two sentences as a pair, the human ratio) per row of a wug file."""
    out = []
    for number, row in enumerate(read_jsonl(path, {"sentences": str}), 1):
        sentences = row["sentences"].split("\t")
        value: Any = row.get("ratio")  # any JSON value: one that is not a number fails below
        if len(sentences) != 2:
            raise MinidmlError(f"{path}:{number}: 'sentences' should be two sentences "
                               f"separated by one tab, not {len(sentences)}")
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            ratio = math.nan
        if not math.isfinite(ratio) or isinstance(row.get("ratio"), bool):
            raise MinidmlError(f"{path}:{number}: 'ratio' should be the share of participants "
                               f"who chose the first form, a number; got {row.get('ratio')!r}")
        out.append((Pair(sentences[0], sentences[1]), ratio))
    return out


class WugSuite:
    def __init__(self, task: str, folder: str):
        self.task, self.folder = task, folder

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        root = ctx.path(self.folder)
        files = sorted(Path(root).glob("*.jsonl"))
        if not files:
            raise MinidmlError(f"{root}: no .jsonl file; put the official wug file there")
        rows = [r for f in files for r in wug_rows(f)]
        if not rows:
            raise MinidmlError(f"{root}: no rows")
        rows = list(ctx.limited(rows))
        scored = score_pairs(ctx, {self.task: [pair for pair, _ in rows]})
        human = [ratio for _, ratio in rows]
        tasks = {}
        for label in ctx.labels:
            pairs = torch.tensor([s.scores[label] for s in scored.samples], dtype=torch.float32)
            firsts = torch.softmax(pairs, dim=1)[:, 0].tolist()
            tasks[label] = {self.task: TaskResult(self.task, {
                "rho": spearman(firsts, human), "prefers_first": sum(
                    p >= 0.5 for p in firsts) / len(firsts)}, len(firsts), primary="rho")}
        notes = [n for n in scored.notes if not n.startswith("ties")]
        return SuiteResult(tasks, {ctx.suite: (self.task,)}, notes, scored.samples)


def _factory(task: str, folder: str):
    return lambda: WugSuite(task, folder)


@hookimpl
def register_suites(register):
    for name, (task, folder) in SETS.items():
        fast = name.endswith("-fast")
        kind = "adjective nominalisation (-ity/-ness)" if task == "wug_adj" else "past tense"
        register(name, _factory(task, folder), version="1",
                 description=f"wug test, {kind}: Spearman ρ with human ratios"
                             + (", the fast set" if fast else ""),
                 requires=(folder,), protocols=("babylm-2026",))
