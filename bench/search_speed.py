"""How long the student architecture search takes: ``python -m bench.search_speed``.

For K = 2, 4, 8 students and budgets 5M, 20M, 100M (harmonic targets; vocabularies 16384 and
8192 by default) it times :func:`minidml.search.plan` *cold* (the grid of shapes rebuilt every
time, as in a fresh ``minidml search`` process) and *warm* (the grid cached), takes the best and
the median of several repeats, and writes ``bench/results/search_speed.json`` atomically (a
temporary file, then ``os.replace``) with the machine it ran on. The goal is under one second
for K = 8; the JSON says whether every run met it. A budget below the minimum for its K and
vocabulary is recorded as such (with the time taken to refuse it), not timed as a search.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from minidml import search as S
from minidml._io import write_json
from minidml.counts import format_count
from minidml.errors import MinidmlError

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "search_speed.json"
STUDENTS = (2, 4, 8)
BUDGETS = (5_000_000, 20_000_000, 100_000_000)
VOCABS = (16384, 8192)
GOAL_S = 1.0
WIDE_MLP_RATIOS = (8 / 3, 2.0, 3.0, 4.0)


def machine_info() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "torch": version("torch"), "minidml": version("minidml"),
    }


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.search_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    ap.add_argument("--repeat", type=int, default=7, help="timed repeats per case")
    ap.add_argument("--vocab", type=int, nargs="+", default=list(VOCABS))
    args = ap.parse_args(argv)

    rows = [bench_one(b, k, v, max(1, args.repeat))
            for v in args.vocab for b in BUDGETS for k in STUDENTS]
    timed = [r for r in rows if r["status"] == "ok"]
    worst = max((r["cold_median_s"] for r in timed), default=None)
    worst_k8 = max((r["cold_median_s"] for r in timed if r["students"] == 8), default=None)
    # a four times larger grid (MLP ratios 2, 8/3, 3, 4): the heaviest case someone may ask for
    wide = _time(lambda: S.plan(100_000_000, 8, args.vocab[0], mlp_ratios=WIDE_MLP_RATIOS),
                 max(1, args.repeat), cold=True)
    result = {
        "benchmark": "search_speed",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"students": list(STUDENTS), "budgets": list(BUDGETS),
                     "vocab_sizes": args.vocab, "repeat": args.repeat,
                     "grid": {"layers": "1..32", "widths": "64..2048 step 32",
                              "head_dims": list(S.DEFAULT_HEAD_DIMS),
                              "mlp_ratios": list(S.DEFAULT_MLP_RATIOS),
                              "aspect_range": list(S.DEFAULT_ASPECT_RANGE),
                              "tolerance": S.DEFAULT_TOLERANCE}},
        "summary": {"goal_s": GOAL_S, "worst_cold_median_s": worst,
                    "worst_cold_median_s_k8": worst_k8,
                    "all_under_goal": worst is not None and worst < GOAL_S,
                    "k8_100M_four_mlp_ratios_cold_median_s": statistics.median(wide),
                    "cases_timed": len(timed), "cases_budget_too_small": len(rows) - len(timed)},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)

    print(f"{'vocab':>6} {'budget':>7} {'K':>2}  {'cold ms':>8} {'warm ms':>8}  max|err|")
    for r in rows:
        head = f"{r['vocab_size']:>6} {format_count(r['budget']):>7} {r['students']:>2}"
        if r["status"] == "ok":
            print(f"{head}  {r['cold_median_s'] * 1e3:8.2f} {r['warm_median_s'] * 1e3:8.2f}  "
                  f"{r['max_abs_error']:.2%}")
        else:
            print(f"{head}  budget too small (min {format_count(r['min_budget'])})")
    print(f"K=8, 100M, MLP ratios {{2, 8/3, 3, 4}}: {statistics.median(wide) * 1e3:.1f} ms cold")
    print(f"worst cold median: {worst * 1e3:.1f} ms (goal < {GOAL_S:.0f} s) -> {args.out}")
    return result


if __name__ == "__main__":
    main()
