"""The WML step of compare's students, before and after: ``python -m bench.compare_step``.

The configuration the throughput work was judged on: one WML training step of the four
students that ``minidml compare CORPUS --budget 4M --students 4 --vocab-size 8192
--context 128 --batch-size 32`` trains, at batch 32 × 128 and vocabulary 8,192.

* ``before``: the shapes the search picked before it knew speed (11×96, 5×96, 9×64, 5×64,
  head size 32), the loss from full logits, eager, fp32: the step as it was;
* ``after``: the shapes :func:`minidml.search.plan` picks now for the same budget, with the
  defaults: the loss from hidden states, ``compile="auto"`` (which compiles: the run is sized
  like a comparison's, hours of training) and ``precision="auto"``.

Both run whole ``outer_every`` cycles of :meth:`~minidml.trainer.Trainer.train_step` (one
outer ω step per cycle, as in training), interleaved in rounds with probes of the fp32
matmul peak (the best ``torch.mm`` over 1024³ and the students' own shapes), so a machine
that gets busier or quieter affects all alike. Reported: tokens/s of each (tokens of a step
over its median time), their ratio (target ≥ 2), and the ``after`` step's model FLOP/s
(:meth:`~minidml.model.StudentConfig.flops_per_token` of every student) over the peak
(target ≥ 0.6). Model FLOPs leave out the outer step's extra passes, so that ratio
understates the hardware's use slightly.
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
from minidml.data import Batches
from minidml.rundir import student_configs
from minidml.search import plan
from minidml.trainer import Trainer

NAME = "compare_step"
BEFORE_SHAPES = (Shape(11, 96, 3), Shape(5, 96, 3), Shape(9, 64, 2), Shape(5, 64, 2))
FULL = dict(vocab=8192, batch=32, context=128, budget=4_000_000, k=4, rounds=4, cycles=1,
            outer_every=10, warmup_cycles=1)
QUICK = dict(vocab=512, batch=4, context=32, budget=600_000, k=4, rounds=1, cycles=1,
             outer_every=2, warmup_cycles=1)
PEAK_SHAPES = ((1024, 1024, 1024), (4096, 256, 1024), (4096, 256, 8192))
TARGET_SPEEDUP = 2.0
TARGET_EFFICIENCY = 0.6


def make_trainer(shapes: tuple[Shape, ...], s: dict, device: torch.device,
                 **settings: Any) -> Trainer:
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, s["vocab"], size=1 << 21, dtype=np.uint16)
    batches = Batches(tokens, s["context"], s["batch"])
    cfg = TrainConfig(students=shapes, mode="wml", context=s["context"], batch_size=s["batch"],
                      steps=200_000, outer_every=s["outer_every"], device=str(device),
                      **settings)
    torch.manual_seed(0)
    return Trainer(cfg, [Student(c) for c in student_configs(cfg, s["vocab"])], batches)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    before_shapes = BEFORE_SHAPES if not args.quick else tuple(
        Shape(n, 64, 2) for n in (4, 3, 2, 1))
    after_shapes = tuple(c.shape for c in plan(s["budget"], s["k"], s["vocab"]))
    trainers = {
        "before": make_trainer(before_shapes, s, device, head_loss="logits", compile="off",
                               precision="fp32"),
        # a quick smoke run does not wait for inductor
        "after": make_trainer(after_shapes, s, device, **({"compile": "off"} if args.quick
                                                          else {})),
    }
    result["settings"] = {**s, "configurations": {
        name: {"shapes": [[sh.n_layers, sh.d_model, sh.n_heads] for sh in t.config.students],
               "n_params": [st.config.n_params for st in t.students],
               "head_loss": t.config.head_loss, "compile": t.compile_record,
               "precision": t.precision_record}
        for name, t in trainers.items()}}
    steps = s["outer_every"] * s["cycles"]
    for name, t in trainers.items():  # compiling happens here, untimed
        t0 = time.perf_counter()
        for _ in range(s["outer_every"] * s["warmup_cycles"]):
            t.train_step()
        common.log(f"[{NAME}] {name}: warm-up {time.perf_counter() - t0:.0f}s "
                   f"({t.compile_record['line']})")
    seconds: dict[str, list[float]] = {n: [] for n in trainers}
    peaks = []
    for r in range(s["rounds"]):
        peaks.append(max(common.matmul_peak(
            device, PEAK_SHAPES[:1] if args.quick else PEAK_SHAPES).values()))
        names = list(trainers)
        for name in names[r % 2:] + names[:r % 2]:
            wall, _ = common.timed(lambda t=trainers[name]: [t.train_step()
                                                              for _ in range(steps)], device)
            seconds[name].append(wall / steps)
        common.log(f"[{NAME}] round {r}: " + ", ".join(
            f"{n} {v[-1]:.3f}s/step" for n, v in seconds.items()))
    tokens = s["batch"] * s["context"]
    peak = max(peaks)
    out = {}
    for name, t in trainers.items():
        step = common.summary(seconds[name])["median"]
        flops = sum(st.config.flops_per_token() for st in t.students) * tokens
        out[name] = {"step_seconds": common.summary(seconds[name]),
                     "tokens_per_s": tokens / step, "model_flops_per_s": flops / step,
                     "efficiency": flops / step / peak}
    result["configurations"] = out
    result["matmul_peak_flops"] = peak
    result["matmul_probes"] = peaks
    speedup = out["after"]["tokens_per_s"] / out["before"]["tokens_per_s"]
    result["ratios"] = {"after_over_before_tokens_per_s": speedup}
    result["targets"] = {
        "speedup": common.target(speedup, TARGET_SPEEDUP, at_most=False),
        "after_efficiency": common.target(out["after"]["efficiency"], TARGET_EFFICIENCY,
                                          at_most=False)}
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    c, conf = result["configurations"], result["settings"]["configurations"]
    lines = [f"compare_step ({result['machine']['device']}"
             f"{', QUICK' if result['quick'] else ''}): fp32 matmul peak "
             f"{result['matmul_peak_flops'] / 1e9:.0f} GFLOP/s"]
    for name in ("before", "after"):
        shapes = ", ".join(f"{n}x{d}" for n, d, _ in conf[name]["shapes"])
        lines.append(f"  {name:6s} {shapes:28s} {c[name]['tokens_per_s']:7.0f} tok/s  "
                     f"{c[name]['model_flops_per_s'] / 1e9:5.1f} GFLOP/s "
                     f"({c[name]['efficiency']:.2f} of peak)")
    t = result["targets"]
    lines.append(f"  speed-up {t['speedup']['value']:.2f}x (target >= {TARGET_SPEEDUP}), "
                 f"after at {t['after_efficiency']['value']:.2f} of peak "
                 f"(target >= {TARGET_EFFICIENCY})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
