"""``blimp`` (the BabyLM 2024 vocabulary-filtered BLiMP) and ``blimp-full`` (the original).

67 paradigms, one file each; a pair is correct when the good sentence's summed
log-probability is at least the bad one's (a tie counts as correct, as in both pipelines),
each sentence scored whole by the evaluation's protocol
(:mod:`minidml.evaluation.protocols`). Reported per paradigm, and as unweighted means over
paradigms: overall (the macro score BabyLM reports: the official pipeline averages over the
``UID`` s, one per paradigm), per ``field`` and per phenomenon (``linguistics_term``).

Version 3: scored by the protocol (``babylm-2026`` by default), ties correct. Version 2 was
lm-evaluation-harness's rule with ties counted wrong; version 1 scored without the space.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import EvalContext, Pair, SuiteResult, read_jsonl, score_pairs

from ._sources import sources

FIELDS = {"sentence_good": str, "sentence_bad": str, "field": str, "linguistics_term": str}


def paradigm_pairs(ctx: EvalContext, folder: str, expected: int = 67
                   ) -> tuple[dict[str, list[Pair]], dict[str, tuple[str, ...]]]:
    """Pairs per paradigm from ``folder``'s jsonl files, and the field/phenomenon groups."""
    root = ctx.path(folder)
    files = sorted(Path(root).glob("*.jsonl"))
    if len(files) != expected:
        raise MinidmlError(f"{root}: {len(files)} paradigm files, expected {expected}; "
                           f"run `minidml data fetch {ctx.suite}`")
    tasks: dict[str, list[Pair]] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for f in files:
        rows = read_jsonl(f, FIELDS)
        if not rows:
            raise MinidmlError(f"{f}: no pairs")
        name = f.stem
        tasks[name] = [Pair(r["sentence_good"], r["sentence_bad"]) for r in rows]
        # the official pipeline writes the one field spelled two ways as "syntax/semantics"
        field_name = rows[0]["field"].replace("syntax_semantics", "syntax/semantics")
        groups[f"field={field_name}"].append(name)
        groups[f"phenomenon={rows[0]['linguistics_term']}"].append(name)
    return tasks, {ctx.suite: tuple(tasks), **{g: tuple(m) for g, m in sorted(groups.items())}}


class BlimpSuite:
    folder = "babylm-eval/blimp_filtered"

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        tasks, groups = paradigm_pairs(ctx, self.folder)
        return score_pairs(ctx, tasks, groups)


class BlimpFullSuite(BlimpSuite):
    folder = "blimp"


class BlimpFastSuite(BlimpSuite):
    """The BabyLM 2025/2026 fast set: 200 pairs of each filtered paradigm, for checkpoints."""

    folder = "babylm-eval-2026/fast_eval/blimp_fast"


@hookimpl
def register_suites(register):
    register("blimp", BlimpSuite, version="3",
             description="BLiMP, BabyLM 2024 vocabulary-filtered: 67 paradigms, 59,875 pairs",
             requires=(BlimpSuite.folder,),
             sources=sources(BlimpSuite.folder + "/"))
    register("blimp-full", BlimpFullSuite, version="3",
             description="BLiMP, original: 67 paradigms, 67,000 pairs",
             requires=(BlimpFullSuite.folder,),
             sources=sources(BlimpFullSuite.folder + "/"))
    register("blimp-fast", BlimpFastSuite, version="1",
             description="BLiMP-filtered, the BabyLM 2025/2026 fast set: 67 × 200 pairs",
             requires=(BlimpFastSuite.folder,))
