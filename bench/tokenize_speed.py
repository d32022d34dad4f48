"""Tokenisation speed and memory of ``minidml.data.tokenize_corpus`` on the shared corpus.

* Setup (not timed in any ratio): train one :class:`minidml.tokenizer.Tokenizer` on a seeded
  sample of the corpus, and decompress the whole corpus into memory.
* Speed: words/s of ``tokenize_corpus(files, tok, cache_dir=<fresh temporary dir>)`` over
  the whole corpus (decompression, encoding, writing the token file) against raw
  sentencepiece encoding of the same lines already in memory
  (``tok._sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1)`` over batches of at
  most 8 MiB of text). The two alternate, ``reps`` times each; the best of each counts.
  A separate untimed pass checks that both give the same tokens and times the parts of the
  library's work (reading, fingerprinting, list-to-uint16 conversion).
* Memory: peak RSS (``VmHWM``) of a fresh subprocess that tokenises the whole corpus, one
  that tokenises a quarter of it (the 2 of the 7 files ``childes`` and ``mixed``, 24.8% of
  the words), and one that only imports and loads the tokenizer (the floor).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import common

NAME = "tokenize_speed"
CORPUS = "babylm-2024-100M-snippets"
QUARTER_FILES = ("childes.txt.xz", "mixed.txt.xz")
BATCH_BYTES = 8 << 20  # text per sentencepiece call in the baseline
TARGET_SPEED_RATIO = 0.8
TARGET_RSS_RATIO = 1.10

FULL = {"vocab_size": 16384, "train_pieces": 3000, "reps": 5, "train_steps": 10}
QUICK = {"vocab_size": 1024, "train_pieces": 500, "reps": 1, "quick_lines_per_file": 3,
         "train_steps": 2}


# ----------------------------------------------------------------------------- corpus
def corpus_files(quick: bool, scratch: Path) -> list[Path]:
    src = common.data_dir() / CORPUS
    files = sorted(src.glob("*.txt.xz"))
    if not files:
        raise common.BenchError(f"{src}: no *.txt.xz files; the shared data is incomplete")
    missing = [q for q in QUARTER_FILES if not (src / q).is_file()]
    if missing:
        raise common.BenchError(f"{src}: missing {', '.join(missing)}")
    if not quick:
        return files
    # a small corpus of the same kind (xz, same names): the first lines of every file
    out = []
    for f in files:
        with lzma.open(f, "rt", encoding="utf-8") as fin:
            head = [next(fin, "") for _ in range(QUICK["quick_lines_per_file"])]
        dest = scratch / f.name
        with lzma.open(dest, "wt", encoding="utf-8", preset=0) as fout:
            fout.writelines(head)
        out.append(dest)
    return out


def read_corpus(files: list[Path]) -> dict[str, list[str]]:
    """Non-blank lines of each file, as ``tokenize_corpus`` encodes them."""
    from minidml.data import read_lines

    return {f.name: [ln for ln in read_lines([f]) if ln.strip()] for f in files}


def batches(lines: list[str], max_bytes: int = BATCH_BYTES):
    batch, size = [], 0
    for ln in lines:
        batch.append(ln)
        size += len(ln)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ----------------------------------------------------------------------------- timing
def time_baseline(tok, lines: list[str]) -> tuple[float, int]:
    sp = tok._sp
    n = 0
    t0 = time.perf_counter()
    for batch in batches(lines):
        n += sum(map(len, sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1)))
    return time.perf_counter() - t0, n


def time_library(tok, files: list[Path]) -> tuple[float, int, str]:
    from minidml.data import tokenize_corpus

    with common.temp_dir("tokcache") as cache:
        t0 = time.perf_counter()
        tokens = tokenize_corpus(files, tok, cache_dir=cache)
        seconds = time.perf_counter() - t0
        digest = hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()
        n = len(tokens)
        del tokens
    return seconds, n, digest


def components(tok, files: list[Path], lines: list[str]) -> dict[str, Any]:
    """Untimed-in-the-ratio pass: the baseline's token digest, and the library's parts."""
    from minidml.data import fingerprint, read_lines

    t0 = time.perf_counter()
    for _ in read_lines(files):
        pass
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fingerprint(files)
    fp_s = time.perf_counter() - t0
    h = hashlib.sha256()
    convert_s = 0.0
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    for batch in batches(lines):
        ids = tok._sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1)
        t0 = time.perf_counter()
        parts = [np.asarray(x, dtype=dtype).tobytes() for x in ids]
        convert_s += time.perf_counter() - t0
        for p in parts:
            h.update(p)
    return {"read_lines_seconds": read_s, "fingerprint_seconds": fp_s,
            "lists_to_uint16_seconds": convert_s, "baseline_digest": h.hexdigest()}


# ----------------------------------------------------------------------------- memory
def vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside a fresh subprocess: load the tokenizer, maybe tokenise files; peak memory."""
    import resource

    from minidml.data import tokenize_corpus
    from minidml.tokenizer import Tokenizer

    tok = Tokenizer.load(spec["tokenizer"])
    before = vm_hwm_bytes()
    n, seconds = 0, 0.0
    if spec["files"]:
        t0 = time.perf_counter()
        n = len(tokenize_corpus([Path(f) for f in spec["files"]], tok,
                                cache_dir=spec["cache_dir"]))
        seconds = time.perf_counter() - t0
    if spec.get("train_steps"):  # then train on it: the token file is memory-mapped
        train_on(tokenize_corpus([Path(f) for f in spec["files"]], tok,
                                 cache_dir=spec["cache_dir"]), tok.vocab_size,
                 spec["train_steps"])
    out = {"vm_hwm_bytes": vm_hwm_bytes(), "vm_hwm_before_bytes": before, "tokens": n,
           "seconds": seconds}
    if out["vm_hwm_bytes"] is None:  # not Linux: ru_maxrss (which may include the parent's
        # footprint at fork on some systems, hence only a fallback); KiB on Linux, bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        out["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return out


def train_on(tokens: Any, vocab_size: int, steps: int) -> None:
    """A few WML steps of two small students (with an outer step) and an evaluation."""
    from minidml import Shape, Student, TrainConfig
    from minidml.data import Batches
    from minidml.rundir import student_configs
    from minidml.trainer import Trainer

    cfg = TrainConfig(students=(Shape(2, 128, 4), Shape(1, 192, 4)), mode="wml",
                      outer_every=max(1, steps // 2), context=128, batch_size=8, steps=steps,
                      device="cpu")
    batches = Batches(tokens, cfg.context, cfg.batch_size, seed=0)
    trainer = Trainer(cfg, [Student(c) for c in student_configs(cfg, vocab_size)], batches)
    for _ in range(steps):
        trainer.train_step()
    trainer.evaluate(max_tokens=16_384)


def run_child(tokenizer_path: Path, files: list[Path], train_steps: int = 0
              ) -> dict[str, Any]:
    with common.temp_dir("rsscache") as cache:
        spec = {"tokenizer": str(tokenizer_path), "files": [str(f) for f in files],
                "cache_dir": str(cache), "train_steps": train_steps}
        env = {**os.environ, "MINIDML_CACHE_DIR": str(cache)}
        proc = subprocess.run([sys.executable, "-m", "bench.tokenize_speed", "--child",
                               json.dumps(spec)], cwd=common.REPO_ROOT, env=env,
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise common.BenchError(f"memory child failed ({proc.returncode}): "
                                f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml.data import read_lines
    from minidml.tokenizer import Tokenizer

    t_start = time.perf_counter()
    common.ensure_cache_env()
    s = QUICK if args.quick else FULL
    device = common.resolve_device(args.device)  # tokenisation runs on the CPU regardless
    result = common.envelope(NAME, device, args.quick)
    result["machine"]["note"] = "tokenisation uses the CPU only; --device does not apply"
    with common.temp_dir("tok") as scratch:
        files = corpus_files(args.quick, scratch)
        quarter = [f for f in files if f.name in QUARTER_FILES]

        common.log(f"[{NAME}] setup: reading {len(files)} files, training a "
                   f"{s['vocab_size']}-piece tokenizer on {s['train_pieces']} sampled pieces")
        t0 = time.perf_counter()
        per_file = read_corpus(files)
        read_s = time.perf_counter() - t0
        lines = [ln for f in files for ln in per_file[f.name]]
        words = {name: sum(len(ln.split()) for ln in ls) for name, ls in per_file.items()}
        n_words = sum(words.values())
        quarter_words = sum(words[f.name] for f in quarter)
        t0 = time.perf_counter()
        tok = Tokenizer.train(read_lines(files), s["vocab_size"], seed=0,
                              input_sentence_size=s["train_pieces"])
        train_s = time.perf_counter() - t0
        tok_path = scratch / "tokenizer.model"
        tok.save(tok_path)

        result["settings"] = {
            **{k: v for k, v in s.items()},
            "corpus": str(files[0].parent) if not args.quick else
            f"first {s['quick_lines_per_file']} lines of each file of {CORPUS}",
            "files": [f.name for f in files],
            "words": n_words, "words_per_file": words, "lines": len(lines),
            "text_bytes": sum(len(ln.encode("utf-8")) for ln in lines),
            "tokenizer": {"vocab_size": tok.vocab_size, "type": "unigram",
                          "sha256": tok.sha256},
            "baseline": "tok._sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1) "
                        f"over batches of <= {BATCH_BYTES} bytes of the in-memory lines",
            "quarter": {"files": list(QUARTER_FILES), "words": quarter_words,
                        "fraction_of_words": quarter_words / n_words},
            "setup_seconds": {"decompress_into_memory": read_s, "tokenizer_training": train_s},
        }

        common.log(f"[{NAME}] timing: {n_words:,} words, {s['reps']} alternating reps")
        base_t, lib_t, others = [], [], []
        cpu = torch.device("cpu")
        base_n = lib_n = 0
        lib_digest = ""
        wait_idle = getattr(args, "wait_idle", 0.0)
        waited = []
        for _ in range(s["reps"]):
            waited.append(common.wait_for_idle(wait_idle) if wait_idle > 0 else 0.0)
            box: dict[str, Any] = {}
            tm = common.measure(lambda box=box: box.update(b=time_baseline(tok, lines)), cpu)
            (t, base_n), others_b = box["b"], tm.others
            base_t.append(t)
            tm = common.measure(lambda box=box: box.update(l=time_library(tok, files)), cpu)
            (t, lib_n, lib_digest), others_l = box["l"], tm.others
            lib_t.append(t)
            others.append({"baseline": others_b, "library": others_l})
        parts = components(tok, files, lines)
        speed = {
            "baseline_seconds": base_t, "library_seconds": lib_t,
            "baseline_words_per_s": n_words / min(base_t),
            "library_words_per_s": n_words / min(lib_t),
            "ratio_library_over_baseline": min(base_t) / min(lib_t),
            "ratio_per_rep_median": statistics.median(b / t for b, t in
                                                      zip(base_t, lib_t, strict=True)),
            "tokens": {"baseline": base_n, "library": lib_n},
            "tokens_identical": lib_n == base_n and lib_digest == parts.pop("baseline_digest"),
            "library_parts_seconds": parts,
            "others_cpu_share": others,
            "waited_for_idle_seconds": waited,
        }
        speed["library_parts_seconds"]["encode_only_best"] = min(base_t)
        result["speed"] = speed

        common.log(f"[{NAME}] memory: peak RSS of fresh subprocesses")
        steps = s["train_steps"]
        mem = {"none": run_child(tok_path, []), "quarter": run_child(tok_path, quarter),
               "whole": run_child(tok_path, files),
               "quarter_train": run_child(tok_path, quarter, steps),
               "whole_train": run_child(tok_path, files, steps)}
        hwm = {k: v["vm_hwm_bytes"] or v["ru_maxrss_bytes"] for k, v in mem.items()}
        result["memory"] = {
            "children": mem, "peak_rss_bytes": hwm,
            "ratio_whole_over_quarter": hwm["whole"] / hwm["quarter"],
            "ratio_train_whole_over_quarter": hwm["whole_train"] / hwm["quarter_train"],
            "above_floor_bytes": {k: hwm[k] - hwm["none"] for k in hwm if k != "none"},
            "training": f"tokenise, then {steps} WML steps of two small students (batch 8 x "
                        "128) and a 16k-token evaluation, in the same process",
        }
    ratio = result["speed"]["ratio_library_over_baseline"]
    rss = result["memory"]["ratio_whole_over_quarter"]
    rss_train = result["memory"]["ratio_train_whole_over_quarter"]
    result["targets"] = {
        "rss_train_whole_over_quarter": {"target": f"<= {TARGET_RSS_RATIO}",
                                         "value": rss_train,
                                         "met": rss_train <= TARGET_RSS_RATIO,
                                         "applies": not args.quick},
        "speed_ratio": {"target": f">= {TARGET_SPEED_RATIO}", "value": ratio,
                        "met": ratio >= TARGET_SPEED_RATIO, "applies": not args.quick},
        "rss_whole_over_quarter": {"target": f"<= {TARGET_RSS_RATIO}", "value": rss,
                                   "met": rss <= TARGET_RSS_RATIO, "applies": not args.quick},
    }
    common.finish(result, t_start)
    return result


def report(result: dict[str, Any]) -> str:
    sp, mem, st = result["speed"], result["memory"], result["settings"]
    mib = 1 << 20
    lines = [
        f"tokenize_speed ({st['words']:,} words, vocab {st['tokenizer']['vocab_size']}"
        f"{', QUICK' if result['quick'] else ''}):",
        f"  library {sp['library_words_per_s']:,.0f} words/s, baseline "
        f"{sp['baseline_words_per_s']:,.0f} words/s, ratio "
        f"{sp['ratio_library_over_baseline']:.3f} (target >= {TARGET_SPEED_RATIO}); tokens "
        f"identical: {sp['tokens_identical']}",
        "  library parts: " + ", ".join(f"{k.removesuffix('_seconds')} {v:.2f}s"
                                         for k, v in sp["library_parts_seconds"].items()),
        f"  peak RSS: floor {mem['peak_rss_bytes']['none'] / mib:.0f} MiB, quarter "
        f"{mem['peak_rss_bytes']['quarter'] / mib:.0f} MiB, whole "
        f"{mem['peak_rss_bytes']['whole'] / mib:.0f} MiB; whole/quarter "
        f"{mem['ratio_whole_over_quarter']:.3f} (target <= {TARGET_RSS_RATIO})",
        f"  peak RSS with training: quarter {mem['peak_rss_bytes']['quarter_train'] / mib:.0f}"
        f" MiB, whole {mem['peak_rss_bytes']['whole_train'] / mib:.0f} MiB; whole/quarter "
        f"{mem['ratio_train_whole_over_quarter']:.3f} (target <= {TARGET_RSS_RATIO})",
    ]
    for name, t in result["targets"].items():
        lines.append(f"  target {name} {t['target']}: {t['value']:.3f} "
                     f"{'met' if t['met'] else 'NOT met'}"
                     f"{'' if t['applies'] else ' (does not apply to this run)'}")
    return "\n".join(lines)


def _child_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: the memory subprocess


def main(argv: list[str] | None = None) -> int:
    return common.standalone(NAME, __doc__, run, report, argv, _child_option,
                             child=lambda a: child(json.loads(a.child)))

if __name__ == "__main__":
    sys.exit(main())
