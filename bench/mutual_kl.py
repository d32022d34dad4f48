"""Mutual losses compared: forward+backward time and peak extra memory.

Each computes, for K students, each student's cross-entropy and Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i)
(peers detached) and backpropagates. From K logits tensors [N, V]:

* naive: ``F.cross_entropy`` per student + :func:`minidml.losses.mutual_kl_reference`
  (K(K−1) pairwise KL terms, everything kept for autograd);
* fused: :func:`minidml.losses.fused_mutual_losses` (mixture identity, row chunks, softmaxes
  recomputed in backward, nothing of size K×N×V kept beyond the logits themselves).

From K hidden-state tensors [N, d] and tied heads [V, d] (what a training step has), the
gradients reaching both:

* naive_head / fused_head: the logits h·Wᵀ, then naive / fused, as a step without the fused
  head computes them;
* hidden: :func:`minidml.fused_linear.linear_mutual_loss` (logits, losses and gradients
  chunk by chunk: no K×N×V tensor at all).

Time: median over alternating rounds in this process. Peak extra memory: each variant runs in
a fresh subprocess; extra = peak RSS (or CUDA peak allocation) minus memory once the inputs
exist. Targets (CPU, K=4, N=4096, V=16384, d=256, fp32): fused ≥ 5× faster than naive and
its extra ≤ 1/K of naive's; hidden at least as fast as fused_head, with extra memory ≤ 1/8 of
fused_head's.
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
from minidml.fused_linear import linear_mutual_loss
from minidml.losses import fused_mutual_losses, mutual_kl_reference

NAME = "mutual_kl"
FULL = dict(k=4, n=4096, v=16384, d=256, rounds=5)
QUICK = dict(k=4, n=256, v=1024, d=64, rounds=2)


def make_inputs(k: int, n: int, v: int, d: int, device: torch.device, hidden: bool):
    """(logits, None) or (hidden states, heads), targets and ω; leaves that need gradients."""
    g = torch.Generator(device="cpu").manual_seed(0)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    omega = torch.full((k,), 1.0 / k, device=device)
    if not hidden:
        logits = [torch.randn(n, v, generator=g).to(device).requires_grad_() for _ in range(k)]
        return (logits, None), targets, omega
    hs = [torch.randn(n, d, generator=g).to(device).requires_grad_() for _ in range(k)]
    ws = [(torch.randn(v, d, generator=g) / d**0.5).to(device).requires_grad_()
          for _ in range(k)]
    return (hs, ws), targets, omega


def _naive(logits, targets, omega) -> None:
    ce = torch.stack([F.cross_entropy(z, targets) for z in logits])
    kl = mutual_kl_reference(logits, omega, 1.0)
    (0.5 * ce + 0.5 * kl).sum().backward()


def _fused(logits, targets, omega) -> None:
    ce, kl = fused_mutual_losses(logits, targets, omega, 1.0)
    (0.5 * ce + 0.5 * kl).sum().backward()


def _head(loss):
    def run(inputs, targets, omega) -> None:
        hs, ws = inputs
        loss([h @ w.t() for h, w in zip(hs, ws, strict=True)], targets, omega)
    return run


def _hidden(inputs, targets, omega) -> None:
    hs, ws = inputs
    linear_mutual_loss(hs, ws, targets, omega, 0.5, 1.0).total.backward()


# name -> (function, whether it starts from hidden states)
VARIANTS = {"naive": (lambda i, t, o: _naive(i[0], t, o), False),
            "fused": (lambda i, t, o: _fused(i[0], t, o), False),
            "naive_head": (_head(_naive), True), "fused_head": (_head(_fused), True),
            "hidden": (_hidden, True)}


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _leaves(inputs) -> list[torch.Tensor]:
    return [t for group in inputs if group is not None for t in group]


def child(variant: str, k: int, n: int, v: int, d: int, device_name: str) -> dict[str, int]:
    """One forward+backward in this (fresh) process; memory beyond the inputs and gradients."""
    device = torch.device(device_name)
    fn, hidden = VARIANTS[variant]
    inputs, targets, omega = make_inputs(k, n, v, d, device, hidden)
    for z in _leaves(inputs):  # gradients exist in every variant: count them as inputs
        z.grad = torch.zeros_like(z)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(inputs, targets, omega)
        torch.cuda.synchronize()
        return {"extra_bytes": torch.cuda.max_memory_allocated() - base}
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to now
        f.write("5")
    fn(inputs, targets, omega)
    return {"extra_bytes": _status("VmHWM") - base}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    result["settings"] = {**s, "dtype": "float32", "temperature": 1.0, "alpha": 0.5}
    shapes = (s["k"], s["n"], s["v"], s["d"], device)
    inputs = {h: make_inputs(*shapes, hidden=h) for h in (False, True)}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}

    def call(name: str) -> float:
        fn, hidden = VARIANTS[name]
        x, targets, omega = inputs[hidden]
        for z in _leaves(x):
            z.grad = None
        return common.timed(lambda: fn(x, targets, omega), device)[0]

    for name in VARIANTS:  # warm-up
        call(name)
    names = list(VARIANTS)
    for r in range(s["rounds"]):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(call(name))
            common.log(f"[{NAME}] round {r} {name}: {times[name][-1]:.3f}s")
    memory = {}
    for name in VARIANTS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.mutual_kl", "--child", name, "--k", str(s["k"]),
             "--n", str(s["n"]), "--v", str(s["v"]), "--d", str(s["d"]),
             "--device", str(device)],
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
        "speedup_hidden_over_fused_head": med["fused_head"] / med["hidden"],
        "speedup_hidden_over_naive_head": med["naive_head"] / med["hidden"],
        "memory_hidden_over_fused_head": memory["hidden"] / max(memory["fused_head"], 1),
        "memory_hidden_over_naive_head": memory["hidden"] / max(memory["naive_head"], 1),
        "hidden_extra_in_logits_tensors": memory["hidden"] / logits_bytes,
    }
    ratios = result["ratios"]
    result["targets"] = {
        "speedup": common.target(ratios["speedup_fused_over_naive"], 5.0, False),
        "memory": common.target(ratios["memory_fused_over_naive"], 1 / s["k"], True),
        "hidden_speed": common.target(ratios["speedup_hidden_over_fused_head"], 1.0, False),
        "hidden_memory": common.target(ratios["memory_hidden_over_fused_head"], 1 / 8, True),
    }
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
        f"  from hidden states (d={s['d']}): naive_head {t['naive_head']['median']:.3f}s, "
        f"fused_head {t['fused_head']['median']:.3f}s, hidden {t['hidden']['median']:.3f}s -> "
        f"{r['speedup_hidden_over_fused_head']:.2f}x fused_head (target >= 1)",
        f"  peak extra memory: naive_head {result['extra_memory_bytes']['naive_head'] / 2**20:.0f}"
        f" MiB, fused_head {result['extra_memory_bytes']['fused_head'] / 2**20:.0f} MiB, hidden "
        f"{result['extra_memory_bytes']['hidden'] / 2**20:.0f} MiB -> ratio "
        f"{r['memory_hidden_over_fused_head']:.3f} (target <= 0.125)",
    ])


def _child_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    for opt in ("--k", "--n", "--v", "--d"):
        parser.add_argument(opt, type=int, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(
        NAME, __doc__, run, report, argv, _child_options,
        child=lambda a: child(a.child, a.k, a.n, a.v, a.d, a.device))

if __name__ == "__main__":
    sys.exit(main())
