"""The mutual loss of K students from hidden states [N, d] and tied heads [V, d], forward and
backward into both:

* ``reference`` (the baseline): the logits h·Wᵀ materialised, then
  :func:`minidml.losses.mutual_loss` (``F.cross_entropy`` per student and the pairwise
  ``mutual_kl_reference``);
* ``hidden``: :func:`minidml.fused_linear.linear_mutual_loss`, the loss training uses (row
  chunks, no K×N×V tensor).

Time: ``Timer.blocked_autorange`` in interleaved rounds. Memory: the peak beyond the inputs
and their gradients, each variant in a fresh process (peak RSS on the CPU, peak allocation on
CUDA). Targets (K = 4, N = 4,096, V = 16,384, d = 256, fp32): hidden ≥ 3× faster than the
reference, with ≤ 1/K of its extra memory.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench import common

NAME = "mutual_kl"
FULL = dict(k=4, n=4096, v=16384, d=256, rounds=3, alpha=0.5)
QUICK = dict(k=4, n=256, v=1024, d=64, rounds=2, alpha=0.5)


def setup(s: dict[str, Any], device: torch.device):
    """The variants' calls, on the same leaves (hidden states, heads), targets and ω."""
    from minidml.fused_linear import linear_mutual_loss
    from minidml.losses import mutual_loss

    k, n, v, d = s["k"], s["n"], s["v"], s["d"]
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(n, d, generator=g).to(device).requires_grad_() for _ in range(k)]
    ws = [(torch.randn(v, d, generator=g) / d**0.5).to(device).requires_grad_()
          for _ in range(k)]
    y = torch.randint(0, v, (n,), generator=g).to(device)
    omega = torch.full((k,), 1.0 / k, device=device)
    leaves = hs + ws

    def reference() -> None:
        logits = [h @ w.t() for h, w in zip(hs, ws, strict=True)]
        mutual_loss(logits, y, omega, s["alpha"]).total.backward()

    def hidden() -> None:
        linear_mutual_loss(hs, ws, y, omega, s["alpha"]).total.backward()

    return {"reference": reference, "hidden": hidden}, leaves


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One call of one variant in this fresh process: memory beyond inputs and gradients."""
    device = torch.device(spec["device"])
    variants, leaves = setup(spec["settings"], device)
    for z in leaves:
        z.grad = torch.zeros_like(z)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        variants[spec["variant"]]()
        torch.cuda.synchronize(device)
        return {"extra_bytes": torch.cuda.max_memory_allocated(device) - base}
    base = common.proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # the high-water mark starts again here
        f.write("5")
    variants[spec["variant"]]()
    return {"extra_bytes": common.proc_status() - base}


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    variants, leaves = setup(s, device)

    def fresh(fn):  # each call starts without gradients, as a training step does
        def call() -> None:
            for z in leaves:
                z.grad = None
            fn()
        return call

    measured = common.interleave({n: fresh(fn) for n, fn in variants.items()}, s["rounds"],
                                 NAME)
    memory = {n: common.run_child("bench.mutual_kl", {"variant": n, "settings": s,
                                                      "device": str(device)})["extra_bytes"]
              for n in variants}
    speedup = measured["reference"].median / measured["hidden"].median
    mem_ratio = memory["hidden"] / max(memory["reference"], 1)
    logits_bytes = s["k"] * s["n"] * s["v"] * 4
    applies = not args.quick
    result.update(
        settings={**s, "dtype": "float32", "temperature": 1.0},
        time_seconds={n: common.stats(m) for n, m in measured.items()},
        extra_memory_bytes=memory,
        ratios={"speedup_hidden_over_reference": speedup,
                "memory_hidden_over_reference": mem_ratio,
                **{f"{n}_extra_in_logits_tensors": b / logits_bytes for n, b in memory.items()}},
        targets={"speedup": common.target(speedup, 3.0, False, applies),
                 "memory": common.target(mem_ratio, 1 / s["k"], True, applies)},
        table=common.table(measured))
    return result


def report(result: dict[str, Any]) -> str:
    s, mem = result["settings"], result["extra_memory_bytes"]
    return "\n".join([
        f"mutual_kl ({result['machine']['device']}, K={s['k']} N={s['n']} V={s['v']} "
        f"d={s['d']} fp32{', QUICK' if result['quick'] else ''})", result["table"],
        "  extra memory: " + ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in mem.items()),
        common.targets_line(result["targets"])])


if __name__ == "__main__":
    common.child_main(child)
