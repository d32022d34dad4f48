"""Tokenising the shared corpus: speed and memory of ``minidml.data.tokenize_corpus``.

Setup (untimed): a 16,384-piece unigram tokenizer trained on 3,000 sampled pieces of
``babylm-2024-100M-snippets/*.txt.xz``, and the corpus decompressed into memory.

* Speed: words/s of ``tokenize_corpus(files, tok, cache_dir=<fresh dir>)`` (decompressing,
  encoding, writing the token file) against the baseline, raw sentencepiece encoding of the
  same lines in memory (``tok._sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1)``
  over batches of ≤ 8 MiB), interleaved (``Timer.blocked_autorange``, fastest call of each);
  both must give the same tokens. Target: ratio ≥ 0.8.
* Memory: peak RSS of fresh processes that tokenise the whole corpus and a quarter of it
  (``childes`` and ``mixed``, 24.8% of the words), and that then train on it (WML steps of
  two small students and an evaluation). Targets: whole ≤ 1.10 × quarter, both ways.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import lzma
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench import common

NAME = "tokenize_speed"
CORPUS = "babylm-2024-100M-snippets"
QUARTER = ("childes.txt.xz", "mixed.txt.xz")
BATCH_BYTES = 8 << 20
FULL = {"vocab_size": 16384, "train_pieces": 3000, "rounds": 3, "train_steps": 10}
QUICK = {"vocab_size": 1024, "train_pieces": 500, "rounds": 1, "train_steps": 2,
         "lines_per_file": 3}


def corpus_files(quick: bool, scratch: Path) -> list[Path]:
    src = common.data_dir() / CORPUS
    files = sorted(src.glob("*.txt.xz"))
    if not files or any(not (src / q).is_file() for q in QUARTER):
        raise common.BenchError(f"{src}: the corpus files are missing")
    if not quick:
        return files
    out = []  # a small corpus of the same kind: the first lines of every file
    for f in files:
        with lzma.open(f, "rt", encoding="utf-8") as fin:
            head = [next(fin, "") for _ in range(QUICK["lines_per_file"])]
        with lzma.open(scratch / f.name, "wt", encoding="utf-8", preset=0) as fout:
            fout.writelines(head)
        out.append(scratch / f.name)
    return out


def encode_batches(tok, lines: list[str]):
    """The baseline: sentencepiece over the in-memory lines, ≤ 8 MiB of text per call."""
    batch, size = [], 0
    for ln in lines + [None]:
        if ln is not None:
            batch.append(ln)
            size += len(ln)
        if batch and (ln is None or size >= BATCH_BYTES):
            yield from tok._sp.encode(batch, add_bos=True, add_eos=True, num_threads=-1)
            batch, size = [], 0


def tokenize(tok, files: list[Path], digest: bool = False) -> int | str:
    """The library's call, into a fresh cache: the number of tokens, or their digest."""
    from minidml.data import tokenize_corpus

    with common.temp_dir("tokcache") as cache:
        tokens = tokenize_corpus(files, tok, cache_dir=cache)
        return _digest(np.asarray(tokens)) if digest else len(tokens)


def _digest(ids: np.ndarray) -> str:
    return hashlib.sha256(ids.astype(np.uint32).tobytes()).hexdigest()


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: load the tokenizer, tokenise the files, maybe train; peak RSS."""
    from minidml import Shape, Student, TrainConfig
    from minidml.data import Batches, tokenize_corpus
    from minidml.rundir import student_configs
    from minidml.tokenizer import Tokenizer
    from minidml.trainer import Trainer

    tok = Tokenizer.load(spec["tokenizer"])
    tokens = tokenize_corpus([Path(f) for f in spec["files"]], tok, cache_dir=spec["cache"])
    if spec["train_steps"]:  # the token file is memory-mapped
        steps = spec["train_steps"]
        cfg = TrainConfig(students=(Shape(2, 128, 4), Shape(1, 192, 4)), mode="wml",
                          outer_every=max(1, steps // 2), context=128, batch_size=8,
                          steps=steps, device="cpu")
        trainer = Trainer(cfg, [Student(c) for c in student_configs(cfg, tok.vocab_size)],
                          Batches(tokens, cfg.context, cfg.batch_size, seed=0))
        for _ in range(steps):
            trainer.train_step()
        trainer.evaluate(max_tokens=16_384)
    return {"peak_rss_bytes": common.proc_status(), "tokens": len(tokens)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from minidml.data import read_lines
    from minidml.tokenizer import Tokenizer

    common.ensure_cache_env()
    s = QUICK if args.quick else FULL
    result = common.envelope(NAME, common.resolve_device("cpu"), args.quick)
    with common.temp_dir("tok") as scratch:
        files = corpus_files(args.quick, scratch)
        quarter = [f for f in files if f.name in QUARTER]
        per_file = {f.name: [ln for ln in read_lines([f]) if ln.strip()] for f in files}
        lines = [ln for f in files for ln in per_file[f.name]]
        words = {n: sum(len(ln.split()) for ln in ls) for n, ls in per_file.items()}
        tok = Tokenizer.train(read_lines(files), s["vocab_size"], seed=0,
                              input_sentence_size=s["train_pieces"])
        tok.save(scratch / "tokenizer.model")
        n_words = sum(words.values())
        same = tokenize(tok, files, digest=True) == _digest(np.fromiter(
            itertools.chain.from_iterable(encode_batches(tok, lines)), dtype=np.uint32))
        measured = common.interleave(
            {"baseline": lambda: sum(map(len, encode_batches(tok, lines))),
             "library": lambda: tokenize(tok, files)}, s["rounds"], NAME)
        ratio = min(measured["baseline"].times) / min(measured["library"].times)
        common.log(f"[{NAME}] memory: peak RSS of fresh processes")
        mem = {}
        for name, part, steps in (("quarter", quarter, 0), ("whole", files, 0),
                                  ("quarter_train", quarter, s["train_steps"]),
                                  ("whole_train", files, s["train_steps"])):
            with common.temp_dir("rsscache") as cache:
                mem[name] = common.run_child("bench.tokenize_speed", {
                    "tokenizer": str(scratch / "tokenizer.model"), "cache": str(cache),
                    "files": [str(f) for f in part], "train_steps": steps},
                    env={**os.environ, "MINIDML_CACHE_DIR": str(cache)})["peak_rss_bytes"]
    rss = mem["whole"] / mem["quarter"]
    rss_train = mem["whole_train"] / mem["quarter_train"]
    applies = not args.quick
    result.update(
        settings={**s, "files": [f.name for f in files], "words": n_words,
                  "words_per_file": words, "quarter_files": list(QUARTER),
                  "quarter_fraction_of_words": sum(words[f.name] for f in quarter) / n_words,
                  "baseline": f"tok._sp.encode over <= {BATCH_BYTES}-byte batches in memory"},
        speed={"seconds": {n: common.stats(m) for n, m in measured.items()},
               "words_per_s": {n: n_words / min(m.times) for n, m in measured.items()},
               "ratio_library_over_baseline": ratio, "tokens_identical": same},
        memory={"peak_rss_bytes": mem, "ratio_whole_over_quarter": rss,
                "ratio_train_whole_over_quarter": rss_train},
        targets={"speed_ratio": common.target(ratio, 0.8, False, applies),
                 "rss_whole_over_quarter": common.target(rss, 1.10, True, applies),
                 "rss_train_whole_over_quarter": common.target(rss_train, 1.10, True, applies)},
        table=common.table(measured))
    return result


def report(result: dict[str, Any]) -> str:
    sp, mem = result["speed"], result["memory"]["peak_rss_bytes"]
    return "\n".join([
        f"tokenize_speed ({result['settings']['words']:,} words"
        f"{', QUICK' if result['quick'] else ''}): library "
        f"{sp['words_per_s']['library']:,.0f} words/s, baseline "
        f"{sp['words_per_s']['baseline']:,.0f}; tokens identical: {sp['tokens_identical']}",
        "  peak RSS: " + ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in mem.items()),
        common.targets_line(result["targets"])])


if __name__ == "__main__":
    common.child_main(child)
