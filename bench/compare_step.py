"""Training throughput: the step ``minidml compare --budget 4M --students 4 --vocab-size 8192
--context 128 --batch-size 32`` trains, against the step it replaced.

* ``before`` (the baseline): the shapes the search picked before it knew speed (11×96,
  5×96, 9×64, 5×64) in the step with materialised logits (``common.logits_step``: logits,
  ``minidml.losses.mutual_loss``, backward, the ω step from those logits, AdamW; eager fp32);
* ``after``: the shapes :func:`minidml.search.plan` picks now, in ``Trainer.train_step`` with
  the defaults (mode ``wml`` with its ω steps, the loss from hidden states, ``compile="auto"``
  sized for a comparison's hours, ``precision="auto"``).

Each measurement is ``outer_every`` consecutive steps (so each holds one ω step),
interleaved in rounds with fp32 ``torch.mm`` probes. Targets: after ÷ before tokens/s ≥ 2,
and the ``after`` step's model FLOP/s ≥ 0.6 of the run's fp32 matmul peak.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import common

NAME = "compare_step"
FULL = dict(vocab=8192, batch=32, context=128, budget=4_000_000, k=4, rounds=4, outer_every=10)
QUICK = dict(vocab=512, batch=4, context=32, budget=600_000, k=4, rounds=2, outer_every=2)
PEAK_SHAPES = ((1024, 1024, 1024), (4096, 256, 1024), (4096, 256, 8192))
TARGET_SPEEDUP, TARGET_EFFICIENCY = 2.0, 0.6


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import Shape
    from minidml.config import default_alpha
    from minidml.search import plan

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    size = (s["vocab"], s["context"], s["batch"])
    before_shapes = ((Shape(11, 96, 3), Shape(5, 96, 3), Shape(9, 64, 2), Shape(5, 64, 2))
                     if not args.quick else tuple(Shape(n, 64, 2) for n in (4, 3, 2, 1)))
    before, before_students = common.logits_step(before_shapes, *size, device,
                                                 default_alpha("wml"), s["outer_every"])
    # a quick smoke run neither waits for inductor nor depends on precision auto's choice
    after = common.trainer([c.shape for c in plan(s["budget"], s["k"], s["vocab"])], *size,
                           device, outer_every=s["outer_every"],
                           **({"compile": "off", "precision": "fp32"} if args.quick else {}))
    for _ in range(s["outer_every"]):  # warm-up, compiling included
        before()
        after.train_step()
    common.log(f"[{NAME}] after: {after.compile_record['line']}")
    steps = s["outer_every"]
    measured = common.interleave(
        {"before": before, "after": after.train_step}, s["rounds"], NAME, number=steps,
        probes=common.matmul_probes(device, PEAK_SHAPES[:1] if args.quick else PEAK_SHAPES))
    peak = common.matmul_peak(measured)
    tokens = s["batch"] * s["context"]
    out = {}
    for name, students in (("before", before_students), ("after", after.students)):
        step = measured[name].median
        flops = sum(st.config.flops_per_token(s["context"]) for st in students) * tokens
        out[name] = {"shapes": [[st.config.n_layers, st.config.d_model, st.config.n_heads]
                                for st in students],
                     "n_params": [st.config.n_params for st in students],
                     "step_seconds": common.stats(measured[name]),
                     "tokens_per_s": tokens / step, "model_flops_per_s": flops / step,
                     "efficiency": flops / step / peak}
    out["after"].update(compile=after.compile_record, precision=after.precision_record)
    speedup = out["after"]["tokens_per_s"] / out["before"]["tokens_per_s"]
    applies = not args.quick
    result.update(
        settings={**s, "before": "common.logits_step: logits, mutual_loss, ω step, AdamW",
                  "after": "Trainer.train_step, defaults"},
        configurations=out, matmul_peak_flops=peak,
        matmul_probes={n: common.stats(m) for n, m in measured.items() if n.startswith("mm ")},
        ratios={"after_over_before_tokens_per_s": speedup},
        targets={"speedup": common.target(speedup, TARGET_SPEEDUP, False, applies),
                 "after_efficiency": common.target(out["after"]["efficiency"],
                                                   TARGET_EFFICIENCY, False, applies)},
        table=common.table({n: measured[n] for n in ("before", "after")}))
    return result


def report(result: dict[str, Any]) -> str:
    c = result["configurations"]
    lines = [f"compare_step ({result['machine']['device']}"
             f"{', QUICK' if result['quick'] else ''}): fp32 matmul peak "
             f"{result['matmul_peak_flops'] / 1e9:.0f} GFLOP/s", result["table"]]
    for name in ("before", "after"):
        shapes = ", ".join(f"{n}x{d}" for n, d, _ in c[name]["shapes"])
        lines.append(f"  {name:6s} {shapes:28s} {c[name]['tokens_per_s']:7.0f} tok/s  "
                     f"{c[name]['model_flops_per_s'] / 1e9:5.1f} GFLOP/s "
                     f"({c[name]['efficiency']:.2f} of peak)")
    return "\n".join([*lines, common.targets_line(result["targets"])])
