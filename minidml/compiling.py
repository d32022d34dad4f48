"""Whether a run compiles its students' trunks with ``torch.compile`` (inductor).

``compile="auto"`` (the default) compiles when inductor can work on the device — a C++
compiler on the CPU, Triton on CUDA — and the run is long enough to repay the compile time:
its estimated eager duration (training FLOPs at half the fp32 matmul rate measured for
``--precision``) is at least :data:`AUTO_MIN_SECONDS`. Otherwise it trains eagerly and says
why in one line. ``"on"`` compiles whenever inductor can work and is an error where it
cannot; ``"off"`` never compiles.

Only the trunk (embedding, blocks, final norm) is compiled, as a separate callable the
training step uses; the modules themselves stay eager, so checkpoints hold plain parameter
names (no ``_orig_mod.``), and the bi-level hypergradient's ``torch.func`` transforms and
the evaluation run on the eager modules. Compiled code is deterministic on the CPU, so a
compiled run resumed from a checkpoint is bit-identical to an uninterrupted compiled run.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

import torch

from .errors import MinidmlError

AUTO_MIN_SECONDS = 600.0  # compiling takes ~0.5-1.5 min and gains ~25%: worth it past 10 min
MODES = ("auto", "on", "off")


def inductor_available(device: torch.device) -> tuple[bool, str]:
    """(whether inductor can compile for ``device``, why not)."""
    if device.type == "cpu":
        try:
            from torch._inductor import config as inductor_config

            cxx = inductor_config.cpp.cxx[0] or "g++"
        except Exception:  # noqa: BLE001 - any failure means: cannot tell, so no
            return False, "torch._inductor is not importable"
        if shutil.which(cxx) is None and shutil.which("g++") is None:
            return False, "no C++ compiler (g++) on the PATH"
        return True, ""
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return False, "Triton is not installed"
        return (True, "") if has_triton() else (False, "Triton is not installed")
    return False, f"inductor does not compile for {device.type}"


def estimated_seconds(flops: float, precision: Mapping[str, Any]) -> float | None:
    """Eager training time at half the fp32 matmul rate that ``precision`` measured (the
    head's matmul), or None when nothing was measured."""
    head = precision.get("shapes", {}).get("head")
    if not head or not head.get("fp32_seconds"):
        return None
    m, k, n = head["mnk"]
    rate = 2.0 * m * k * n / head["fp32_seconds"]
    return flops / (0.5 * rate)


def decide(mode: str, device: torch.device, flops: float, precision: Mapping[str, Any]
           ) -> tuple[bool, str]:
    """(compile or not, the line that says why)."""
    if mode not in MODES:
        raise MinidmlError(f"--compile {mode!r}: choose auto, on or off")
    if mode == "off":
        return False, "compile: off"
    ok, why = inductor_available(device)
    if not ok:
        if mode == "on":
            raise MinidmlError(f"--compile on: torch.compile cannot work on {device} ({why}); "
                               "use --compile off or auto")
        return False, f"compile: off (auto: {why})"
    if mode == "on":
        return True, "compile: on"
    seconds = estimated_seconds(flops, precision)
    if seconds is None:
        return False, "compile: off (auto: no matmul rate was measured to size the run)"
    if seconds < AUTO_MIN_SECONDS:
        return False, (f"compile: off (auto: the run should take ~{seconds / 60:.0f} min "
                       f"eager, under the {AUTO_MIN_SECONDS / 60:.0f} min that repays "
                       "compiling; --compile on forces it)")
    return True, f"compile: on (auto: the run should take ~{seconds / 60:.0f} min eager)"
