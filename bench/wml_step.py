"""Cost of learning ω: the exact hypergradient, and a whole WML step, against plain steps.

1. hypergradient: time of :func:`minidml.bilevel.hypergradient` (``exact``, and for context
   ``first-order``, ``fd`` and the nested ``torch.func.grad`` reference) ÷ one plain inner
   gradient step (forward + mutual loss + backward of all K students) on the same batch.
   Target: exact ≤ 2.5×.
2. overhead: a WML training step (``outer_every = 10``, averaged over whole 10-step cycles)
   ÷ a step of K independent students (``mode = single``: forward, CE, backward, AdamW).
   Target: ≤ 1.15×. Measured with the default held-out batch (as many sequences as a
   training batch) and with ``outer_batch_size`` a quarter of it.

All timings are medians over rounds that alternate the variants, in one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import torch

from bench import common
from minidml import Shape, Student, TrainConfig
from minidml.bilevel import hypergradient, hypergradient_nested
from minidml.data import Batches
from minidml.losses import mutual_loss
from minidml.rundir import student_configs
from minidml.trainer import Trainer

NAME = "wml_step"
FULL = dict(k=4, vocab=8192, shape=(4, 128, 4), batch=16, context=128, rounds=5, cycles=2)
QUICK = dict(k=3, vocab=512, shape=(2, 64, 2), batch=4, context=32, rounds=2, cycles=1)


def setup(s: dict, device: torch.device, mode: str, outer_batch_size: int | None = None
          ) -> Trainer:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, s["vocab"], size=400_000, dtype=np.uint16)
    batches = Batches(tokens, s["context"], s["batch"])
    cfg = TrainConfig(students=(Shape(*s["shape"]),) * s["k"], mode=mode, context=s["context"],
                      batch_size=s["batch"], steps=10_000, outer_every=10, device=str(device),
                      outer_batch_size=outer_batch_size)
    torch.manual_seed(0)
    students = [Student(c) for c in student_configs(cfg, s["vocab"])]
    return Trainer(cfg, students, batches)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    scfg = student_configs(TrainConfig(students=(Shape(*s["shape"]),), context=s["context"]),
                           s["vocab"])[0]
    result["settings"] = {**s, "student_params": scfg.n_params, "outer_every": 10}
    common.log(f"[{NAME}] K={s['k']} students of {scfg.n_params:,} params, "
               f"batch {s['batch']}x{s['context']}")

    # 1. hypergradient vs a plain inner gradient step -------------------------------------
    trainer = setup(s, device, "wml")
    students, omega = trainer.students, trainer.omega
    x, y = (t.to(device) for t in trainer.batches.train(0))
    xo, yo = (t.to(device) for t in trainer.batches.holdout(0))
    kw = dict(lr=1e-3, alpha=0.5, temperature=1.0)

    def inner() -> list[torch.Tensor]:
        for st in students:
            st.zero_grad(set_to_none=True)
        logits = [st(x).flatten(0, 1) for st in students]
        mutual_loss(logits, y.flatten(), omega, 0.5).total.backward()
        return [z.detach() for z in logits]

    logits = inner()
    variants = {
        "inner_step": inner,
        "exact": lambda: hypergradient(students, omega, [x], xo, yo, variant="exact",
                                       logits=[logits], **kw),
        "first-order": lambda: hypergradient(students, omega, [x], xo, yo,
                                             variant="first-order", **kw),
        "fd": lambda: hypergradient(students, omega, [x], xo, yo, variant="fd",
                                    logits=[logits], **kw),
        "nested": lambda: hypergradient_nested(students, omega, x, y, xo, yo, **kw),
    }
    times: dict[str, list[float]] = {n: [] for n in variants}
    for fn in variants.values():
        fn()
    for r in range(s["rounds"]):
        names = list(variants)
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, _ = common.timed(variants[name], device)
            times[name].append(wall)
        common.log(f"[{NAME}] hypergradient round {r}: "
                   + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    med = {n: common.summary(t)["median"] for n, t in times.items()}
    result["hypergradient_seconds"] = {n: common.summary(t) for n, t in times.items()}

    # 2. a WML step vs K independent students -------------------------------------------
    trainers = {"wml": setup(s, device, "wml"),
                "wml_quarter_outer_batch": setup(s, device, "wml", max(1, s["batch"] // 4)),
                "single": setup(s, device, "single")}
    for t in trainers.values():
        for _ in range(3):
            t.train_step()
        while t.step % 10:  # align so that every timed cycle holds exactly one outer step
            t.train_step()
    cycle: dict[str, list[float]] = {n: [] for n in trainers}
    for r in range(s["rounds"]):
        names = list(trainers)
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, _ = common.timed(lambda t=trainers[name]: [t.train_step()
                                                              for _ in range(10 * s["cycles"])],
                                   device)
            cycle[name].append(wall / (10 * s["cycles"]))
        common.log(f"[{NAME}] step round {r}: "
                   + ", ".join(f"{n} {c[-1]:.3f}s" for n, c in cycle.items()))
    step = {n: common.summary(v)["median"] for n, v in cycle.items()}
    result["step_seconds"] = {n: common.summary(v) for n, v in cycle.items()}
    result["ratios"] = {
        "exact_hypergradient_over_inner_step": med["exact"] / med["inner_step"],
        "first_order_over_inner_step": med["first-order"] / med["inner_step"],
        "fd_over_inner_step": med["fd"] / med["inner_step"],
        "nested_over_inner_step": med["nested"] / med["inner_step"],
        "wml_step_over_independent_step": step["wml"] / step["single"],
        "wml_step_quarter_outer_batch_over_independent_step":
            step["wml_quarter_outer_batch"] / step["single"],
    }
    r = result["ratios"]
    result["targets"] = {
        "exact_hypergradient": common.target(r["exact_hypergradient_over_inner_step"], 2.5,
                                             True),
        "wml_overhead": common.target(r["wml_step_over_independent_step"], 1.15, True),
    }
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    r = result["ratios"]
    return "\n".join([
        f"wml_step ({result['machine']['device']}{', QUICK' if result['quick'] else ''})",
        f"  hypergradient / inner step: exact {r['exact_hypergradient_over_inner_step']:.2f} "
        f"(target <= 2.5), first-order {r['first_order_over_inner_step']:.2f}, "
        f"fd {r['fd_over_inner_step']:.2f}, nested torch.func {r['nested_over_inner_step']:.2f}",
        f"  WML step (outer_every=10) / K independent steps: "
        f"{r['wml_step_over_independent_step']:.3f} (target <= 1.15); with a held-out batch "
        f"a quarter of the training batch: "
        f"{r['wml_step_quarter_outer_batch_over_independent_step']:.3f}",
    ])


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)

if __name__ == "__main__":
    sys.exit(main())
