"""How fast a student shape trains: a training step's measured efficiency, and tokens/s.

A step's *efficiency* is its model FLOP/s (:meth:`StudentConfig.flops_per_token
<minidml.model.StudentConfig.flops_per_token>` times the tokens of the step, over the step's
time) divided by the device's fp32 matmul peak. It depends above all on the width: a narrow
student's matmuls are thin (their inner dimension is ``d_model``), and its norms, rotary
embeddings, attention softmax and residual adds cost memory traffic in proportion to
``d_model`` per token against matmul work in proportion to ``d_model²``. :data:`EFFICIENCY`
holds the figures ``bench/shape_speed.py`` measured (eager, fp32, the loss from hidden states,
batch 32 × 128, vocabulary 8,192, the search's head sizes) on the 2-core development CPU;
:func:`tokens_per_second` turns them into a prediction for any machine from its own measured
matmul peak (:func:`matmul_peak`). On a GPU narrow students are, if anything, further from the
peak, so the same preference holds there, but the predicted figures are the CPU's rule.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # annotations only: this module needs nothing of the model's
    from .model import StudentConfig

# (d_model, efficiency): medians over 1..8 layers, bench/results/shape_speed.json
EFFICIENCY: tuple[tuple[int, float], ...] = (
    (64, 0.34), (96, 0.46), (128, 0.50), (192, 0.60), (256, 0.69), (384, 0.59), (512, 0.78),
)
DEEP_LOSS = 0.12  # efficiency lost per doubling of depth beyond DEEP_FROM layers (16 vs 8)
DEEP_FROM = 8
PEAK_SHAPE = (1024, 1024, 1024)
CONTEXT = 128  # the context the efficiencies were measured at


def step_efficiency(d_model: int, n_layers: int = 1) -> float:
    """The fraction of the fp32 matmul peak a training step reaches at this width and depth:
    :data:`EFFICIENCY` interpolated linearly in log(width) (constant beyond its ends), less
    :data:`DEEP_LOSS` per doubling of depth beyond :data:`DEEP_FROM` layers."""
    widths = [w for w, _ in EFFICIENCY]
    if d_model <= widths[0]:
        eff = EFFICIENCY[0][1]
    elif d_model >= widths[-1]:
        eff = EFFICIENCY[-1][1]
    else:
        j = bisect.bisect_right(widths, d_model)
        (w0, e0), (w1, e1) = EFFICIENCY[j - 1], EFFICIENCY[j]
        t = (math.log(d_model) - math.log(w0)) / (math.log(w1) - math.log(w0))
        eff = e0 + t * (e1 - e0)
    return eff * max(0.5, 1.0 - DEEP_LOSS * max(0.0, math.log2(n_layers / DEEP_FROM)))


def flop_seconds_per_token(cfg: StudentConfig, context: int = CONTEXT) -> float:
    """A shape's training time per token on a device of peak 1 FLOP/s: its FLOPs per token
    over its efficiency (divide by the peak for seconds)."""
    return cfg.flops_per_token(context) / step_efficiency(cfg.d_model, cfg.n_layers)


def tokens_per_second(cfg: StudentConfig, peak_flops: float, context: int = CONTEXT) -> float:
    """Predicted training tokens/s of one student alone, on a device whose fp32 matmul peak
    is ``peak_flops``."""
    return peak_flops / flop_seconds_per_token(cfg, context)


def together(rates: Sequence[float]) -> float:
    """Tokens/s of one step that trains every student on the same tokens, one after another:
    the harmonic sum of their own rates."""
    return 1.0 / sum(1.0 / r for r in rates)


def best_seconds(fn: Callable[[], Any], device: torch.device, repeats: int,
                 enough: float = math.inf) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after an untimed one that warms up
    (a first bf16 call on the CPU builds its oneDNN kernel and can take 10x a warm one); the
    first timed call is the answer when it already takes ``enough`` seconds. Synchronised
    on CUDA."""
    def once() -> float:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()
    first = once()
    if first >= enough:
        return first
    return min([first] + [once() for _ in range(repeats - 1)])


def matmul_peak(device: torch.device | str = "cpu", repeats: int = 5) -> float:
    """The device's fp32 matmul FLOP/s: the best of ``repeats`` 1024³ ``torch.mm`` calls after
    one warm-up (a few tens of milliseconds on a CPU)."""
    device = torch.device(device)
    m, k, n = PEAK_SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    return 2.0 * m * k * n / best_seconds(lambda: a @ b, device, repeats)
