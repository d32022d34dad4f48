"""``agreement``: minimal pairs from minidml's own grammar (the demo corpus's), no download.

Five agreement dependencies (determiner–noun, subject–verb with and without attractors or
relative clauses, reflexives); in each pair the bad sentence changes exactly one word to the
other number. The pairs are drawn with a seed of their own, so they are new sentences for a
model trained on the demo corpus, not a replay of it. Scored as BLiMP is, by the
evaluation's protocol (:mod:`minidml.evaluation.protocols`); version 3 is that, ties
correct (version 2 was lm-evaluation-harness's rule with ties wrong, version 1 scored
without the space).
"""

from __future__ import annotations

from minidml.demo.grammar import PHENOMENA, minimal_pairs
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import EvalContext, Pair, SuiteResult, score_pairs

PAIRS_PER_PHENOMENON = 200
SEED = 20_241_001  # not the demo corpus's seed


class AgreementSuite:
    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        n = int(ctx.options.get("agreement_pairs", PAIRS_PER_PHENOMENON))
        tasks: dict[str, list[Pair]] = {p: [] for p in PHENOMENA}
        for mp in minimal_pairs(n, seed=SEED):
            tasks[mp.phenomenon].append(Pair(mp.good, mp.bad))
        return score_pairs(ctx, tasks)


@hookimpl
def register_suites(register):
    register("agreement", AgreementSuite, version="3",
             description="agreement minimal pairs from minidml's grammar (no data needed)")
