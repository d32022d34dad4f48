"""The cost of learning ω, from three ``Trainer.train_step`` configurations of the same K
students on the same random tokens, interleaved in rounds (per-step times,
``Timer.blocked_autorange``):

* ``single`` (the baseline): mode ``single``, K independent students;
* ``inner``: mode ``wml`` without ω steps (``outer_every`` beyond the run): the mutual loss;
* ``outer``: mode ``wml`` with ``outer_every = 1``: every step also takes the ω step (the
  exact hypergradient of the held-out loss through the unrolled inner step).

The hypergradient costs ``outer − inner``; a WML step at the default ``outer_every = 10``
costs ``inner + (outer − inner) / 10``. Targets: hypergradient ÷ inner step ≤ 2.5, and the
WML step ÷ the independent students' step ≤ 1.15.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import common

NAME = "wml_step"
FULL = dict(k=4, vocab=8192, shape=(4, 128, 4), batch=16, context=128, rounds=4,
            min_run_time=2.0, outer_every=10)
QUICK = dict(k=3, vocab=512, shape=(2, 64, 2), batch=4, context=32, rounds=2,
             min_run_time=0.0, outer_every=10)
CONFIGS = {"single": dict(mode="single"), "inner": dict(mode="wml", outer_every=10**9),
           "outer": dict(mode="wml", outer_every=1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import Shape

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    shapes = [Shape(*s["shape"])] * s["k"]
    trainers = {n: common.trainer(shapes, s["vocab"], s["context"], s["batch"], device,
                                  compile="off", **c) for n, c in CONFIGS.items()}
    for tr in trainers.values():
        tr.train_step()
    measured = common.interleave({n: tr.train_step for n, tr in trainers.items()},
                                 s["rounds"], NAME, min_run_time=s["min_run_time"])
    sec = {n: m.median for n, m in measured.items()}
    hyper = sec["outer"] - sec["inner"]
    wml = sec["inner"] + hyper / s["outer_every"]
    r = {"hypergradient_over_inner_step": hyper / sec["inner"],
         "wml_step_over_independent_step": wml / sec["single"],
         "inner_step_over_independent_step": sec["inner"] / sec["single"]}
    applies = not args.quick
    result.update(
        settings={**s, "student_params": trainers["single"].students[0].config.n_params,
                  "precision": trainers["single"].precision_record["choice"]},
        step_seconds={n: common.stats(m) for n, m in measured.items()},
        hypergradient_seconds=hyper, wml_step_seconds=wml, ratios=r,
        targets={"exact_hypergradient": common.target(r["hypergradient_over_inner_step"],
                                                      2.5, True, applies),
                 "wml_overhead": common.target(r["wml_step_over_independent_step"], 1.15,
                                               True, applies)},
        table=common.table(measured))
    return result


def report(result: dict[str, Any]) -> str:
    r = result["ratios"]
    return "\n".join([
        common.heading(result),
        result["table"],
        f"  hypergradient / inner step {r['hypergradient_over_inner_step']:.2f}; WML step "
        f"(outer_every {result['settings']['outer_every']}) / K independent steps "
        f"{r['wml_step_over_independent_step']:.3f}",
        common.targets_line(result["targets"])])
