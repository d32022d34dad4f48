"""The student search: :func:`minidml.search.plan` for K = 2, 4, 8 students and budgets 5M,
20M and 100M (harmonic targets; vocabularies 16,384 and 8,192), timed with
``Timer.blocked_autorange`` cold (the grid of shapes rebuilt each call, as in a fresh
``minidml search`` process) and warm (the grid cached), plus the heaviest case a user may ask
for (K = 8, 100M, four MLP ratios). A budget below a K's minimum is recorded as such. Plain
Python on the CPU (``--device`` does not apply). Target: the cold search for K = 8 < 1 s.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import common

NAME = "search_speed"
STUDENTS, BUDGETS, VOCABS = (2, 4, 8), (5_000_000, 20_000_000, 100_000_000), (16384, 8192)
WIDE_MLP_RATIOS = (8 / 3, 2.0, 3.0, 4.0)


def _seconds(fn, cold: bool, min_run_time: float) -> float:
    from minidml import search as S

    def call() -> Any:
        if cold:
            S._grid.cache_clear()
        return fn()

    return common.timer(call, NAME).blocked_autorange(min_run_time=min_run_time).median


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import search as S
    from minidml.errors import MinidmlError

    vocabs, min_run_time = (VOCABS[:1], 0.01) if args.quick else (VOCABS, 0.2)
    result = common.envelope(NAME, common.resolve_device("cpu"), args.quick)
    rows = []
    for vocab in vocabs:
        for budget in BUDGETS:
            for k in STUDENTS:
                row: dict[str, Any] = {"students": k, "budget": budget, "vocab_size": vocab,
                                       "min_budget": S.min_budget(k, vocab)}
                try:
                    cands = S.plan(budget, k, vocab)
                except MinidmlError as e:
                    rows.append({**row, "status": "budget_too_small", "message": str(e)})
                    continue
                rows.append({**row, "status": "ok", **{
                    f"{kind}_median_s": _seconds(lambda b=budget, k=k, v=vocab: S.plan(b, k, v),
                                                 kind == "cold", min_run_time)
                    for kind in ("cold", "warm")},
                    "max_abs_error": max(abs(c.error) for c in cands),
                    "shapes": [[c.shape.n_layers, c.shape.d_model, c.shape.n_heads,
                                c.shape.mlp_ratio] for c in cands]})
    timed = [r for r in rows if r["status"] == "ok"]
    worst_k8 = max(r["cold_median_s"] for r in timed if r["students"] == 8)
    wide = _seconds(lambda: S.plan(100_000_000, 8, vocabs[0], mlp_ratios=WIDE_MLP_RATIOS),
                    True, min_run_time)
    result.update(settings={"students": STUDENTS, "budgets": BUDGETS, "vocab_sizes": vocabs,
                            "min_run_time": min_run_time},
                  summary={"worst_cold_median_s_k8": worst_k8,
                           "k8_100M_four_mlp_ratios_cold_median_s": wide},
                  targets={"k8_cold_median_s": common.target(worst_k8, 1.0, True,
                                                             not args.quick)},
                  results=rows)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"search_speed{' (QUICK)' if result['quick'] else ''}",
             f"{'vocab':>6} {'budget':>11} {'K':>2}  {'cold ms':>8} {'warm ms':>8}  max|err|"]
    for r in result["results"]:
        head = f"{r['vocab_size']:>6} {r['budget']:>11,} {r['students']:>2}"
        lines.append(f"{head}  {r['cold_median_s'] * 1e3:8.2f} {r['warm_median_s'] * 1e3:8.2f}"
                     f"  {r['max_abs_error']:.2%}" if r["status"] == "ok" else
                     f"{head}  budget too small (min {r['min_budget']:,})")
    lines.append(f"K=8, 100M, four MLP ratios: "
                 f"{result['summary']['k8_100M_four_mlp_ratios_cold_median_s'] * 1e3:.1f} ms cold")
    return "\n".join([*lines, common.targets_line(result["targets"])])
