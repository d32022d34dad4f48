"""``blimp-supplement``: the five BabyLM supplement tasks (hypernym, QA congruence easy and
tricky, subject–auxiliary inversion, turn taking). Some sentences are two-line dialogues;
they are scored whole, newline included, by the evaluation's protocol
(:mod:`minidml.evaluation.protocols`). The official pipeline names each task by its file.

Version 3: scored by the protocol (``babylm-2026`` by default), ties correct. Version 2 was
lm-evaluation-harness's rule with ties counted wrong; version 1 scored without the space."""

from __future__ import annotations

from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import EvalContext, Pair, SuiteResult, read_jsonl, score_pairs

from ._sources import sources

FOLDER = "babylm-eval/supplement_filtered"
FAST_FOLDER = "babylm-eval-2026/fast_eval/supplement_fast"  # 50 pairs a task, for checkpoints
TASKS = ("hypernym", "qa_congruence_easy", "qa_congruence_tricky", "subject_aux_inversion",
         "turn_taking")


class SupplementSuite:
    folder = FOLDER

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        tasks = {}
        for name in TASKS:
            rows = read_jsonl(ctx.path(f"{self.folder}/{name}.jsonl"),
                              {"sentence_good": str, "sentence_bad": str})
            tasks[name] = [Pair(r["sentence_good"], r["sentence_bad"]) for r in rows]
        return score_pairs(ctx, tasks)


class SupplementFastSuite(SupplementSuite):
    folder = FAST_FOLDER


@hookimpl
def register_suites(register):
    register("blimp-supplement", SupplementSuite, version="3",
             description="BabyLM 2024 BLiMP supplement: 5 tasks, 5,218 pairs",
             requires=tuple(f"{FOLDER}/{t}.jsonl" for t in TASKS),
             sources=sources(FOLDER + "/"))
    register("supplement-fast", SupplementFastSuite, version="1",
             description="BLiMP supplement, the BabyLM 2025/2026 fast set: 5 × 50 pairs",
             requires=tuple(f"{FAST_FOLDER}/{t}.jsonl" for t in TASKS))
