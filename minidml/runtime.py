"""Where and how a run computes, decided once when it is set up and recorded in its
``config.json``: the device, the precision (bf16 only where it is measurably faster) and
whether the students' trunks are compiled.

**Device.** Which device a run trains and evaluates on.

**Precision.** Which precision a run trains in: bf16 autocast only where it is measurably faster.

``precision="auto"`` (the default) decides by capabilities first, so that the same command
decides alike on a busy machine: a CPU whose kernel reports no bf16 matrix units (no AMX-
BF16 or AVX512-BF16; such CPUs run bf16 matmuls about 100× slower) trains in float32, and a
CUDA device that supports bf16 trains in bf16, neither timing anything. Elsewhere (a CPU
with those units, MPS, a kernel that does not say) it times a bfloat16 and a float32 matmul
at the run's own shapes (the widest student's projection, [128, d] × [d, 4d], and the head,
[128, d] × [d, min(V, 8192)]) and takes bf16 only if it is faster at both by
:data:`BF16_MARGIN`, a margin wider than load makes timings wander. The reason is recorded.
An explicit ``"bf16"`` that measures slower still runs, with one warning line giving the
ratio; ``"bf16"`` on a device with no bf16 support at all is an error. The choice and the
timings are recorded in the run's ``config.json`` and kept on resume, so a resumed run
computes exactly as it started.

**Compiling.** Whether a run compiles its students' trunks with ``torch.compile`` (inductor).

``compile="auto"`` (the default) compiles when inductor can work on the device — a C++
compiler on the CPU, Triton on CUDA — and the run is long enough to repay the compile time:
its time budget, or its training FLOPs at the device type's nominal eager rate
(:data:`NOMINAL_EAGER_FLOPS`), is at least :data:`AUTO_MIN_SECONDS`. Nothing is timed, so
the same command decides alike on an idle and a busy machine. Otherwise it trains eagerly
and says why in one line. ``"on"`` compiles whenever inductor can work and is an error where it
cannot; ``"off"`` never compiles.

Only the trunk (embedding, blocks, final norm) is compiled, as a separate callable the
training step uses; the modules themselves stay eager, so checkpoints hold plain parameter
names (no ``_orig_mod.``), and the bi-level hypergradient's ``torch.func`` transforms and
the evaluation run on the eager modules. Compiled code is deterministic on the CPU, so a
compiled run resumed from a checkpoint is bit-identical to an uninterrupted compiled run.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import MinidmlError
from .throughput import best_seconds

# ----------------------------------------------------------------------------- device
DEVICES = "auto, cpu, cuda, cuda:N or mps"  # what --device takes
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]*))?")


def device_problem(name: str) -> str | None:
    """The error line for a ``--device`` that is none of :data:`DEVICES`, or None. Only the
    spelling is checked, not this machine (a run's ``config.json`` from another machine is
    read here): :func:`resolve_device` checks that."""
    if isinstance(name, str) and _DEVICE.fullmatch(name):
        return None
    shown = name if isinstance(name, str) and name.isprintable() else repr(name)
    return f"--device {shown}: not a device; use {DEVICES}"


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (one of :data:`DEVICES`) means on this machine: ``auto`` is CUDA
    when present, then Apple's MPS, else the CPU. Under ``torchrun`` every CUDA device means
    the rank's own GPU, ``cuda:LOCAL_RANK``. A name that is not a device, or a device this
    machine lacks, is a :class:`MinidmlError`."""
    why = device_problem(name)
    if why:
        raise MinidmlError(why)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MinidmlError(f"--device {name}: Apple's MPS is not available here; use --device "
                           "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MinidmlError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # a GPU per rank
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        have = "one CUDA device, cuda:0" if n == 1 else f"{n} CUDA devices, cuda:0 to cuda:{n - 1}"
        raise MinidmlError(f"--device {name}: this machine has {have}; choose one of them, or "
                           "cuda")
    return device


# ----------------------------------------------------------------------------- precision
BF16_MARGIN = 1.5  # where timed: bf16 must be this much faster, beyond what load can fake
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of bf16 matrix units
_ROWS = 128  # rows of the timed matmuls: where bf16 is slow, under a second
_MAX_COLUMNS = 8192


def bf16_supported(device: torch.device) -> bool:
    """Whether the device can run bf16 autocast at all (it may still be slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type in ("cpu", "mps")


def cpu_bf16_units() -> bool | None:
    """Whether this CPU has bf16 matrix units (AMX-BF16 or AVX512-BF16), from the kernel's
    CPU flags; None where the kernel does not say (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in CPU_BF16_FLAGS)
    except OSError:
        return None
    return None


def measure_precision(device: torch.device, widths: Sequence[int], vocab: int, repeats: int = 3,
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
        t32 = best_seconds(functools.partial(operator.matmul, a32, b32), device, repeats)
        out["shapes"][name] = {"mnk": [m, k, n], "fp32_seconds": t32}
        if not bf16:
            continue
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        # where bf16 is many times slower, its first call says so: stop there
        t16 = best_seconds(functools.partial(operator.matmul, a16, b16), device, repeats,
                           enough=4 * t32)
        out["shapes"][name]["bf16_seconds"] = t16
        ratios.append(t16 / t32)
    if ratios:
        out["bf16_over_fp32_time"] = max(ratios)
    return out


def choose_precision(requested: str, device: torch.device, widths: Sequence[int], vocab: int
           ) -> tuple[str, dict[str, Any], str | None]:
    """(precision to run in, the record for config.json, a warning line or None)."""
    if requested not in ("auto", "fp32", "bf16"):
        raise MinidmlError(f"--precision {requested!r}: choose auto, fp32 or bf16")
    if requested == "fp32":
        return "fp32", {"requested": "fp32", "choice": "fp32",
                        **measure_precision(device, widths, vocab, bf16=False)}, None
    if not bf16_supported(device):
        if requested == "bf16":
            raise MinidmlError(f"--precision bf16: {device} has no bfloat16 support; use "
                               "--precision fp32 or auto")
        return "fp32", {"requested": "auto", "choice": "fp32",
                        "reason": f"{device} has no bfloat16 support",
                        **measure_precision(device, widths, vocab, bf16=False)}, None
    units = cpu_bf16_units() if device.type == "cpu" else None
    if requested == "auto" and units is False:  # capabilities first: nothing to time
        return "fp32", {"requested": "auto", "choice": "fp32",
                        "reason": "this CPU has no bf16 matrix units (no AMX or AVX512-BF16)",
                        **measure_precision(device, widths, vocab, bf16=False)}, None
    if requested == "auto" and device.type == "cuda":  # bf16 support means tensor cores
        return "bf16", {"requested": "auto", "choice": "bf16",
                        "reason": f"{device} supports bf16",
                        **measure_precision(device, widths, vocab, bf16=False)}, None
    timing = measure_precision(device, widths, vocab)
    ratio = timing["bf16_over_fp32_time"]
    if requested == "bf16":
        warning = None
        if ratio > 1:
            warning = (f"warning: --precision bf16 is {ratio:.1f}x slower than fp32 at this "
                       f"run's matmul shapes on {device} (no bf16 matrix units?); "
                       "--precision auto would use fp32")
        return "bf16", {"requested": "bf16", "choice": "bf16", **timing}, warning
    choice = "bf16" if ratio * BF16_MARGIN <= 1 else "fp32"
    return choice, {"requested": "auto", "choice": choice,
                    "reason": f"bf16 took {ratio:.2f}x fp32's time (bf16 needs "
                              f"{1 / BF16_MARGIN:.2f}x or less)", **timing}, None


# ----------------------------------------------------------------------------- compiling
AUTO_MIN_SECONDS = 600.0  # compiling takes ~0.5-1.5 min and gains ~25%: worth it past 10 min
COMPILE_MODES = ("auto", "on", "off")


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


# eager training FLOP/s that decide compile auto: nominal per device type, never measured,
# so that the same command decides alike on a busy machine (about half an idle 2-core AVX2
# CPU's fp32 matmul peak, a tenth of a tensor-core GPU's bf16 peak, an M-series GPU's)
NOMINAL_EAGER_FLOPS = {"cpu": 4.5e10, "cuda": 1e14, "mps": 3e12}


def estimated_seconds(flops: float, precision: Mapping[str, Any]) -> float | None:
    """Eager training time at half the fp32 matmul rate that ``precision`` measured (the
    head's matmul), or None when nothing was measured."""
    head = precision.get("shapes", {}).get("head")
    if not head or not head.get("fp32_seconds"):
        return None
    m, k, n = head["mnk"]
    rate = 2.0 * m * k * n / head["fp32_seconds"]
    return flops / (0.5 * rate)


def decide_compile(mode: str, device: torch.device, flops: float,
                   max_time: float | None = None) -> tuple[bool, str]:
    """(compile or not, the line that says why). ``auto`` judges the run's length by its
    time budget (``max_time``) or else by its training FLOPs at the device type's nominal
    eager rate (:data:`NOMINAL_EAGER_FLOPS`): nothing measured, so load cannot flip it."""
    if mode not in COMPILE_MODES:
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
    if max_time is not None:
        seconds, what = max_time, f"a {max_time / 60:.0f} min budget"
    else:
        rate = NOMINAL_EAGER_FLOPS.get(device.type, NOMINAL_EAGER_FLOPS["cpu"])
        seconds = flops / rate
        what = f"~{seconds / 60:.0f} min eager at a nominal {rate / 1e9:,.0f} GFLOP/s"
    if seconds < AUTO_MIN_SECONDS:
        return False, (f"compile: off (auto: {what}, under the {AUTO_MIN_SECONDS / 60:.0f} min "
                       "that repays compiling; --compile on forces it)")
    return True, f"compile: on (auto: {what})"
