"""How fast each student shape trains on a device: ``python -m bench.shape_speed``.

For a grid of shapes (widths × layers, head size 32 and 64 where both fit) it times one
training step of a single student through :meth:`minidml.trainer.Trainer.train_step` (mode
``single``, the loss from hidden states, fp32, eager) at batch 32 × 128 and vocabulary 8,192,
and divides the model FLOP/s (:meth:`~minidml.model.StudentConfig.flops_per_token` times the
tokens of a step, over the step time) by the fp32 matmul peak measured in the same run (the
best of ``torch.mm`` at 1024³ and the shapes the students use). That ratio, the step's
efficiency, is what :mod:`minidml.throughput` tabulates by width and what the student search
uses to predict tokens/s and to prefer fast shapes.

The shapes are timed in interleaved rounds (each round times every shape once), so a machine
that gets busier or quieter affects them alike; the median over rounds is reported.
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
from minidml.search import heads_for
from minidml.trainer import Trainer

NAME = "shape_speed"
FULL = dict(vocab=8192, batch=32, context=128, rounds=3, max_step_tflop=0.25,
            widths=(64, 96, 128, 192, 256, 384, 512), layers=(1, 2, 4, 8, 16),
            head_dims=(32, 64))
QUICK = dict(vocab=512, batch=4, context=32, rounds=1, max_step_tflop=0.01,
             widths=(64, 128), layers=(1, 2), head_dims=(32, 64))
PEAK_SHAPES = ((1024, 1024, 1024), (4096, 256, 1024), (4096, 256, 8192))


def shapes(s: dict) -> list[Shape]:
    """Every (layers, width, head size) of the grid whose step costs at most
    ``max_step_tflop``; head sizes that leave fewer than two heads are skipped."""
    out = []
    for width in s["widths"]:
        for head in s["head_dims"]:
            if width % head or width // head < 2:
                continue
            for n_layers in s["layers"]:
                shape = Shape(n_layers, width, width // head)
                cfg = student_configs(TrainConfig(students=(shape,), context=s["context"]),
                                      s["vocab"])[0]
                if cfg.flops_per_token() * s["batch"] * s["context"] <= s["max_step_tflop"] * 1e12:
                    out.append(shape)
    return out


def trainer_for(shape: Shape, s: dict, device: torch.device) -> Trainer:
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, s["vocab"], size=1 << 20, dtype=np.uint16)
    batches = Batches(tokens, s["context"], s["batch"])
    cfg = TrainConfig(students=(shape,), mode="single", context=s["context"],
                      batch_size=s["batch"], steps=1_000_000, device=str(device),
                      precision="fp32", compile="off")
    torch.manual_seed(0)
    return Trainer(cfg, [Student(c) for c in student_configs(cfg, s["vocab"])], batches)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    result["settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
    grid = shapes(s)
    common.log(f"[{NAME}] {len(grid)} shapes, batch {s['batch']}x{s['context']}, "
               f"vocabulary {s['vocab']}")
    trainers = {sh: trainer_for(sh, s, device) for sh in grid}
    for t in trainers.values():
        t.train_step()  # warm-up
    peaks: list[dict[str, float]] = []
    times: dict[Shape, list[float]] = {sh: [] for sh in grid}
    for r in range(s["rounds"]):
        peaks.append(common.matmul_peak(device, PEAK_SHAPES[:1] if args.quick
                                        else PEAK_SHAPES))
        for sh in grid:
            times[sh].append(common.timed(trainers[sh].train_step, device)[0])
        common.log(f"[{NAME}] round {r} done ({time.perf_counter() - t_start:.0f}s)")
    peak = max(v for p in peaks for v in p.values())
    tokens = s["batch"] * s["context"]
    rows = []
    for sh in grid:
        cfg = trainers[sh].students[0].config
        seconds = common.summary(times[sh])["median"]
        rate = cfg.flops_per_token() * tokens / seconds
        rows.append({"n_layers": sh.n_layers, "d_model": sh.d_model, "n_heads": sh.n_heads,
                     "head_dim": sh.d_model // sh.n_heads, "n_params": cfg.n_params,
                     "aspect": sh.d_model / sh.n_layers, "step_seconds": seconds,
                     "tokens_per_s": tokens / seconds, "flops_per_s": rate,
                     "efficiency": rate / peak})
    result["matmul_peak_flops"] = peak
    result["matmul_probes"] = peaks
    result["shapes"] = rows
    result["default_head"] = {str(w): w // heads_for(w) for w in s["widths"]}
    common.finish(result, t_start)
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


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
