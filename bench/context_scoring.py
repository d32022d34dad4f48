"""Scoring texts after a long unscored context, as the 2026 entity-tracking task asks: the
options' common prefix run once, and the scorer's ``head`` at the scored positions only,
against the full logits.

A randomly initialised student of the CPU hour's shape (4 × 256, the default vocabulary
16,384 from a tokenizer trained on the first 50,000 lines of each shared
training file; speed does not depend on the
weights) scores a seeded sample of the entity-tracking items (each option after its
description of the boxes, ~130 context tokens before ~10 scored ones) with
``Scorer(batch_size=64)``, fp32: ``shared``, the scorer as it is (an item's options run
their common prefix once, then each option after it: ``Student.trunk_after``); ``scored``,
every option run whole (``shared_prefix=None``), the student's head applied to the hidden
states of the scored tokens only; and ``full``, the same student seen through a wrapper
without ``head`` or cache, so that the scorer runs every option whole and computes the
logits of every position (the path of a Hugging Face model, and minidml's first). Interleaved
(``Timer.blocked_autorange``); the scores must agree. Targets, in seconds: scored ÷ full ≤ 0.6
(the trunk alone is under half of the 4 × 256 student's FLOPs per token at 16,384 pieces);
shared ÷ scored ≤ 0.5 (five options after one prefix of ~13 times their length: the trunk's
work falls about 4×, the head's stays).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import torch

from bench import common

NAME = "context_scoring"
FULL = {"vocab_size": 16384, "shape": (4, 256, 4), "items": 120, "rounds": 3,
        "tokenizer_lines": 50_000, "min_run_time": 1.0}
QUICK = {"vocab_size": 1024, "shape": (2, 64, 2), "items": 12, "rounds": 1,
         "tokenizer_lines": 1_000, "min_run_time": 0.0}
TARGET_RATIO, TARGET_SHARED = 0.6, 0.5
FILES = ("regular", "ambiref", "move_contents")


class FullLogits(torch.nn.Module):
    """The student with logits and a trunk but no ``head``: scored from every position's
    logits."""

    def __init__(self, student: torch.nn.Module):
        super().__init__()
        self.student, self.config = student, student.config

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.student(ids)

    def trunk(self, ids: torch.Tensor) -> torch.Tensor:
        return self.student.trunk(ids)


def entity_tracking_items(n: int) -> list[tuple[str, list[str]]]:
    from minidml.evaluation.suite import read_jsonl

    folder = common.data_dir() / "babylm-eval-2026" / "full_eval" / "entity_tracking"
    rows = []
    for stem in FILES:
        path = folder / f"{stem}.jsonl"
        if not path.exists():
            raise common.BenchError(f"{path}: entity-tracking data not found")
        rows += [(r["input_prefix"], r["options"])
                 for r in read_jsonl(path, {"input_prefix": str, "options": list})]
    return random.Random(0).sample(rows, n)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml.evaluation.scoring import Scorer

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    tok, student = common.random_student(common.corpus_lines((), s["tokenizer_lines"]),
                                         s["vocab_size"], s["shape"], device)
    items = entity_tracking_items(s["items"])
    texts = [o for _, options in items for o in options]
    contexts = [p for p, options in items for _ in options]
    joins = [""] * len(texts)
    scorers = {"shared": Scorer([student], tok, batch_size=64),
               "scored": Scorer([student], tok, batch_size=64, shared_prefix=None),
               "full": Scorer([FullLogits(student)], tok, batch_size=64)}
    variants = {n: lambda sc=sc: sc.score(texts, contexts, joins)["student-0"]
                for n, sc in scorers.items()}
    scores = {n: fn() for n, fn in variants.items()}
    measured = common.interleave(variants, s["rounds"], NAME, min_run_time=s["min_run_time"])
    seconds = {n: min(measured[n].times) for n in variants}
    requests = scorers["scored"].encode(texts, contexts, joins)
    ratio = seconds["scored"] / seconds["full"]
    shared = seconds["shared"] / seconds["scored"]
    differences = {n: float((scores[n] - scores["full"]).abs().max()) for n in scorers}
    result.update(
        settings={**s, "student_params": student.config.n_params, "texts": len(texts),
                  "tokens_per_text": sum(len(r.ids) - 1 for r in requests) / len(texts),
                  "scored_tokens_per_text": sum(r.stop - r.skip for r in requests) / len(texts)},
        seconds={n: common.stats(measured[n]) for n in variants},
        texts_per_second={n: len(texts) / v for n, v in seconds.items()},
        max_abs_score_difference=max(differences.values()),
        max_abs_score_difference_from_full=differences,
        ratios={"scored_over_full": ratio, "shared_over_scored": shared},
        targets={"scored_over_full": common.target(ratio, TARGET_RATIO, True, not args.quick),
                 "shared_over_scored": common.target(shared, TARGET_SHARED, True,
                                                     not args.quick)},
        table=common.table(measured))
    if result["max_abs_score_difference"] > 1e-3:
        raise common.BenchError(f"scores differ by {result['max_abs_score_difference']:.2g}")
    return result


def report(result: dict[str, Any]) -> str:
    st = result["settings"]
    return "\n".join([
        common.heading(result),
        result["table"],
        f"  {st['texts']} texts of {st['tokens_per_text']:.0f} tokens, "
        f"{st['scored_tokens_per_text']:.1f} scored; texts/s: "
        + ", ".join(f"{n} {v:.0f}" for n, v in result["texts_per_second"].items())
        + f"; scored / full {result['ratios']['scored_over_full']:.3f}"
        + (f", shared / scored {result['ratios']['shared_over_scored']:.3f}"
           if "shared_over_scored" in result["ratios"] else ""),
        common.targets_line(result["targets"])])
