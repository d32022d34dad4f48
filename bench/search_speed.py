"""How long the student architecture search takes: ``python -m bench search_speed``.

For K = 2, 4, 8 students and budgets 5M, 20M, 100M (harmonic targets; vocabularies 16384 and
8192) it times :func:`minidml.search.plan` *cold* (the grid of shapes rebuilt every time, as
in a fresh ``minidml search`` process) and *warm* (the grid cached), takes the best and the
median of several repeats, and adds the heaviest case someone may ask for (K = 8, 100M, four
MLP ratios). The target is under one second for K = 8. A budget below the minimum for its K
and vocabulary is recorded as such (with the time taken to refuse it), not timed as a
search. ``--quick``: one vocabulary, two repeats. The search is plain Python on the CPU:
``--device`` does not apply.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench import common
from minidml import search as S
from minidml.counts import format_count
from minidml.errors import MinidmlError

NAME = "search_speed"
REPEAT = 7
STUDENTS = (2, 4, 8)
BUDGETS = (5_000_000, 20_000_000, 100_000_000)
VOCABS = (16384, 8192)
GOAL_S = 1.0
WIDE_MLP_RATIOS = (8 / 3, 2.0, 3.0, 4.0)


def _time(fn, repeat: int, cold: bool) -> list[float]:
    times = []
    for _ in range(repeat):
        if cold:
            S._grid.cache_clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_one(budget: int, k: int, vocab: int, repeat: int) -> dict[str, Any]:
    row: dict[str, Any] = {"students": k, "budget": budget, "vocab_size": vocab,
                           "scheme": "harmonic", "min_budget": S.min_budget(k, vocab)}

    def run() -> list[S.Candidate]:
        return S.plan(budget, k, vocab)

    try:
        cands = run()
    except MinidmlError as e:
        row.update(status="budget_too_small", message=str(e),
                   refuse_s=min(_time(lambda: _refused(run), repeat, cold=True)))
        return row
    cold, warm = _time(run, repeat, cold=True), _time(run, repeat, cold=False)
    row.update(
        status="ok", cold_min_s=min(cold), cold_median_s=statistics.median(cold),
        warm_min_s=min(warm), warm_median_s=statistics.median(warm),
        max_abs_error=max(abs(c.error) for c in cands),
        students_detail=[{"n_layers": c.shape.n_layers, "d_model": c.shape.d_model,
                          "n_heads": c.shape.n_heads, "mlp_ratio": c.shape.mlp_ratio,
                          "n_params": c.n_params, "target": c.target,
                          "error": c.error, "role": c.role} for c in cands])
    return row


def _refused(run) -> None:
    try:
        run()
    except MinidmlError:
        return
    raise AssertionError("expected the budget to be refused")


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    repeat, vocabs = (2, VOCABS[:1]) if args.quick else (REPEAT, VOCABS)
    result = common.envelope(NAME, common.resolve_device("cpu"), args.quick)
    rows = [bench_one(b, k, v, repeat) for v in vocabs for b in BUDGETS for k in STUDENTS]
    timed = [r for r in rows if r["status"] == "ok"]
    worst = max((r["cold_median_s"] for r in timed), default=None)
    worst_k8 = max((r["cold_median_s"] for r in timed if r["students"] == 8), default=None)
    wide = _time(lambda: S.plan(100_000_000, 8, vocabs[0], mlp_ratios=WIDE_MLP_RATIOS),
                 repeat, cold=True)
    result["settings"] = {"students": list(STUDENTS), "budgets": list(BUDGETS),
                          "vocab_sizes": list(vocabs), "repeat": repeat,
                          "grid": {"layers": "1..32", "widths": "64..2048 step 32",
                                   "head_dims": list(S.DEFAULT_HEAD_DIMS),
                                   "mlp_ratios": list(S.DEFAULT_MLP_RATIOS),
                                   "aspect_range": list(S.DEFAULT_ASPECT_RANGE),
                                   "tolerance": S.DEFAULT_TOLERANCE}}
    result["summary"] = {"worst_cold_median_s": worst, "worst_cold_median_s_k8": worst_k8,
                         "k8_100M_four_mlp_ratios_cold_median_s": statistics.median(wide),
                         "cases_timed": len(timed),
                         "cases_budget_too_small": len(rows) - len(timed)}
    result["targets"] = {} if worst_k8 is None else {"k8_cold_median_s": {
        **common.target(worst_k8, GOAL_S, at_most=True), "applies": not args.quick}}
    result["results"] = rows
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"search_speed{' (QUICK)' if result['quick'] else ''}",
             f"{'vocab':>6} {'budget':>7} {'K':>2}  {'cold ms':>8} {'warm ms':>8}  max|err|"]
    for r in result["results"]:
        head = f"{r['vocab_size']:>6} {format_count(r['budget']):>7} {r['students']:>2}"
        if r["status"] == "ok":
            lines.append(f"{head}  {r['cold_median_s'] * 1e3:8.2f} "
                         f"{r['warm_median_s'] * 1e3:8.2f}  {r['max_abs_error']:.2%}")
        else:
            lines.append(f"{head}  budget too small (min {format_count(r['min_budget'])})")
    summary, target = result["summary"], result["targets"].get("k8_cold_median_s")
    lines.append(f"K=8, 100M, MLP ratios {{2, 8/3, 3, 4}}: "
                 f"{summary['k8_100M_four_mlp_ratios_cold_median_s'] * 1e3:.1f} ms cold")
    if target is not None:
        lines.append(f"worst cold median for K=8: {target['value'] * 1e3:.1f} ms (target < "
                     f"{GOAL_S:.0f} s: {'met' if target['met'] else 'NOT met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
