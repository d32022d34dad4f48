"""Minimal-pair scoring speed: :class:`minidml.evaluation.scoring.Scorer` against a
one-sentence loop.

* Setup (untimed): a tokenizer trained on a sample of the shared BabyLM text, and a randomly
  initialised ~5M-parameter student (speed does not depend on the weights).
* Speed: BLiMP pairs/s of ``Scorer(batch_size=64)`` (fp32, and bf16 autocast) against a loop
  that scores one sentence at a time (``model(ids[None])``, float32 log-softmax, sum after
  BOS), on the same sample of pairs drawn across all 67 paradigms; the variants alternate and
  the best round of each counts. The scores must agree (max |Δ| is reported). Target: ≥ 20×.
* Compute: model FLOPs per pair ÷ the best float32 matmul FLOP/s measured here gives the
  batched scorer's MFU and the least time the whole BLiMP could take on this machine.
* The whole original BLiMP (``blimp/``, 67,000 pairs) through ``Scorer``, timed once.
  Target: < 60 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import torch

from bench import common

NAME = "scoring_speed"
FULL = {"vocab_size": 8192, "shape": (4, 256, 4), "sample_pairs": 400, "rounds": 3,
        "full_blimp": True, "tokenizer_lines": 20_000}
QUICK = {"vocab_size": 1024, "shape": (2, 64, 2), "sample_pairs": 40, "rounds": 1,
         "full_blimp": False, "tokenizer_lines": 2_000}
TARGET_SPEEDUP = 20.0
TARGET_FULL_SECONDS = 60.0


def blimp_pairs() -> list[tuple[str, str]]:
    from minidml.evaluation.suite import read_jsonl

    folder = common.data_dir() / "blimp"
    files = sorted(folder.glob("*.jsonl"))
    if len(files) != 67:
        raise common.BenchError(f"{folder}: {len(files)} paradigm files, expected 67")
    return [(r["sentence_good"], r["sentence_bad"])
            for f in files for r in read_jsonl(f, ("sentence_good", "sentence_bad"))]


def tokenizer(s: dict[str, Any]):
    import lzma

    from minidml import Tokenizer

    lines = []
    with lzma.open(common.data_dir() / "babylm-2024-100M-snippets" / "childes.txt.xz", "rt",
                   encoding="utf-8") as f:
        for line in f:
            lines.append(line.rstrip("\n"))
            if len(lines) >= s["tokenizer_lines"]:
                break
    return Tokenizer.train(lines, vocab_size=s["vocab_size"])


def loop_scores(model, tok, texts: list[str]) -> torch.Tensor:
    """The yardstick: one sentence per forward pass."""
    from minidml import Tokenizer

    out = []
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([[Tokenizer.bos_id, *tok.encode(t)]])
            logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)
            out.append(float(logp[0].gather(1, ids[0, 1:, None]).sum()))
    return torch.tensor(out, dtype=torch.float64)


def matmul_peak(device: torch.device, reps: int = 5) -> float:
    """Best FLOP/s of float32 matmuls shaped like the student's (tokens × d × d, d × V)."""
    best = 0.0
    for m, k, n in ((1024, 256, 8192), (1024, 256, 704), (4096, 256, 1024)):
        a = torch.randn(m, k, device=device)
        b = torch.randn(k, n, device=device)
        a @ b
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            common.sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import Student, StudentConfig
    from minidml.evaluation.scoring import Scorer

    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    tok = tokenizer(s)
    n_layers, d_model, n_heads = s["shape"]
    torch.manual_seed(0)
    model = Student(StudentConfig(vocab_size=tok.vocab_size, n_layers=n_layers,
                                  d_model=d_model, n_heads=n_heads, context=128)).to(device)
    model.eval()
    pairs = blimp_pairs()
    sample = random.Random(0).sample(pairs, s["sample_pairs"])
    texts = [t for p in sample for t in p]
    scorer = Scorer([model], tok, batch_size=64)
    scorer_bf16 = Scorer([model], tok, batch_size=64, precision="bf16")
    result["settings"] = {**s, "student_params": model.config.n_params,
                          "pairs_in_blimp": len(pairs)}
    common.log(f"[{NAME}] student of {model.config.n_params:,} parameters, "
               f"{len(sample)} sampled pairs")

    variants = {"batched": lambda: scorer.score(texts)["student-0"],
                "batched_bf16": lambda: scorer_bf16.score(texts)["student-0"],
                "loop": lambda: loop_scores(model, tok, texts)}
    times: dict[str, list[float]] = {n: [] for n in variants}
    scores: dict[str, torch.Tensor] = {}
    for r in range(s["rounds"]):
        names = list(variants)
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            scores[name] = variants[name]()
            times[name].append(time.perf_counter() - t0)
        common.log(f"[{NAME}] round {r}: " + ", ".join(f"{n} {t[-1]:.2f}s"
                                                       for n, t in times.items()))
    best = {n: min(t) for n, t in times.items()}
    rate = {n: len(sample) / b for n, b in best.items()}
    result["sample"] = {
        "seconds": {n: common.summary(t) for n, t in times.items()},
        "pairs_per_second": rate,
        "max_abs_score_difference": float((scores["batched"] - scores["loop"]).abs().max()),
        "max_abs_score_difference_bf16": float((scores["batched_bf16"]
                                                - scores["loop"]).abs().max()),
    }
    ratios = {"speedup_batched_over_loop": rate["batched"] / rate["loop"],
              "speedup_batched_bf16_over_loop": rate["batched_bf16"] / rate["loop"]}
    # the compute floor: model FLOPs of every scored position ÷ the best matmul FLOP/s here
    peak = matmul_peak(device)
    tokens_sample = sum(len(r.ids) - 1 for r in scorer.encode(texts))
    per_token = model.config.flops_per_token(round(tokens_sample / len(texts))) / 3  # forward
    flops_per_pair = per_token * tokens_sample / len(sample)
    result["compute"] = {"matmul_peak_flops_per_s": peak, "flops_per_pair": flops_per_pair,
                         "model_flops_per_s_batched": flops_per_pair * rate["batched"],
                         "mfu_batched": flops_per_pair * rate["batched"] / peak,
                         "full_blimp_floor_seconds": flops_per_pair * len(pairs) / peak}
    targets = {"speedup": {"target": TARGET_SPEEDUP, "value": ratios[
        "speedup_batched_over_loop"], "met": ratios["speedup_batched_over_loop"]
        >= TARGET_SPEEDUP}}
    if s["full_blimp"]:
        texts = [t for p in pairs for t in p]
        t0 = time.perf_counter()
        scores_full = scorer.score(texts)["student-0"]
        seconds = time.perf_counter() - t0
        result["full_blimp"] = {"pairs": len(pairs), "seconds": seconds,
                                "pairs_per_second": len(pairs) / seconds,
                                "tokens_scored": sum(len(r.ids) - 1 for r in
                                                     scorer.encode(texts)),
                                "finite": bool(torch.isfinite(scores_full).all())}
        targets["full_blimp_seconds"] = {"target": TARGET_FULL_SECONDS, "value": seconds,
                                         "met": seconds < TARGET_FULL_SECONDS}
        common.log(f"[{NAME}] full BLiMP: {len(pairs)} pairs in {seconds:.1f}s")
    result["ratios"] = ratios
    result["targets"] = targets
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    r, smp = result["ratios"], result["sample"]
    lines = [f"scoring_speed ({result['machine']['device']}"
             f"{', QUICK' if result['quick'] else ''})",
             f"  BLiMP pairs/s: batched {smp['pairs_per_second']['batched']:.0f}, one sentence "
             f"at a time {smp['pairs_per_second']['loop']:.0f}: "
             f"{r['speedup_batched_over_loop']:.1f}x (target >= {TARGET_SPEEDUP:.0f}x), "
             f"max |score difference| {smp['max_abs_score_difference']:.1e}; bf16 "
             f"{smp['pairs_per_second']['batched_bf16']:.0f} pairs/s "
             f"({r['speedup_batched_bf16_over_loop']:.1f}x)",
             f"  compute: {result['compute']['flops_per_pair'] / 1e6:.0f} MFLOP/pair, batched "
             f"MFU {result['compute']['mfu_batched']:.2f}; full BLiMP needs at least "
             f"{result['compute']['full_blimp_floor_seconds']:.0f}s at the matmul peak"]
    if "full_blimp" in result:
        f = result["full_blimp"]
        lines.append(f"  full BLiMP: {f['pairs']} pairs in {f['seconds']:.1f}s "
                     f"(target < {TARGET_FULL_SECONDS:.0f}s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
