"""Fused mutual loss vs the naive pairwise loss: forward+backward time and peak extra memory.

Both compute, for K students, each student's cross-entropy and Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i)
(peers detached), from K logits tensors [N, V], and backpropagate into the logits.

* naive: ``F.cross_entropy`` per student + :func:`minidml.losses.mutual_kl_reference`
  (K(K−1) pairwise KL terms, everything kept for autograd);
* fused: :func:`minidml.losses.fused_mutual_losses` (mixture identity, row chunks, softmaxes
  recomputed in backward, nothing of size K×N×V kept).

Time: median over alternating rounds in this process. Peak extra memory: each variant runs in
a fresh subprocess; extra = peak RSS (or CUDA peak allocation) minus memory once the inputs
exist. Targets (CPU, K=4, N=4096, V=16384, fp32): fused ≥ 5× faster, extra ≤ 1/K of naive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from bench import common
from minidml.losses import fused_mutual_losses, mutual_kl_reference

NAME = "mutual_kl"
FULL = dict(k=4, n=4096, v=16384, rounds=5)
QUICK = dict(k=4, n=256, v=1024, rounds=2)


def make_inputs(k: int, n: int, v: int, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = [torch.randn(n, v, generator=g).to(device).requires_grad_() for _ in range(k)]
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    omega = torch.full((k,), 1.0 / k, device=device)
    return logits, targets, omega


def naive(logits, targets, omega) -> None:
    ce = torch.stack([F.cross_entropy(z, targets) for z in logits])
    kl = mutual_kl_reference(logits, omega, 1.0)
    (0.5 * ce + 0.5 * kl).sum().backward()


def fused(logits, targets, omega) -> None:
    ce, kl = fused_mutual_losses(logits, targets, omega, 1.0)
    (0.5 * ce + 0.5 * kl).sum().backward()


VARIANTS = {"naive": naive, "fused": fused}


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(variant: str, k: int, n: int, v: int, device_name: str) -> dict[str, int]:
    """One forward+backward in this (fresh) process; memory beyond the inputs and gradients."""
    device = torch.device(device_name)
    logits, targets, omega = make_inputs(k, n, v, device)
    for z in logits:  # gradients exist in both variants: count them as inputs
        z.grad = torch.zeros_like(z)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        VARIANTS[variant](logits, targets, omega)
        torch.cuda.synchronize()
        return {"extra_bytes": torch.cuda.max_memory_allocated() - base}
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to now
        f.write("5")
    VARIANTS[variant](logits, targets, omega)
    return {"extra_bytes": _status("VmHWM") - base}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    result["settings"] = {**s, "dtype": "float32", "temperature": 1.0, "alpha": 0.5}
    logits, targets, omega = make_inputs(s["k"], s["n"], s["v"], device)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fn in VARIANTS.values():  # warm-up
        common.timed(lambda fn=fn: fn(logits, targets, omega), device)
    for r in range(s["rounds"]):
        order = list(VARIANTS.items())[r % 2:] + list(VARIANTS.items())[:r % 2]
        for name, fn in order:
            for z in logits:
                z.grad = None
            wall, _ = common.timed(lambda fn=fn: fn(logits, targets, omega), device)
            times[name].append(wall)
            common.log(f"[{NAME}] round {r} {name}: {wall:.3f}s")
    memory = {}
    for name in VARIANTS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.mutual_kl", "--child", name, "--k", str(s["k"]),
             "--n", str(s["n"]), "--v", str(s["v"]), "--device", str(device)],
            capture_output=True, text=True, check=True, cwd=common.REPO_ROOT)
        memory[name] = json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]
    med = {name: common.summary(t)["median"] for name, t in times.items()}
    logits_bytes = s["k"] * s["n"] * s["v"] * 4
    result["time_seconds"] = {name: common.summary(t) for name, t in times.items()}
    result["extra_memory_bytes"] = memory
    result["ratios"] = {
        "speedup_fused_over_naive": med["naive"] / med["fused"],
        "memory_fused_over_naive": memory["fused"] / max(memory["naive"], 1),
        "naive_extra_in_logits_tensors": memory["naive"] / logits_bytes,
        "fused_extra_in_logits_tensors": memory["fused"] / logits_bytes,
    }
    result["targets"] = {
        "speedup": {"target": 5.0, "value": result["ratios"]["speedup_fused_over_naive"]},
        "memory": {"target": 1 / s["k"], "value": result["ratios"]["memory_fused_over_naive"]},
    }
    for t in result["targets"].values():
        t["met"] = (t["value"] >= t["target"]) if t["target"] > 1 else (t["value"] <= t["target"])
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    r, s = result["ratios"], result["settings"]
    t = result["time_seconds"]
    return "\n".join([
        f"mutual_kl ({result['machine']['device']}, K={s['k']} N={s['n']} V={s['v']} fp32"
        f"{', QUICK' if result['quick'] else ''})",
        f"  fwd+bwd median: naive {t['naive']['median']:.3f}s, fused {t['fused']['median']:.3f}s"
        f" -> {r['speedup_fused_over_naive']:.2f}x faster (target >= 5)",
        f"  peak extra memory: naive {result['extra_memory_bytes']['naive'] / 2**20:.0f} MiB, "
        f"fused {result['extra_memory_bytes']['fused'] / 2**20:.0f} MiB -> ratio "
        f"{r['memory_fused_over_naive']:.3f} (target <= {1 / s['k']:.3f})",
    ])


def _child_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    for opt in ("--k", "--n", "--v"):
        parser.add_argument(opt, type=int, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(
        NAME, __doc__, run, report, argv, _child_options,
        child=lambda a: child(a.child, a.k, a.n, a.v, a.device))

if __name__ == "__main__":
    sys.exit(main())
