"""Shared plumbing of the benchmarks: options, data, devices, timing, machine record, results.

Timing is ``torch.utils.benchmark``'s (``Timer``, ``Measurement``, ``Compare``) and the
machine record ``torch.utils.collect_env``'s. Added here is what they do not give: every
measurement interleaved with its baseline in rounds of rotating order, with how busy the
rest of the machine was meanwhile; the steps the benchmarks compare; peak memory of fresh
processes; and the JSON file, written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import Compare, Measurement, Timer
from torch.utils.collect_env import get_env_info

from minidml._io import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


class BenchError(RuntimeError):
    """A benchmark cannot run as asked (missing data, unavailable device, ...)."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (a smoke run: seconds to two minutes each; the figures "
                             "mean little)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where <name>.json goes (default {RESULTS_DIR})")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data, devices
def data_dir() -> Path:
    """``$MINIDML_DATA_DIR`` (which must then exist), else ``../shared/data``."""
    env = os.environ.get("MINIDML_DATA_DIR")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise BenchError(f"{path}: shared data not found; set MINIDML_DATA_DIR to the folder "
                         "holding babylm-2024-100M-snippets/ and blimp/")
    return path


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards (never under the shared data)."""
    with tempfile.TemporaryDirectory(prefix=f"minidml-bench-{prefix}-") as d:
        yield Path(d)


def ensure_cache_env() -> None:
    """Token caches go to a temporary directory unless ``MINIDML_CACHE_DIR`` says otherwise."""
    if not os.environ.get("MINIDML_CACHE_DIR"):
        os.environ["MINIDML_CACHE_DIR"] = tempfile.mkdtemp(prefix="minidml-bench-cache-")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {name}: choose auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {name}: CUDA is not available here; use --device cpu")
    return dev


def corpus_lines(names: Sequence[str], per_file: int) -> list[str]:
    """The first ``per_file`` lines of each named shared training file (``childes``, ...),
    or of every one when ``names`` is empty."""
    import lzma

    folder = data_dir() / "babylm-2024-100M-snippets"
    paths = [folder / f"{n}.txt.xz" for n in names] or sorted(folder.glob("*.txt.xz"))
    lines: list[str] = []
    for path in paths:
        if not path.exists():
            raise BenchError(f"{path}: training text not found")
        with lzma.open(path, "rt", encoding="utf-8") as f:
            lines += [ln.rstrip("\n") for ln, _ in zip(f, range(per_file), strict=False)]
    return lines


def random_student(lines: Sequence[str], vocab_size: int, shape: tuple[int, int, int],
                   device: torch.device):
    """A tokenizer trained on ``lines`` and a seeded, randomly initialised student of
    ``shape`` (layers, width, heads) over it, in eval mode: what the scoring benchmarks time
    (speed does not depend on the weights)."""
    from minidml import Student, StudentConfig, Tokenizer

    tok = Tokenizer.train(list(lines), vocab_size=vocab_size)
    n_layers, d_model, n_heads = shape
    torch.manual_seed(0)
    student = Student(StudentConfig(vocab_size=tok.vocab_size, n_layers=n_layers,
                                    d_model=d_model, n_heads=n_heads, context=128)).to(device)
    return tok, student.eval()


# ----------------------------------------------------------------------------- what is timed
def random_batches(vocab: int, context: int, batch: int, seed: int = 0):
    """``minidml.data.Batches`` over random token ids (4.. vocab; 0-3 are special)."""
    from minidml.data import Batches

    tokens = np.random.default_rng(seed).integers(4, vocab, size=1 << 21, dtype=np.uint16)
    return Batches(tokens, context, batch, seed=seed)


def trainer(shapes: Sequence[Any], vocab: int, context: int, batch: int,
            device: torch.device | str, comm: Any = None, **settings: Any):
    """A :class:`minidml.trainer.Trainer` of these student shapes on random tokens."""
    from minidml import Student, TrainConfig
    from minidml.rundir import student_configs
    from minidml.trainer import Trainer

    cfg = TrainConfig(**{"steps": 200_000, **settings}, students=tuple(shapes),
                      context=context, batch_size=batch, device=str(device))
    torch.manual_seed(0)
    students = [Student(c) for c in student_configs(cfg, vocab)]
    return Trainer(cfg, students, random_batches(vocab, context, batch), comm=comm)


def logits_step(shapes: Sequence[Any], vocab: int, context: int, batch: int,
                device: torch.device, alpha: float, outer_every: int | None = None
                ) -> tuple[Callable[[], None], list[Any]]:
    """The baseline a training step is measured against, the step with materialised logits:
    every student's logits, the plain pairwise mutual loss (:func:`minidml.losses.mutual_loss`:
    ``F.cross_entropy`` and ``mutual_kl_reference``), one backward, an AdamW step per student
    (lr 1e-3); eager, fp32. Every ``outer_every`` steps, before the AdamW steps, ω takes a
    mirror step along the exact hypergradient computed from those logits and a held-out batch
    as large (:func:`minidml.bilevel.hypergradient`), as the trainer's logits path did.
    Returns the step and the students."""
    from minidml import Student, TrainConfig
    from minidml.bilevel import hypergradient, mirror_step
    from minidml.losses import mutual_loss
    from minidml.rundir import student_configs

    cfg = TrainConfig(students=tuple(shapes), context=context)
    torch.manual_seed(0)
    students = [Student(c).to(device).train() for c in student_configs(cfg, vocab)]
    opts = [torch.optim.AdamW(s.parameters(), lr=1e-3) for s in students]
    omega = torch.full((len(students),), 1.0 / len(students), device=device)
    batches, done = random_batches(vocab, context, batch), [0]

    def step() -> None:
        nonlocal omega
        x, y = (t.to(device) for t in batches.train(done[0]))
        done[0] += 1
        logits = [s(x).flatten(0, 1) for s in students]
        mutual_loss(logits, y.flatten(), omega, alpha).total.backward()
        if outer_every and done[0] % outer_every == 0:
            x_out, y_out = (t.to(device) for t in batches.holdout(done[0] // outer_every - 1))
            omega = mirror_step(omega, hypergradient(
                students, omega, [x], x_out, y_out, lr=1e-3, alpha=alpha, temperature=1.0,
                logits=[[z.detach() for z in logits]]).grad, cfg.outer_lr)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step, students


# ----------------------------------------------------------------------------- timing
def timer(fn: Callable[[], Any], name: str, label: str = "") -> Timer:
    """A ``Timer`` of ``fn()`` with this process's threads (``Timer`` defaults to one)."""
    return Timer("fn()", globals={"fn": fn}, label=label, sub_label=name,
                 description="seconds per call", num_threads=torch.get_num_threads())


def matmul_probes(device: torch.device, shapes: Sequence[tuple[int, int, int]],
                  dtype: torch.dtype = torch.float32, min_run_time: float = 0.1
                  ) -> dict[str, Callable[[], Measurement]]:
    """Measurements of ``torch.mm`` [m,k]×[k,n], one per shape, to interleave with what they
    scale (``interleave(..., probes=...)``; :func:`matmul_peak` reads them)."""
    out = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        name = f"mm {dtype} {m}x{k}x{n}"
        t = timer(partial(torch.mm, a, b), name)
        out[name] = partial(t.blocked_autorange, min_run_time=min_run_time)
    return out


def matmul_peak(measured: dict[str, Measurement], dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of the matmul probes of ``dtype`` among ``measured`` (interference
    from other processes only ever adds time, so the fastest block counts)."""
    best = 0.0
    for name, m in measured.items():
        if name.startswith(f"mm {dtype} "):
            a, b, c = map(int, name.split()[-1].split("x"))
            best = max(best, 2.0 * a * b * c / min(m.times))
    return best


def _jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (steal time counts as busy)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(vals) - vals[3] - vals[4], sum(vals)  # less idle and iowait


def busy_others(fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """``fn()``, and the share of the machine's CPUs that other processes kept busy
    meanwhile (0.5: another process held one of two cores throughout)."""
    j0, c0, t0 = _jiffies(), time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu, j1 = time.perf_counter() - t0, time.process_time() - c0, _jiffies()
    if j0 is None or j1 is None or j1[1] <= j0[1]:
        return out, None
    busy = (j1[0] - j0[0]) / (j1[1] - j0[1])
    return out, min(1.0, max(0.0, busy - cpu / (wall * (os.cpu_count() or 1))))


def interleave(fns: dict[str, Callable[[], Any]], rounds: int, label: str, *,
               number: int | None = None, min_run_time: float = 0.0,
               probes: dict[str, Callable[[], Measurement]] | None = None
               ) -> dict[str, Measurement]:
    """Time each of ``fns`` once per round (``Timer.timeit(number)``, else
    ``Timer.blocked_autorange(min_run_time)``: one untimed call, then calls until
    ``min_run_time``), with the ``probes`` in between, in an order rotated by one per round,
    so a machine that gets busier or quieter affects all alike. Returns each one's
    measurements merged (``Measurement.merge``: seconds per call), its ``metadata`` holding
    the share of the CPUs other processes used during each of its measurements."""
    timers = {n: timer(fn, n, label) for n, fn in fns.items()}
    measure = {n: (lambda t=t: t.timeit(number)) if number else
               (lambda t=t: t.blocked_autorange(min_run_time=min_run_time))
               for n, t in timers.items()}
    measure.update(probes or {})
    runs: dict[str, list[Measurement]] = {n: [] for n in measure}
    others: dict[str, list[float | None]] = {n: [] for n in measure}
    names = list(measure)
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            m, busy = busy_others(measure[n])
            runs[n].append(m)
            others[n].append(busy)
        log(f"[{label}] round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {runs[n][-1].median:.4g}s" for n in fns))
    merged = {n: Measurement.merge(runs[n])[0] for n in names}
    for n, m in merged.items():
        m.metadata = {"others_cpu_share": others[n]}
    return merged


def stats(m: Measurement) -> dict[str, Any]:
    """A measurement for the JSON file: seconds per call, and how busy the machine was."""
    return {"median": m.median, "min": min(m.times), "iqr": m.iqr, "n": len(m.times),
            "times": m.times, "others_cpu_share": (m.metadata or {}).get("others_cpu_share")}


def table(measured: dict[str, Measurement]) -> str:
    return str(Compare(list(measured.values())))


# ----------------------------------------------------------------------------- memory
def proc_status(field: str = "VmHWM") -> int | None:
    """A memory figure of this process, in bytes: by default its peak resident memory."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def run_child(module: str, spec: dict[str, Any], env: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """Run ``python -m <module> --child SPEC`` in a fresh process; what it printed as JSON."""
    proc = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(spec)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{module} child {spec} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(fn: Callable[[dict[str, Any]], Any]) -> None:
    """``python -m bench.<name> --child SPEC``: a measuring subprocess; prints ``fn(spec)``."""
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit(f"{sys.argv[0]}: internal; run the benchmarks with python -m bench")
    out = fn(json.loads(sys.argv[2]))
    if out is not None:
        print(json.dumps(out))


# ----------------------------------------------------------------------------- results
def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(device: torch.device) -> dict[str, Any]:
    """``torch.utils.collect_env``'s record, and what it leaves out: the device, threads,
    thread-related environment, and which library code was measured."""
    h = hashlib.sha256()
    for f in sorted((REPO_ROOT / "minidml").rglob("*.py")):
        h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes())
    dirty = _git("status", "--porcelain", "--", "minidml")
    return {**get_env_info()._asdict(), "device": str(device),
            "cpu_affinity": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count()),  # (macOS has no affinity)
            "torch_threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "LD_PRELOAD", "MALLOC_CONF") if k in os.environ},
            "git_commit": _git("rev-parse", "HEAD"),
            "minidml_uncommitted_changes": None if dirty is None else bool(dirty),
            "minidml_sources_sha256": h.hexdigest()[:16]}


def envelope(name: str, device: torch.device, quick: bool) -> dict[str, Any]:
    """The head of every result file; the benchmark fills in the rest."""
    return {"benchmark": name, "quick": quick,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(device)}


def heading(result: dict[str, Any]) -> str:
    """A report's first line: the benchmark, its device, and whether it ran ``--quick``."""
    return (f"{result['benchmark']} ({result['machine']['device']}"
            f"{', QUICK' if result['quick'] else ''})")


def target(value: float, limit: float, at_most: bool, applies: bool = True) -> dict[str, Any]:
    """A target's record: the value, the limit, whether it is met (value ≤ limit when
    ``at_most``, else ≥) and whether it applies to this run (not to ``--quick`` ones)."""
    return {"target": f"{'<=' if at_most else '>='} {limit:g}", "value": value,
            "met": value <= limit if at_most else value >= limit, "applies": applies}


def targets_line(targets: dict[str, dict[str, Any]]) -> str:
    return "  targets: " + "; ".join(
        f"{k} {t['value']:.3g} {t['target']} {'met' if t['met'] else 'NOT met'}"
        f"{'' if t['applies'] else ' (n/a)'}" for k, t in targets.items())


def write_result(results_dir: Path, name: str, result: dict[str, Any]) -> Path:
    """``<results_dir>/<name>.json``, atomically (a temporary file, then ``os.replace``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    write_json(path, result)
    return path
