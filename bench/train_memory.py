"""Peak memory of training: a few steps of ``minidml train`` in a fresh process, per path.

``minidml train CORPUS --students 4 --steps 3`` with the default shapes (4 layers × 256,
4 heads), context (256) and batch (32), mode ``wml``, at ``--vocab-size 2000`` and ``16384``,
each in a fresh subprocess whose peak resident memory (its ``ru_maxrss``, read by a wrapper
process that waits for it alone) is recorded. ``outer_every = 2`` makes the second step an
outer step (the bi-level ω update: the held-out forward and backward pass and the peer-KL
JVPs), so its memory counts as well as the inner steps':

* ``logits``: the step that materialises every student's logits (``head_loss = "logits"``,
  set through a ``--config`` file): K×N×V logits, their softmaxes and gradients;
* ``hidden``: the default step, the loss from hidden states (:mod:`minidml.fused_linear`);
* ``hidden_compiled``: the same with ``compile = "on"`` (a 3-step run's ``auto`` stays
  eager): what inductor's rematerialisation of the trunks' activations saves, compiling
  included.

Corpus: ``childes.txt.xz`` and ``simple_wiki.txt.xz`` from the shared BabyLM snippets (the
token file is memory-mapped, so the corpus barely matters). Each vocabulary's tokenizer and
token file are made once, by an untimed first run, and reused from the same cache.

Targets (full CPU run): at 16,384 pieces the hidden path's peak ≤ 1/2 of the logits path's,
and its growth from 2,000 to 16,384 pieces ≤ 0.5 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "train_memory"
FULL = dict(vocabs=(2000, 16384), steps=3, students=4, batch_size=32, context=256,
            files=("childes.txt.xz", "simple_wiki.txt.xz"))
QUICK = dict(vocabs=(500, 1000), steps=2, students=2, batch_size=4, context=32,
             files=("switchboard.txt.xz",))
OUTER = "outer_every = 2\n"  # step 2 is an outer step: its memory counts too
PATHS = {"logits": OUTER + 'head_loss = "logits"\n', "hidden": OUTER + 'head_loss = "hidden"\n',
         "hidden_compiled": OUTER + 'head_loss = "hidden"\ncompile = "on"\n'}
GB = 1e9


def _train(corpus: list[Path], out: Path, vocab: int, path: str, s: dict[str, Any],
           env: dict[str, str]) -> int:
    """Peak RSS (bytes) of one ``minidml train`` process."""
    config = out.with_suffix(".toml")
    config.write_text(PATHS[path])
    cmd = [sys.executable, "-m", "minidml", "train", *map(str, corpus), "--out", str(out),
           "--students", str(s["students"]), "--vocab-size", str(vocab), "--steps",
           str(s["steps"]), "--batch-size", str(s["batch_size"]), "--context",
           str(s["context"]), "--eval-every", "1000", "--save-every", "1000", "--quiet",
           "--config", str(config), "--device", "cpu"]
    # a wrapper process waits for the run alone, so its children's peak is the run's own
    done = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, *cmd], env=env,
                          capture_output=True, text=True, cwd=common.REPO_ROOT)
    if done.returncode != 0:
        raise common.BenchError(f"minidml train failed: {done.stderr.strip()[-500:]}")
    return int(done.stdout.strip().splitlines()[-1]) * 1024  # ru_maxrss is in KiB on Linux


_PEAK_OF_CHILD = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    device = common.resolve_device("cpu")
    result = common.envelope(NAME, device, args.quick)
    result["settings"] = {**s, "mode": "wml", "outer_every": 2,
                          "shape": "4 layers x 256, 4 heads (default)"}
    root = common.data_dir() / "babylm-2024-100M-snippets"
    corpus = [root / f for f in s["files"]]
    peaks: dict[str, dict[str, int]] = {p: {} for p in PATHS}
    with common.temp_dir(NAME) as tmp:
        env = {**os.environ, "MINIDML_CACHE_DIR": str(tmp / "cache")}
        for vocab in s["vocabs"]:
            _train(corpus, tmp / f"warm-{vocab}", vocab, "hidden", s, env)  # caches
        for vocab, path in ((v, p) for v in s["vocabs"] for p in PATHS):
            peaks[path][str(vocab)] = _train(corpus, tmp / f"{path}-{vocab}", vocab, path,
                                             s, env)
            common.log(f"[{NAME}] {path} vocab {vocab}: peak "
                       f"{peaks[path][str(vocab)] / GB:.2f} GB")
    small, large = (str(v) for v in s["vocabs"])
    result["peak_rss_bytes"] = peaks
    result["ratios"] = {
        "hidden_over_logits_at_large_vocab": peaks["hidden"][large] / peaks["logits"][large],
        "growth_logits_gb": (peaks["logits"][large] - peaks["logits"][small]) / GB,
        "growth_hidden_gb": (peaks["hidden"][large] - peaks["hidden"][small]) / GB,
        "compiled_over_logits_at_large_vocab":
            peaks["hidden_compiled"][large] / peaks["logits"][large],
    }
    r = result["ratios"]
    result["targets"] = {
        "half_at_large_vocab": common.target(r["hidden_over_logits_at_large_vocab"], 0.5, True),
        "growth_gb": common.target(r["growth_hidden_gb"], 0.5, True),
    }
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    p, r, s = result["peak_rss_bytes"], result["ratios"], result["settings"]
    small, large = (str(v) for v in s["vocabs"])
    return "\n".join([
        f"train_memory (peak RSS of {s['steps']} steps, K={s['students']}, batch "
        f"{s['batch_size']} x {s['context']}{', QUICK' if result['quick'] else ''})",
        f"  vocab {small}: logits {p['logits'][small] / GB:.2f} GB, hidden "
        f"{p['hidden'][small] / GB:.2f} GB",
        f"  vocab {large}: logits {p['logits'][large] / GB:.2f} GB, hidden "
        f"{p['hidden'][large] / GB:.2f} GB -> ratio {r['hidden_over_logits_at_large_vocab']:.2f}"
        " (target <= 0.5)",
        f"  compiled trunks (hidden): {p['hidden_compiled'][small] / GB:.2f} GB at {small}, "
        f"{p['hidden_compiled'][large] / GB:.2f} GB at {large} -> ratio "
        f"{r['compiled_over_logits_at_large_vocab']:.2f}",
        f"  growth {small} -> {large}: logits {r['growth_logits_gb']:.2f} GB, hidden "
        f"{r['growth_hidden_gb']:.2f} GB (target <= 0.5)",
    ])


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
