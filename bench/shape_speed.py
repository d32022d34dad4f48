"""How fast each student shape trains: the table behind :mod:`minidml.throughput`.

For widths × depths (head sizes 32 and 64 where both leave two heads or more; steps above
``max_step_tflop`` skipped) it times one student's ``Trainer.train_step`` (mode ``single``,
fp32, eager) at batch 32 × 128 and vocabulary 8,192, in rounds that interleave every shape
with fp32 ``torch.mm`` probes. A shape's *efficiency* is its model FLOP/s (median step)
over the run's matmul peak: ``minidml.throughput.EFFICIENCY`` holds its medians over 1-8
layers by width (``tests/test_throughput.py`` checks them against this file), which the
student search's speed rule and ``minidml search``'s tokens/s come from.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import common

NAME = "shape_speed"
FULL = dict(vocab=8192, batch=32, context=128, rounds=2, min_run_time=0.5, max_step_tflop=0.25,
            widths=[64, 96, 128, 192, 256, 384, 512], layers=[1, 2, 4, 8, 16], head_dims=[32, 64])
QUICK = dict(vocab=512, batch=4, context=32, rounds=1, min_run_time=0.0, max_step_tflop=0.01,
             widths=[64, 128], layers=[1, 2], head_dims=[32, 64])
PEAK_SHAPES = ((1024, 1024, 1024), (4096, 256, 1024), (4096, 256, 8192))


def grid(s: dict[str, Any]) -> list[Any]:
    from minidml import Shape
    from minidml.model import StudentConfig

    out = []
    for width in s["widths"]:
        for head in s["head_dims"]:
            if width % head or width // head < 2:
                continue
            for n_layers in s["layers"]:
                shape = Shape(n_layers, width, width // head)
                cfg = StudentConfig.from_shape(shape, s["vocab"], s["context"])
                if cfg.flops_per_token() * s["batch"] * s["context"] <= s["max_step_tflop"] * 1e12:
                    out.append(shape)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml.search import heads_for

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    shapes = grid(s)
    common.log(f"[{NAME}] {len(shapes)} shapes, batch {s['batch']}x{s['context']}")
    trainers = {f"{sh.n_layers}x{sh.d_model}/{sh.n_heads}": common.trainer(
        [sh], s["vocab"], s["context"], s["batch"], device, mode="single", precision="fp32",
        compile="off") for sh in shapes}
    measured = common.interleave(
        {n: tr.train_step for n, tr in trainers.items()}, s["rounds"], NAME,
        min_run_time=s["min_run_time"],
        probes=common.matmul_probes(device, PEAK_SHAPES[:1] if args.quick else PEAK_SHAPES))
    peak = common.matmul_peak(measured)
    tokens = s["batch"] * s["context"]
    rows = []
    for name, tr in trainers.items():
        cfg, seconds = tr.students[0].config, measured[name].median
        rate = cfg.flops_per_token() * tokens / seconds
        rows.append({"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                     "head_dim": cfg.d_model // cfg.n_heads, "n_params": cfg.n_params,
                     "step_seconds": seconds, "timing": common.stats(measured[name]),
                     "tokens_per_s": tokens / seconds, "flops_per_s": rate,
                     "efficiency": rate / peak})
    result.update(settings=s, matmul_peak_flops=peak, shapes=rows,
                  default_head={str(w): w // heads_for(w) for w in s["widths"]})
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"shape_speed ({result['machine']['device']}"
             f"{', QUICK' if result['quick'] else ''}): fp32 matmul peak "
             f"{result['matmul_peak_flops'] / 1e9:.0f} GFLOP/s",
             "  layers  width  head  params      tok/s   GFLOP/s  efficiency"]
    for r in result["shapes"]:
        lines.append(f"  {r['n_layers']:6d}  {r['d_model']:5d}  {r['head_dim']:4d}  "
                     f"{r['n_params'] / 1e6:6.2f}M  {r['tokens_per_s']:9.0f}  "
                     f"{r['flops_per_s'] / 1e9:8.1f}  {r['efficiency']:10.2f}")
    return "\n".join(lines)
