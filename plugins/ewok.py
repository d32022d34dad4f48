"""``ewok``: EWoK-core-1.0 filtered to the BabyLM vocabulary, 11 domains.

As in both BabyLM pipelines, each row compares two continuations of the same context: it is
correct when log p(Target1 | Context1) ≥ log p(Target2 | Context1). Each item appears twice
in the files (the second time with contexts and targets swapped), so both orders count. The
choice is ``Context1 + " " + Target``, tokenised together; the protocol
(:mod:`minidml.evaluation.protocols`) says which of its tokens are the target's.

Version 3: scored by the protocol (``babylm-2026`` by default), ties correct. Version 2 was
lm-evaluation-harness's rule with ties counted wrong; version 1 tokenised context and target
apart.
"""

from __future__ import annotations

from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import EvalContext, Pair, SuiteResult, read_jsonl, score_pairs

from ._sources import sources

FOLDER = "babylm-eval/ewok_filtered"
DOMAINS = ("agent-properties", "material-dynamics", "material-properties", "physical-dynamics",
           "physical-interactions", "physical-relations", "quantitative-properties",
           "social-interactions", "social-properties", "social-relations", "spatial-relations")


FAST_FOLDER = "babylm-eval-2026/fast_eval/ewok_fast"  # 100 rows a domain, for checkpoints


class EwokSuite:
    folder = FOLDER

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        tasks = {}
        for domain in DOMAINS:
            rows = read_jsonl(ctx.path(f"{self.folder}/{domain}.jsonl"),
                              {"Context1": str, "Target1": str, "Target2": str})
            tasks[domain] = [Pair(r["Target1"], r["Target2"], r["Context1"])
                             for r in rows]
        return score_pairs(ctx, tasks)


class EwokFastSuite(EwokSuite):
    folder = FAST_FOLDER


@hookimpl
def register_suites(register):
    register("ewok", EwokSuite, version="3",
             description="EWoK-core-1.0, BabyLM-filtered: 11 domains, 7,618 rows",
             requires=tuple(f"{FOLDER}/{d}.jsonl" for d in DOMAINS),
             sources=sources(FOLDER + "/"))
    register("ewok-fast", EwokFastSuite, version="1",
             description="EWoK, the BabyLM 2025/2026 fast set: 11 × 100 rows",
             requires=tuple(f"{FAST_FOLDER}/{d}.jsonl" for d in DOMAINS))
