"""Minimal-pair scoring: :class:`minidml.evaluation.scoring.Scorer` against a one-sentence loop.

A randomly initialised 5.3M-parameter student (4 × 256; vocabulary 8,192 from a tokenizer
trained on the shared CHILDES text; speed does not depend on the weights) scores 400 BLiMP
pairs drawn across the 67 paradigms with ``Scorer(batch_size=64)`` in fp32 and bf16, and with
the baseline, a loop of one sentence per forward pass (float32 log-softmax, sum after BOS),
interleaved (``Timer.blocked_autorange``, fastest call of each); the scores must agree. Then
the whole original BLiMP (67,000 pairs), fp32, timed once. The batched scorer's MFU is against
the run's fp32 ``torch.mm`` peak. Targets: ≥ 20× the loop; the whole BLiMP < 60 s.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import torch

from bench import common

NAME = "scoring_speed"
FULL = {"vocab_size": 8192, "shape": (4, 256, 4), "sample_pairs": 400, "rounds": 3,
        "full_blimp": True, "tokenizer_lines": 20_000}
QUICK = {"vocab_size": 1024, "shape": (2, 64, 2), "sample_pairs": 40, "rounds": 1,
         "full_blimp": False, "tokenizer_lines": 2_000}
PEAK_SHAPES = ((1024, 256, 8192), (1024, 256, 704), (4096, 256, 1024))
TARGET_SPEEDUP, TARGET_FULL_SECONDS = 20.0, 60.0


def blimp_pairs() -> list[tuple[str, str]]:
    from minidml.evaluation.suite import read_jsonl

    files = sorted((common.data_dir() / "blimp").glob("*.jsonl"))
    if len(files) != 67:
        raise common.BenchError(f"blimp/: {len(files)} paradigm files, expected 67")
    return [(r["sentence_good"], r["sentence_bad"])
            for f in files for r in read_jsonl(f, ("sentence_good", "sentence_bad"))]


def loop_scores(model, tok, texts: list[str], device: torch.device) -> torch.Tensor:
    """The baseline: one sentence per forward pass."""
    from minidml import Tokenizer

    out = []
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([[Tokenizer.bos_id, *tok.encode(t)]], device=device)
            logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)
            out.append(float(logp[0].gather(1, ids[0, 1:, None]).sum()))
    return torch.tensor(out, dtype=torch.float64)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml.evaluation.scoring import Scorer

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    tok, model = common.random_student(common.corpus_lines(("childes",), s["tokenizer_lines"]),
                                       s["vocab_size"], s["shape"], device)
    pairs = blimp_pairs()
    sample = random.Random(0).sample(pairs, s["sample_pairs"])
    texts = [t for p in sample for t in p]
    scorers = {"batched": Scorer([model], tok, batch_size=64),
               "batched_bf16": Scorer([model], tok, batch_size=64, precision="bf16")}
    variants = {**{n: lambda sc=sc: sc.score(texts)["student-0"] for n, sc in scorers.items()},
                "loop": lambda: loop_scores(model, tok, texts, device)}
    scores = {n: fn() for n, fn in variants.items()}
    measured = common.interleave(variants, s["rounds"], NAME,
                                 probes=common.matmul_probes(device, PEAK_SHAPES))
    rate = {n: len(sample) / min(measured[n].times) for n in variants}
    peak = common.matmul_peak(measured)
    tokens = sum(len(r.ids) - 1 for r in scorers["batched"].encode(texts))
    flops_per_pair = (model.config.flops_per_token(round(tokens / len(texts))) / 3  # forward
                      * tokens / len(sample))
    speedup = rate["batched"] / rate["loop"]
    applies = not args.quick
    result.update(
        settings={**s, "student_params": model.config.n_params, "pairs_in_blimp": len(pairs)},
        sample={"seconds": {n: common.stats(measured[n]) for n in variants},
                "pairs_per_second": rate,
                **{f"max_abs_score_difference_{n}": float((scores[n] - scores["loop"]).abs().max())
                   for n in scorers}},
        ratios={f"speedup_{n}_over_loop": rate[n] / rate["loop"] for n in scorers},
        compute={"matmul_peak_flops_per_s": peak, "flops_per_pair": flops_per_pair,
                 "mfu_batched": flops_per_pair * rate["batched"] / peak,
                 "full_blimp_floor_seconds": flops_per_pair * len(pairs) / peak},
        targets={"speedup": common.target(speedup, TARGET_SPEEDUP, False, applies)},
        table=common.table({n: measured[n] for n in variants}))
    if s["full_blimp"]:
        every = [t for p in pairs for t in p]
        t0 = time.perf_counter()
        full = scorers["batched"].score(every)["student-0"]
        seconds = time.perf_counter() - t0
        result["full_blimp"] = {"pairs": len(pairs), "seconds": seconds,
                                "finite": bool(torch.isfinite(full).all())}
        result["targets"]["full_blimp_seconds"] = common.target(seconds, TARGET_FULL_SECONDS,
                                                                True, applies)
    return result


def report(result: dict[str, Any]) -> str:
    smp, c = result["sample"], result["compute"]
    return "\n".join([
        common.heading(result),
        result["table"],
        "  BLiMP pairs/s: " + ", ".join(f"{n} {v:.0f}" for n, v in
                                        smp["pairs_per_second"].items())
        + f"; batched MFU {c['mfu_batched']:.2f}, whole BLiMP >= "
          f"{c['full_blimp_floor_seconds']:.0f}s at the matmul peak",
        common.targets_line(result["targets"])])
