"""Which precision a run trains in: bf16 autocast only where it is measurably faster.

``precision="auto"`` (the default) times a bfloat16 and a float32 matmul at the run's own
shapes on the run's device when the run starts (milliseconds, under a second where bf16 is
slow): the widest student's projection, [128, d] × [d, 4d], and the head, [128, d] ×
[d, min(V, 8192)]. bf16 autocast is used only if it is faster at both, by :data:`MARGIN`.
CPUs without
bf16 matrix units (no AVX512-BF16 or AMX) run bf16 matmuls about 100× slower than float32,
so there ``auto`` is float32; GPUs with tensor cores pick bf16. An explicit ``"bf16"`` that
measures slower still runs, with one warning line giving the ratio; ``"bf16"`` on a device
with no bf16 support at all is an error. The choice and the timings are recorded in the
run's ``config.json`` and kept on resume, so a resumed run computes exactly as it started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import MinidmlError
from .throughput import best_seconds

MARGIN = 1.1  # bf16 must be at least this much faster to be chosen
_ROWS = 128  # rows of the timed matmuls: where bf16 is slow, under a second
_MAX_COLUMNS = 8192


def bf16_supported(device: torch.device) -> bool:
    """Whether the device can run bf16 autocast at all (it may still be slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type in ("cpu", "mps")


def measure(device: torch.device, widths: Sequence[int], vocab: int, repeats: int = 3,
            bf16: bool = True) -> dict[str, Any]:
    """bf16 ÷ fp32 matmul time at the run's shapes (the widest student's), and each time
    (``bf16=False``: the fp32 times alone, the rate that sizes a run for compiling)."""
    d = max(widths)
    shapes = {"projection": (_ROWS, d, 4 * d), "head": (_ROWS, d, min(vocab, _MAX_COLUMNS))}
    out: dict[str, Any] = {"device": str(device), "shapes": {}}
    ratios = []
    g = torch.Generator().manual_seed(0)
    for name, (m, k, n) in shapes.items():
        a32 = torch.randn(m, k, generator=g).to(device)
        b32 = torch.randn(k, n, generator=g).to(device)
        t32 = best_seconds(lambda a=a32, b=b32: a @ b, device, repeats)
        out["shapes"][name] = {"mnk": [m, k, n], "fp32_seconds": t32}
        if not bf16:
            continue
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        # where bf16 is many times slower, its first call says so: stop there
        t16 = best_seconds(lambda a=a16, b=b16: a @ b, device, repeats, enough=4 * t32)
        out["shapes"][name]["bf16_seconds"] = t16
        ratios.append(t16 / t32)
    if ratios:
        out["bf16_over_fp32_time"] = max(ratios)
    return out


def choose(requested: str, device: torch.device, widths: Sequence[int], vocab: int
           ) -> tuple[str, dict[str, Any], str | None]:
    """(precision to run in, the record for config.json, a warning line or None)."""
    if requested not in ("auto", "fp32", "bf16"):
        raise MinidmlError(f"--precision {requested!r}: choose auto, fp32 or bf16")
    if requested == "fp32":
        return "fp32", {"requested": "fp32", "choice": "fp32",
                        **measure(device, widths, vocab, bf16=False)}, None
    if not bf16_supported(device):
        if requested == "bf16":
            raise MinidmlError(f"--precision bf16: {device} has no bfloat16 support; use "
                               "--precision fp32 or auto")
        return "fp32", {"requested": "auto", "choice": "fp32",
                        "reason": f"{device} has no bfloat16 support",
                        **measure(device, widths, vocab, bf16=False)}, None
    timing = measure(device, widths, vocab)
    ratio = timing["bf16_over_fp32_time"]
    if requested == "bf16":
        warning = None
        if ratio > 1:
            warning = (f"warning: --precision bf16 is {ratio:.1f}x slower than fp32 at this "
                       f"run's matmul shapes on {device} (no bf16 matrix units?); "
                       "--precision auto would use fp32")
        return "bf16", {"requested": "bf16", "choice": "bf16", **timing}, warning
    choice = "bf16" if ratio * MARGIN <= 1 else "fp32"
    return choice, {"requested": "auto", "choice": choice, **timing}, None
