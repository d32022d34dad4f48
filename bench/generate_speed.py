"""Sampling from a student: ``Student.generate``, each new token run once after the keys and
values of the tokens before it, against the window run whole for every token.

A seeded, randomly initialised student of the CPU hour's shape (4 × 256, vocabulary 16,384,
context 128; speed does not depend on the weights) continues a prompt of 8 tokens by 120
greedy tokens, so that the text ends at the context: ``cached``, ``Student.generate`` as it
is (:meth:`Student.next_token_logits`); ``window``, the loop it replaced, every token
predicted by the student's forward pass over the whole text so far (at most ``context``
tokens). One row (``minidml generate``) and eight. Interleaved (``Timer.blocked_autorange``);
the tokens must be the same. Target: cached ÷ window ≤ 0.3 at one row (the window loop runs
~68 tokens per new token on average, the cached one 1, at a fixed cost per call that a
4-layer student's single token does not hide).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench import common

NAME = "generate_speed"
FULL = {"vocab_size": 16384, "shape": (4, 256, 4), "context": 128, "prompt": 8,
        "length": 128, "rows": (1, 8), "rounds": 3, "min_run_time": 1.0}
QUICK = {"vocab_size": 512, "shape": (2, 64, 2), "context": 32, "prompt": 4,
         "length": 32, "rows": (1, 2), "rounds": 1, "min_run_time": 0.0}
TARGET = 0.3


def window_generate(model: torch.nn.Module, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy continuation with no cache: the whole window through the student per token."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids[:, -model.config.context:])[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def label(kind: str, rows: int) -> str:
    return f"{kind}, {rows} row(s)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml import Student, StudentConfig

    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)
    result = common.envelope(NAME, device, args.quick)
    layers, width, heads = s["shape"]
    torch.manual_seed(0)
    model = Student(StudentConfig(vocab_size=s["vocab_size"], n_layers=layers, d_model=width,
                                  n_heads=heads, context=s["context"])).to(device).eval()
    steps = s["length"] - s["prompt"]
    variants, rows_of, same = {}, {}, {}
    for rows in s["rows"]:
        prompt = torch.randint(0, s["vocab_size"], (rows, s["prompt"]), device=device,
                               generator=torch.Generator(device=device).manual_seed(rows))
        cached = model.generate(prompt, steps, temperature=0)
        same[rows] = bool(torch.equal(cached, window_generate(model, prompt, steps)))
        variants[label("cached", rows)] = lambda p=prompt: model.generate(p, steps,
                                                                          temperature=0)
        variants[label("window", rows)] = lambda p=prompt: window_generate(model, p, steps)
        rows_of |= {label("cached", rows): rows, label("window", rows): rows}
    measured = common.interleave(variants, s["rounds"], NAME, min_run_time=s["min_run_time"])
    seconds = {n: min(measured[n].times) for n in variants}
    ratios = {f"cached_over_window_{r}": seconds[label("cached", r)]
              / seconds[label("window", r)] for r in s["rows"]}
    one = f"cached_over_window_{s['rows'][0]}"
    result.update(
        settings={**s, "student_params": model.config.n_params, "steps": steps},
        seconds={n: common.stats(measured[n]) for n in variants},
        tokens_per_second={n: steps * rows_of[n] / v for n, v in seconds.items()},
        same_tokens=same, ratios=ratios,
        targets={one: common.target(ratios[one], TARGET, True, not args.quick)},
        table=common.table(measured))
    if not all(same.values()):
        raise common.BenchError(f"cached and window generation differ: {same}")
    return result


def report(result: dict[str, Any]) -> str:
    return "\n".join([
        common.heading(result),
        result["table"],
        "  new tokens/s: " + ", ".join(f"{n} {v:.0f}"
                                        for n, v in result["tokens_per_second"].items())
        + "; " + ", ".join(f"{k} {v:.3f}" for k, v in result["ratios"].items()),
        common.targets_line(result["targets"])])
