"""The step-efficiency model behind the search's speed rule and its tokens/s predictions."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from minidml.model import StudentConfig
from minidml.search import heads_for
from minidml.throughput import (
    CONTEXT,
    DEEP_FROM,
    EFFICIENCY,
    best_seconds,
    matmul_peak,
    step_efficiency,
    together,
    tokens_per_second,
)

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "shape_speed.json"


def test_the_table_is_the_benchmarks_medians():
    """EFFICIENCY holds the medians over 1..8 layers of the shapes the search would build
    (its head sizes), as bench/shape_speed.py measured them."""
    result = json.loads(RESULTS.read_text())
    assert result["settings"]["context"] == CONTEXT and not result["quick"]
    by_width: dict[int, list[float]] = {}
    for row in result["shapes"]:
        if row["n_heads"] == heads_for(row["d_model"]) and row["n_layers"] <= DEEP_FROM:
            by_width.setdefault(row["d_model"], []).append(row["efficiency"])
    assert dict(EFFICIENCY) == {w: round(statistics.median(v), 2)
                                for w, v in sorted(by_width.items())}


def test_efficiency_interpolates_in_log_width_and_clamps():
    for width, eff in EFFICIENCY:
        assert step_efficiency(width) == pytest.approx(eff)
    (w0, e0), (w1, e1) = EFFICIENCY[0], EFFICIENCY[1]
    mid = round(math.sqrt(w0 * w1))
    assert step_efficiency(mid) == pytest.approx(
        e0 + (e1 - e0) * math.log(mid / w0) / math.log(w1 / w0))
    assert step_efficiency(16) == EFFICIENCY[0][1]
    assert step_efficiency(8192) == EFFICIENCY[-1][1]


def test_depth_beyond_eight_layers_costs_efficiency():
    assert step_efficiency(128, 8) == step_efficiency(128, 1)
    assert step_efficiency(128, 16) == pytest.approx(0.88 * step_efficiency(128))
    assert step_efficiency(128, 1024) >= 0.5 * step_efficiency(128)


def test_tokens_per_second_scales_with_the_peak_and_sums_harmonically():
    cfg = StudentConfig(vocab_size=8192, n_layers=4, d_model=256, n_heads=4)
    one = tokens_per_second(cfg, 1e11)
    assert tokens_per_second(cfg, 2e11) == pytest.approx(2 * one)
    assert one == pytest.approx(1e11 * step_efficiency(256) / cfg.flops_per_token(CONTEXT))
    assert together([one, one]) == pytest.approx(one / 2)
    assert together([1000.0, 3000.0]) == pytest.approx(750.0)


def test_the_matmul_peak_is_measured():
    peak = matmul_peak("cpu", repeats=1)
    assert 1e8 < peak < 1e14


def test_a_slow_first_call_is_a_warm_up_not_the_answer():
    """A first call that builds a kernel (bf16 on a CPU with AMX) must not pass for a slow
    device: the early stop at ``enough`` looks at the first call after the warm-up."""
    import time

    import torch
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)

    assert best_seconds(fn, torch.device("cpu"), 3, enough=0.1) < 0.1
    assert len(calls) == 4  # a warm-up and three timed calls

    def slow():
        calls.append(1)
        time.sleep(0.05)

    calls.clear()
    assert best_seconds(slow, torch.device("cpu"), 5, enough=0.01) >= 0.05
    assert len(calls) == 2  # stopped after the first timed call
