"""Training throughput and MFU of the minidml trainer against a plain eager loop.

Configurations, all on the same batches of random tokens (no tokenizer needed):

* ``a_plain``  -- the baseline: one student, a plain eager loop (forward, cross-entropy,
  backward, AdamW step);
* ``b_dml``    -- ``Trainer.train_step`` with K students, mode ``dml`` (mutual loss on), fp32;
* ``b0_ce``    -- the same K students with mode ``single`` (cross-entropy only): the
  difference to ``b_dml`` is what the mutual KL costs at the step level;
* ``c_dml_bf16`` -- ``b_dml`` under bf16 autocast (``precision="bf16"``).

MFU is the model FLOP/s (``StudentConfig.flops_per_token`` summed over the students, times
the tokens of a step, over the step time) divided by the FLOP/s of a plain fp32 ``torch.mm``
measured in the same run on the same device (the best of the matmul shapes in
``settings.matmul_shapes`` over all probes). The configurations and the matmul probes are
interleaved in rounds, so a machine that gets busier or quieter during the run affects all
of them alike. The step of ``b_dml`` is then broken down with timers (hooks on the real
``Trainer.train_step``: data, each student's trunk, loss forward, loss backward, students'
backward, gradient clipping, optimiser steps; see ``bench/_step_profile.py``) and with
``torch.profiler``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import common
from bench._step_profile import profile_breakdown, torch_profile

NAME = "train_speed"
TARGET_MFU_B = 0.70  # the project's target for b_dml, fp32 on the CPU
QUIET = 0.1  # a step is "quiet" when other processes used < 10% of the CPUs meanwhile


@dataclass(frozen=True)
class Settings:
    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int
    context: int
    batch_size: int
    n_students: int
    warmup_steps: int  # per configuration, before the timed rounds
    rounds: int  # timed rounds; each runs every configuration
    steps_per_round: int
    profile_steps: int  # instrumented steps of b_dml and b0_ce (after one untimed step)
    loss_reps: int  # repeats of each loss in the loss micro-benchmark
    matmul_reps: int = 3  # best of this many, per shape and probe
    matmul_seconds: float = 0.1  # minimum duration of one repeat

    @property
    def timed_steps(self) -> int:
        return self.rounds * self.steps_per_round


FULL = Settings(vocab_size=8192, n_layers=4, d_model=256, n_heads=4, context=256, batch_size=16,
                n_students=4, warmup_steps=2, rounds=5, steps_per_round=2, profile_steps=3,
                loss_reps=2)
QUICK = Settings(vocab_size=1024, n_layers=2, d_model=64, n_heads=2, context=64, batch_size=4,
                 n_students=4, warmup_steps=1, rounds=2, steps_per_round=1, profile_steps=1,
                 loss_reps=1, matmul_reps=2, matmul_seconds=0.02)


# ----------------------------------------------------------------------------- matmul peak
def matmul_shapes(s: Settings) -> list[tuple[int, int, int]]:
    """[B*T, d] x [d, 4d] (the MLP's kind) and [B*T, d] x [d, V] (the head's)."""
    bt = s.batch_size * s.context
    return [(bt, s.d_model, 4 * s.d_model), (bt, s.d_model, s.vocab_size)]


def matmul_flops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device,
                 reps: int, min_seconds: float) -> float:
    """Best FLOP/s of ``torch.mm`` [m,k] x [k,n] over ``reps`` repeats."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(k, n, generator=gen).to(device, dtype)
    out = torch.mm(a, b)
    common.sync(device)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)
    common.sync(device)
    inner = max(1, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    best = math.inf
    for _ in range(reps):
        common.sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        common.sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * m * k * n / best


def probe_matmul(s: Settings, device: torch.device) -> dict[str, dict[str, float]]:
    return {dtype_name: {"x".join(map(str, shape)): matmul_flops(*shape, dtype, device,
                                                                  s.matmul_reps,
                                                                  s.matmul_seconds)
                         for shape in matmul_shapes(s)}
            for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


# ----------------------------------------------------------------------------- configurations
@dataclass
class Config:
    name: str
    description: str
    n_students: int
    mode: str
    precision: str
    step: Callable[[], Any]
    trainer: Any = None


def random_batches(s: Settings, seed: int = 0):
    from minidml.data import Batches

    rng = np.random.default_rng(seed)
    n = max(1 << 20, 64 * (s.context + 1) * 4)
    tokens = rng.integers(4, s.vocab_size, size=n, dtype=np.uint16)  # ids 0-3 are special
    return Batches(tokens, s.context, s.batch_size, seed=seed)


def student_config(s: Settings):
    from minidml.model import StudentConfig

    return StudentConfig(vocab_size=s.vocab_size, n_layers=s.n_layers, d_model=s.d_model,
                         n_heads=s.n_heads, context=s.context)


def plain_config(s: Settings, batches, device: torch.device) -> Config:
    """One student, the plainest eager loop: forward, cross-entropy, backward, AdamW."""
    from minidml.model import Student

    torch.manual_seed(0)
    model = Student(student_config(s)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    index = iter(range(1 << 62))

    def step() -> None:
        x, y = batches.train(next(index))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return Config("a_plain", "1 student, plain eager loop (forward, cross-entropy, backward, "
                  "AdamW step), fp32", 1, "plain", "fp32", step)


def trainer_config(name: str, description: str, s: Settings, batches, device: torch.device,
                   mode: str, precision: str) -> Config:
    from minidml.config import TrainConfig
    from minidml.model import Student
    from minidml.trainer import Trainer

    scfg = student_config(s)
    cfg = TrainConfig(students=(scfg.shape,) * s.n_students, mode=mode, precision=precision,
                      context=s.context, batch_size=s.batch_size, device=str(device),
                      steps=1_000_000)
    torch.manual_seed(0)
    students = [Student(scfg) for _ in range(s.n_students)]
    trainer = Trainer(cfg, students, batches, total_steps=1_000_000)
    return Config(name, description, s.n_students, mode, precision, trainer.train_step, trainer)


def build_configs(s: Settings, batches, device: torch.device) -> list[Config]:
    k = s.n_students
    return [
        plain_config(s, batches, device),
        trainer_config("b_dml", f"Trainer.train_step, {k} students, mode dml (mutual KL on), "
                       "fp32", s, batches, device, "dml", "fp32"),
        trainer_config("b0_ce", f"Trainer.train_step, {k} students, mode single (cross-entropy "
                       "only, no KL), fp32", s, batches, device, "single", "fp32"),
        trainer_config("c_dml_bf16", f"Trainer.train_step, {k} students, mode dml, bf16 "
                       "autocast", s, batches, device, "dml", "bf16"),
    ]


# ----------------------------------------------------------------------------- loss alone
def loss_microbench(s: Settings, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Forward + backward of the loss alone on the K students' real inputs of one batch.

    ``trainer_default`` is the call ``Trainer.train_step`` makes (``linear_mutual_loss`` on
    the hidden states and head weights, or ``mutual_loss`` on the logits, with the step's
    α); ``ce_only`` is α = 0 (K cross-entropies). Also one student's head matmul, for
    scale. (The fused loss against the plain pairwise reference is ``bench/mutual_kl.py``'s
    subject.)
    """
    from minidml.fused_linear import linear_mutual_loss
    from minidml.losses import mutual_loss

    tr = cfg.trainer
    x, y = tr.batches.train(0)
    x, y = x.to(device), y.to(device).flatten()
    omega, alpha, temp = tr.omega, tr.config.alpha_at(tr.step), tr.config.softmax_temperature
    with torch.no_grad():
        hidden = [st.trunk(x).flatten(0, 1) for st in tr.students]
        weights = [st.embed.weight for st in tr.students]
        if tr.loss_from_hidden:
            inputs, k = [*hidden, *weights], len(hidden)

            def loss(z: list[torch.Tensor], a: float) -> Any:
                return linear_mutual_loss(z[:k], z[k:], y, omega, a, temp,
                                          head_dtype=tr._head_dtype)
        else:
            inputs = [st.head(h) for st, h in zip(tr.students, hidden, strict=True)]

            def loss(z: list[torch.Tensor], a: float) -> Any:
                return mutual_loss(z, y, omega, a, temp)
    variants: dict[str, Callable[[list[torch.Tensor]], Any]] = {
        "trainer_default": lambda z: loss(z, alpha),
        "ce_only": lambda z: loss(z, 0.0),
    }
    out: dict[str, Any] = {"inputs": "hidden" if tr.loss_from_hidden else "logits",
                           "shape": [len(hidden), x.numel(), s.vocab_size], "alpha": alpha,
                           "seconds": {}}
    for name, fn in variants.items():
        times = []
        for _ in range(s.loss_reps + 1):  # the first is a warm-up
            leaves = [z.detach().clone().requires_grad_() for z in inputs]
            wall, _ = common.timed(lambda fn=fn, leaves=leaves: fn(leaves).total.backward(),
                                   device)
            times.append(wall)
            del leaves
        out["seconds"][name] = min(times[1:])
    hidden = torch.randn(x.numel(), s.d_model, device=device)
    weight = tr.students[0].embed.weight.detach()
    wall = min(common.timed(lambda: F.linear(hidden, weight), device)[0] for _ in range(3))
    out["seconds"]["one_head_matmul_forward"] = wall
    sec = out["seconds"]
    out["kl_seconds"] = sec["trainer_default"] - sec["ce_only"]
    return out


# ----------------------------------------------------------------------------- page faults
def page_fault_cost(device: torch.device, mib: int = 128, reps: int = 5) -> dict[str, Any]:
    """Seconds per minor page fault: filling a fresh ``mib`` MiB tensor (glibc hands out
    large blocks straight from mmap, so every page is faulted in on first touch) minus
    filling one that already exists, divided by the faults counted."""
    n = mib * (1 << 20) // 4
    keep = torch.empty(n)
    keep.fill_(1.0)
    fresh, reuse, faults = math.inf, math.inf, 0
    for _ in range(reps):
        tm = common.measure(lambda: torch.empty(n).fill_(1.0), torch.device("cpu"))
        if tm.wall < fresh:
            fresh, faults = tm.wall, tm.minor_faults
        reuse = min(reuse, common.measure(lambda: keep.fill_(1.0), torch.device("cpu")).wall)
    per_fault = (fresh - reuse) / faults if faults >= 1000 else None  # None: no mmap here
    return {"tensor_mib": mib, "fresh_fill_seconds": fresh, "reused_fill_seconds": reuse,
            "faults": faults, "seconds_per_fault": per_fault}


# ----------------------------------------------------------------------------- the run
def vm_hwm_bytes() -> int | None:
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = common.resolve_device(args.device)
    if not (args.quick and device.type == "cpu"):
        return _run(args, device)
    # smoke runs use one thread: with tiny ops, OpenMP barriers on a machine shared with other
    # busy processes can make a step 50x slower, and these figures mean nothing anyway
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    result = common.envelope(NAME, device, args.quick)
    scfg = student_config(s)
    flops_tok = scfg.flops_per_token(s.context)
    tokens_per_step = s.batch_size * s.context
    result["settings"] = {
        **dataclasses.asdict(s),
        "student": {**dataclasses.asdict(scfg), "n_params": scfg.n_params,
                    "ffn_dim": scfg.ffn_dim, "flops_per_token": flops_tok},
        "tokens_per_step": tokens_per_step,
        "data": "random uint16 token ids (no tokenizer), minidml.data.Batches",
        "optimizer": "AdamW: a_plain lr=1e-3 torch defaults; trainer configs as TrainConfig",
        "matmul_shapes": [list(m) for m in matmul_shapes(s)],
        "peak_rule": "max FLOP/s over the matmul shapes and all probes of the run",
        "headline_rule": "fastest timed step of each configuration (other processes on a "
                         "shared machine only ever add time); medians are given alongside, "
                         "others_cpu_share says how busy the rest of the machine was during "
                         f"each step, and quiet_steps summarises the steps where it was < {QUIET}",
    }
    common.log(f"[{NAME}] student {scfg.n_params:,} params, {flops_tok / 1e6:.1f} MFLOP/token, "
               f"batch {s.batch_size}x{s.context}, K={s.n_students}, device {device}")

    # measured first, while the allocator still returns large blocks to the kernel on free
    fault_cost = page_fault_cost(device) if device.type == "cpu" else None
    result["page_fault_cost"] = fault_cost
    batches = random_batches(s)
    configs = build_configs(s, batches, device)
    for cfg in configs:
        for _ in range(s.warmup_steps):
            cfg.step()
    common.sync(device)

    raw: dict[str, dict[str, list]] = {c.name: {"step_seconds": [], "cpu_seconds": [],
                                                "others_cpu_share": [], "minor_faults": [],
                                                "round": []}
                                       for c in configs}
    probes: list[dict[str, dict[str, float]]] = []
    waited: list[float] = []
    wait_idle = getattr(args, "wait_idle", 0.0)
    for r in range(s.rounds):
        waited.append(common.wait_for_idle(wait_idle) if wait_idle > 0 else 0.0)
        box: dict[str, Any] = {}
        tm = common.measure(lambda box=box: box.update(p=probe_matmul(s, device)), device)
        probes.append({**box["p"], "others_cpu_share": tm.others})
        order = configs[r % len(configs):] + configs[:r % len(configs)]  # rotate the order
        for cfg in order:
            for _ in range(s.steps_per_round):
                tm = common.measure(cfg.step, device)
                raw[cfg.name]["step_seconds"].append(tm.wall)
                raw[cfg.name]["cpu_seconds"].append(tm.cpu)
                raw[cfg.name]["others_cpu_share"].append(tm.others)
                raw[cfg.name]["minor_faults"].append(tm.minor_faults)
                raw[cfg.name]["round"].append(r)
        common.log(f"[{NAME}] round {r + 1}/{s.rounds}: " + ", ".join(
            f"{c.name} {statistics.median(raw[c.name]['step_seconds'][-s.steps_per_round:]):.3f}s"
            for c in configs))

    peak = {d: max(v for p in probes for v in p[d].values()) for d in ("fp32", "bf16")}
    # (a machine busy during every probe would lower the peak and so inflate every MFU alike;
    # the ratios between configurations do not depend on it)
    result["matmul"] = {"probes_flops_per_s": probes, "peak_flops_per_s": peak}
    result["waited_for_idle_seconds"] = waited

    res_cfgs: dict[str, Any] = {}
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    for cfg in configs:
        rw = raw[cfg.name]
        best, med = min(rw["step_seconds"]), statistics.median(rw["step_seconds"])
        flops_step = cfg.n_students * flops_tok * tokens_per_step
        entry = {
            "description": cfg.description, "n_students": cfg.n_students, "mode": cfg.mode,
            "precision": cfg.precision, "flops_per_step": flops_step, **rw,
            "step_seconds_summary": common.summary(rw["step_seconds"]),
            "tokens_per_s": tokens_per_step / best,
            "student_tokens_per_s": cfg.n_students * tokens_per_step / best,
            "model_flops_per_s": flops_step / best,
            "mfu": flops_step / best / peak["fp32"],
            "median_step": {"tokens_per_s": tokens_per_step / med,
                            "mfu": flops_step / med / peak["fp32"]},
            "cpu_utilisation_median": statistics.median(
                c / w for c, w in zip(rw["cpu_seconds"], rw["step_seconds"], strict=True)
            ) / threads,
        }
        quiet = [w for w, o in zip(rw["step_seconds"], rw["others_cpu_share"], strict=True)
                 if o is not None and o < QUIET]
        if quiet:
            qmed = statistics.median(quiet)
            entry["quiet_steps"] = {"n": len(quiet), "median_step_seconds": qmed,
                                    "tokens_per_s": tokens_per_step / qmed,
                                    "mfu": flops_step / qmed / peak["fp32"]}
        if cfg.precision == "bf16":
            entry["mfu_vs_bf16_matmul"] = flops_step / best / peak["bf16"]
        if fault_cost is not None and fault_cost["seconds_per_fault"] is not None:
            faults = statistics.median(rw["minor_faults"])
            entry["page_faults"] = {
                "median_per_step": faults,
                "estimated_seconds_per_step": faults * fault_cost["seconds_per_fault"],
                "estimated_share_of_fastest_step":
                    faults * fault_cost["seconds_per_fault"] / best}
        res_cfgs[cfg.name] = entry
    result["configs"] = res_cfgs

    def per_round_ratio(num: str, den: str) -> float:
        """Median over rounds of the within-round ratio of MFUs (fastest step of each)."""
        ratios = []
        for r in range(s.rounds):
            def rate(name: str, r: int = r) -> float:
                rw = raw[name]
                t = min(w for w, rr in zip(rw["step_seconds"], rw["round"], strict=True)
                        if rr == r)
                return res_cfgs[name]["flops_per_step"] / t
            ratios.append(rate(num) / rate(den))
        return statistics.median(ratios)

    a, b, b0, c = (res_cfgs[n] for n in ("a_plain", "b_dml", "b0_ce", "c_dml_bf16"))
    result["ratios"] = {
        "mfu_b_dml_over_a_plain": b["mfu"] / a["mfu"],
        "mfu_b_dml_over_a_plain_median_steps": b["median_step"]["mfu"] / a["median_step"]["mfu"],
        "mfu_b_dml_over_a_plain_per_round_median": per_round_ratio("b_dml", "a_plain"),
        "mfu_b0_ce_over_a_plain": b0["mfu"] / a["mfu"],
        "mfu_c_bf16_over_b_fp32": c["mfu"] / b["mfu"],
        "step_time_b_dml_over_b0_ce": b0["mfu"] / b["mfu"],
        "kl_share_of_b_dml_step": 1 - b["mfu"] / b0["mfu"],
    }
    result["targets"] = {
        "b_dml_mfu_fp32": {"target": f">= {TARGET_MFU_B}", "value": b["mfu"],
                           "met": b["mfu"] >= TARGET_MFU_B,
                           "applies": device.type == "cpu" and not args.quick},
    }

    common.log(f"[{NAME}] profiling b_dml and b0_ce")
    by_name = {c.name: c for c in configs}
    gc.collect()
    if wait_idle > 0:
        waited.append(common.wait_for_idle(wait_idle))
    prof: dict[str, Any] = profile_breakdown([by_name["b_dml"], by_name["b0_ce"]], s, device)
    pb, pb0 = prof["b_dml"]["min_seconds"], prof["b0_ce"]["min_seconds"]
    if "loss_forward" in pb and "loss_backward" in pb:
        loss_b = pb["loss_forward"] + pb["loss_backward"]
        loss_b0 = pb0["loss_forward"] + pb0["loss_backward"]
        total_b = prof["b_dml"]["sum_of_min_seconds"]
        prof["mutual_kl"] = {
            "loss_fwd_bwd_seconds_b_dml": loss_b, "loss_fwd_bwd_seconds_b0_ce": loss_b0,
            "kl_seconds": loss_b - loss_b0,
            "kl_share_of_b_dml_step": (loss_b - loss_b0) / total_b,
            "loss_share_of_b_dml_step": loss_b / total_b,
        }
    prof["torch_profiler_b_dml"] = torch_profile(by_name["b_dml"], device)
    result["profile"] = prof
    common.log(f"[{NAME}] loss micro-benchmark")
    result["loss_microbench"] = loss_microbench(s, by_name["b_dml"], device)
    if device.type == "cuda":
        result["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    else:
        result["peak_rss_bytes"] = vm_hwm_bytes()
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"train_speed ({result['machine']['device']}, "
             f"{result['machine']['torch_threads']} threads"
             f"{', QUICK' if result['quick'] else ''}): matmul peak fp32 "
             f"{result['matmul']['peak_flops_per_s']['fp32'] / 1e9:.1f} GFLOP/s, bf16 "
             f"{result['matmul']['peak_flops_per_s']['bf16'] / 1e9:.1f} GFLOP/s"]
    for name, c in result["configs"].items():
        extra = (f"  (vs bf16 matmul {c['mfu_vs_bf16_matmul']:.3f})"
                 if "mfu_vs_bf16_matmul" in c else "")
        st = c["step_seconds_summary"]
        lines.append(f"  {name:11s} step {st['min']:6.3f}s (median {st['median']:6.3f}s)  "
                     f"{c['tokens_per_s']:7.0f} tok/s  MFU {c['mfu']:.3f}{extra}")
    r = result["ratios"]
    lines.append(f"  MFU b_dml / a_plain = {r['mfu_b_dml_over_a_plain']:.3f} "
                 f"(per-round median {r['mfu_b_dml_over_a_plain_per_round_median']:.3f}); "
                 f"KL share of the step (b vs b0) = {r['kl_share_of_b_dml_step']:.1%}")
    t = result["targets"]["b_dml_mfu_fp32"]
    lines.append(f"  target b_dml MFU {t['target']}: {t['value']:.3f} "
                 f"{'met' if t['met'] else 'NOT met'}"
                 f"{'' if t['applies'] else ' (does not apply to this run)'}")
    share = result["profile"]["b_dml"]["share_of_step"]
    lines.append("  b_dml step: " + ", ".join(f"{k} {v:.1%}" for k, v in share.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)

if __name__ == "__main__":
    sys.exit(main())
