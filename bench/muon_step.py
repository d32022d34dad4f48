"""Muon's step over one student's trunk matrices, the matrices of one shape orthogonalised
as one batch (``minidml.muon.Muon``, as the trainer steps), against the same matrices each
stepped alone (one ``Muon`` per matrix: the per-matrix loop the batching replaced), and
AdamW's step over the same matrices for scale. The same random gradients throughout;
interleaved in rounds (``Timer.blocked_autorange``). The Newton–Schulz iteration runs in
fp32 on a CPU and bf16 on a GPU, as the trainer's ``precision auto`` would choose on a CPU
without bf16 units and on a GPU. Targets: batched ÷ per-matrix ≤ 1.1 at every shape (not
slower: 0.1 is this measurement's spread on the 2-core CPU at 4 × 256, where the two are
equal), and ≤ 0.8 at the smallest (2 × 64), where one matrix's products are too small to
use the cores and the per-matrix loop's many calls cost most.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench import common

NAME = "muon_step"
# the CPU hour's student (4 × 256) and a small one (the demo's scale), where the per-matrix
# loop's many small products cost most
FULL = dict(shapes=[(4, 256, 4), (4, 128, 4), (2, 64, 2)], vocab=8192, rounds=4,
            min_run_time=1.0)
QUICK = dict(shapes=[(2, 32, 2)], vocab=512, rounds=1, min_run_time=0.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import TrainConfig
    from minidml.model import Student, StudentConfig
    from minidml.muon import Muon
    from minidml.schedule import make_optimizer

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    precision = "bf16" if device.type == "cuda" else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    per_shape, tables, targets = {}, [], {}
    for layers, width, heads in s["shapes"]:
        label = f"{layers}x{width}"
        torch.manual_seed(0)
        student = Student(StudentConfig(vocab_size=s["vocab"], n_layers=layers, d_model=width,
                                        n_heads=heads, context=128)).to(device)
        cfg = TrainConfig(optimizer="muon")
        matrices = make_optimizer(student, cfg, precision).parts["muon"].param_groups[0]["params"]
        for p in matrices:
            p.grad = torch.randn_like(p)
        batched = Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, dtype=dtype)
        alone = [Muon([p], lr=cfg.lr, weight_decay=cfg.weight_decay, dtype=dtype)
                 for p in matrices]
        adamw = torch.optim.AdamW(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def per_matrix(alone=alone) -> None:
            for opt in alone:
                opt.step()

        measured = common.interleave(
            {f"batched {label}": batched.step, f"per-matrix {label}": per_matrix,
             f"adamw {label}": adamw.step}, s["rounds"], NAME, min_run_time=s["min_run_time"])
        sec = {n.split()[0]: m.median for n, m in measured.items()}
        shapes = sorted({tuple(sorted(p.shape)) for p in matrices})
        per_shape[label] = {
            "matrices": len(matrices), "distinct_shapes": len(shapes),
            "step_seconds": {n: common.stats(m) for n, m in measured.items()},
            "batched_over_per_matrix": sec["batched"] / sec["per-matrix"],
            "batched_over_adamw": sec["batched"] / sec["adamw"]}
        targets[f"batched_not_slower_{label}"] = common.target(
            per_shape[label]["batched_over_per_matrix"], 1.1, True, not args.quick)
        tables.append(common.table(measured))
    smallest = f"{s['shapes'][-1][0]}x{s['shapes'][-1][1]}"
    targets[f"batched_faster_{smallest}"] = common.target(
        per_shape[smallest]["batched_over_per_matrix"], 0.8, True, not args.quick)
    result.update(settings={**s, "newton_schulz_dtype": str(dtype).removeprefix("torch.")},
                  shapes=per_shape, targets=targets, table="\n".join(tables))
    return result


def report(result: dict[str, Any]) -> str:
    lines = [common.heading(result),
             result["table"]]
    for label, r in result["shapes"].items():
        lines.append(f"  {label}: {r['matrices']} matrices of {r['distinct_shapes']} shapes; "
                     f"batched / per-matrix {r['batched_over_per_matrix']:.3f}, "
                     f"batched / AdamW {r['batched_over_adamw']:.2f}")
    lines.append(common.targets_line(result["targets"]))
    return "\n".join(lines)
