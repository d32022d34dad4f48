"""Shared plumbing of the benchmarks: options, paths, devices, timing, machine info, results.

Every benchmark writes one JSON file, ``bench/results/<name>.json`` (atomically: a temporary
file beside it, then ``os.replace``), holding the machine it ran on, its settings, the raw
timings and the ratios against a baseline measured in the same run on the same device.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

from minidml._io import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


class BenchError(RuntimeError):
    """A benchmark cannot run as asked (missing data, unavailable device, ...)."""


# ----------------------------------------------------------------------------- options
def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that finish in seconds (a smoke run; the figures "
                             "mean little)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where <name>.json goes (default {RESULTS_DIR})")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="on a shared machine: before each timed round, wait up to this "
                             "long for other processes to leave the CPUs idle (default 0)")


# ----------------------------------------------------------------------------- paths
def data_dir() -> Path:
    """``$MINIDML_DATA_DIR``, else ``../shared/data`` beside the repository.

    When the variable is set the directory must exist: a typo must not silently fall back.
    """
    env = os.environ.get("MINIDML_DATA_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise BenchError(f"MINIDML_DATA_DIR={env}: no such directory; point it at the "
                             "shared data (the folder holding README.md and "
                             "babylm-2024-100M-snippets/) or unset it")
        return path
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise BenchError(f"{path}: shared data not found; set MINIDML_DATA_DIR to its location")
    return path


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards (never under the shared data)."""
    with tempfile.TemporaryDirectory(prefix=f"minidml-bench-{prefix}-") as d:
        yield Path(d)


def ensure_cache_env() -> None:
    """Point ``MINIDML_CACHE_DIR`` at a temporary directory if nothing set it, so that no
    library default ever writes token caches into the home directory or the shared data."""
    if not os.environ.get("MINIDML_CACHE_DIR"):
        os.environ["MINIDML_CACHE_DIR"] = tempfile.mkdtemp(prefix="minidml-bench-cache-")


# ----------------------------------------------------------------------------- devices
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {name}: CUDA is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {name}: choose auto, cpu, cuda or cuda:N")
    return dev


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- timing
def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    t = os.times()
    return t.user + t.system


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # CPU seconds of this process, all threads
    others: float | None  # share of the machine's CPUs busy with other processes, 0..1
    minor_faults: int = 0  # page faults of this process (first touches of fresh memory)


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (steal time counts as busy)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(vals) - vals[3] - vals[4], sum(vals)  # minus idle and iowait


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, synchronised on both sides."""
    tm = measure(fn, device)
    return tm.wall, tm.cpu


def measure(fn: Callable[[], Any], device: torch.device) -> Timing:
    """One call, synchronised on both sides: wall and CPU time, and how busy the rest of
    the machine was meanwhile (other processes compete for the same cores)."""
    sync(device)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    j0, c0, t0 = _busy_jiffies(), cpu_seconds(), time.perf_counter()
    fn()
    sync(device)
    wall, cpu, j1 = time.perf_counter() - t0, cpu_seconds() - c0, _busy_jiffies()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    others = None
    if j0 is not None and j1 is not None and j1[1] > j0[1]:
        busy = (j1[0] - j0[0]) / (j1[1] - j0[1])  # busy share of all CPUs, all processes
        mine = cpu / (wall * (os.cpu_count() or 1))
        others = min(1.0, max(0.0, busy - mine))
    return Timing(wall, cpu, others, faults)


def others_busy(window: float = 1.0) -> float | None:
    """Share of the machine's CPUs that other processes kept busy over ``window`` seconds."""
    return measure(lambda: time.sleep(window), torch.device("cpu")).others


def wait_for_idle(max_seconds: float, threshold: float = 0.1, window: float = 1.0) -> float:
    """Wait (at most ``max_seconds``) until other processes use < ``threshold`` of the CPUs
    over ``window`` seconds; the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_seconds:
        busy = others_busy(window)
        if busy is None or busy < threshold:
            break
    return time.perf_counter() - t0


def summary(xs: Sequence[float]) -> dict[str, float]:
    xs = list(xs)
    return {"n": len(xs), "min": min(xs), "median": statistics.median(xs),
            "mean": statistics.fmean(xs), "max": max(xs)}


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def source_state() -> dict[str, Any]:
    """Which library code was measured: commit, uncommitted changes, hash of minidml/*.py."""
    h = hashlib.sha256()
    for f in sorted((REPO_ROOT / "minidml").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    dirty = _git("status", "--porcelain", "--", "minidml")
    return {"git_commit": _git("rev-parse", "HEAD"),
            "minidml_uncommitted_changes": None if dirty is None else bool(dirty),
            "minidml_sources_sha256": h.hexdigest()[:16]}


def machine_info(device: torch.device) -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "loadavg_at_start": loadavg(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD",
                                            "MALLOC_CONF") if k in os.environ},
        **source_state(),
    }
    with contextlib.suppress(ImportError):
        import sentencepiece

        info["sentencepiece_version"] = sentencepiece.__version__
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def matmul_peak(device: torch.device, shapes: Sequence[tuple[int, int, int]],
                repeats: int = 5) -> dict[str, float]:
    """Best fp32 FLOP/s of ``torch.mm`` over ``repeats`` calls at each [m,k]×[k,n] shape."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=g).to(device)
        b = torch.randn(k, n, generator=g).to(device)
        best = min(timed(lambda a=a, b=b: a @ b, device)[0] for _ in range(repeats))
        out[f"{m}x{k}x{n}"] = 2.0 * m * k * n / best
    return out


# ----------------------------------------------------------------------------- results
def write_result(results_dir: Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically (temporary file + ``os.replace``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    write_json(path, result)
    return path


def standalone(name: str, doc: str | None, run: Callable[[argparse.Namespace], dict[str, Any]],
               report: Callable[[dict[str, Any]], str], argv: list[str] | None = None,
               extra_options: Callable[[argparse.ArgumentParser], None] | None = None,
               child: Callable[[argparse.Namespace], dict[str, Any]] | None = None) -> int:
    """``python -m bench.<name>``: run one benchmark, write its JSON, print its report.

    ``extra_options`` adds the benchmark's own options; with ``child``, a ``--child`` option
    makes the process a measuring subprocess that prints ``child(args)`` as JSON instead.
    """
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser)
    if extra_options is not None:
        extra_options(parser)
    args = parser.parse_args(argv)
    if child is not None and getattr(args, "child", None) is not None:
        print(json.dumps(child(args)))
        return 0
    try:
        result = run(args)
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    path = write_result(args.results_dir, name, result)
    print(report(result))
    print(f"  -> {path}")
    return 0


def envelope(name: str, device: torch.device, quick: bool) -> dict[str, Any]:
    """The common head of every result file; the benchmark fills in the rest."""
    return {"benchmark": name, "quick": quick,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device)}


def target(value: float, limit: float, at_most: bool) -> dict[str, Any]:
    """A target's record: the measured value, the limit, and whether it is met (value ≤
    limit when ``at_most``, else value ≥ limit)."""
    return {"target": limit, "value": value,
            "met": value <= limit if at_most else value >= limit}


def finish(result: dict[str, Any], t_start: float) -> None:
    result["machine"]["loadavg_at_end"] = loadavg()
    result["wall_seconds"] = round(time.perf_counter() - t_start, 2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
