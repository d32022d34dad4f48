"""The recipe study: one setting at a time around a baseline, judged on validation loss.

    taskset -c 0 python docs/results/recipe/study.py runs/recipe   # every variant not yet done
    python docs/results/recipe/study.py runs/recipe --only lr-4e-3 --minutes 10
    python docs/results/recipe/study.py runs/recipe --report      # results.json, study.md

Every variant is one ``minidml train`` run on the whole shared BabyLM corpus
(``$MINIDML_DATA_DIR/babylm-2024-100M-snippets``), on one CPU core (``taskset -c 0`` and
``--threads 1``). Variants that change the cost of a step (context, batch, vocabulary,
shape, documents, mutual learning) train for the same wall time (``--max-time``): what a
setting buys is what it buys in that time, speed included, so they need an otherwise idle
machine (work on the other core slows a run by 10-25%). Variants that do not (learning
rate, schedule, warmup, weight decay, seed; α and T against ``wml``) train for their
reference's number of steps (``SAME_STEPS``). Each run is judged on its whole validation
split (2% of the corpus, never trained on), in nats per token and, because variants that
change the tokenizer or the documents predict other tokens, in nats per byte of the
validation text; and, because a document rule also changes what the validation text looks
like, on 10,000 held-out sentences common to every run (cut from the baseline's validation
blocks) scored each after one BOS token, as the zero-shot suites score a sentence, in nats
per byte. The test suites are not looked at. A run that was interrupted is resumed with
the time it has left; a finished run is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import minidml
from minidml import Shape, TrainConfig
from minidml.data import corpus_files, tokenize_corpus
from minidml.documents import split_line
from minidml.evaluation.scoring import Scorer, student_label
from minidml.launch import corpus_documents, make_batches
from minidml.tokenizer import Tokenizer

HERE = Path(__file__).resolve().parent
BASE = dict(students=(Shape(4, 256, 4),), mode="single", vocab_size=8192, context=128,
            batch_size=32, lr=2e-3, warmup_steps=100, eval_every=250, save_every=250)
# name -> the one change from BASE
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "lr-1e-3": {"lr": 1e-3},
    "lr-4e-3": {"lr": 4e-3},
    "lr-8e-3": {"lr": 8e-3},
    "documents-sentence": {"documents": "sentence"},
    "schedule-wsd": {"schedule": "wsd"},
    "batch-16": {"batch_size": 16},
    "context-64": {"context": 64},
    "context-256": {"context": 256},
    "warmup-30": {"warmup_steps": 30},
    "weight-decay-0": {"weight_decay": 0.0},
    "vocab-4096": {"vocab_size": 4096},
    "vocab-16384": {"vocab_size": 16384},
    "shape-2x384": {"students": (Shape(2, 384, 6),)},
    "shape-8x192": {"students": (Shape(8, 192, 3),)},
    "seed-1": {"seed": 1},  # no change of recipe: the run-to-run noise
    # sentence documents without the speaker tags, as the zero-shot suites' sentences are
    "documents-sentence-drop": {"documents": "sentence", "speaker_tags": "drop"},
    "seed-2": {"seed": 2},
    # the tokenizer without its word boundary (the tokenizers made before it existed)
    "boundary-none": {"tokenizer_boundary": "none"},
    "boundary-none-seed-1": {"tokenizer_boundary": "none", "seed": 1},
    "boundary-none-seed-2": {"tokenizer_boundary": "none", "seed": 2},
}
# the mutual modes: two students learning together in the same wall time; judged on the
# better one (the champion, chosen on the validation loss)
PAIR = (Shape(4, 256, 4), Shape(2, 256, 4))
VARIANTS.update({
    "wml": {"mode": "wml", "students": PAIR},
    "wml-alpha-0.25": {"mode": "wml", "students": PAIR, "alpha": 0.25},
    "wml-T-2": {"mode": "wml", "students": PAIR, "temperature": 2.0},
    "wml-alpha-0.25-T-2": {"mode": "wml", "students": PAIR, "alpha": 0.25,
                           "temperature": 2.0},
})


# variants that do not change the cost of a step train for their reference's number of
# steps instead of a wall time: equal data, so that nothing else running on the machine
# (which slows a wall-time run by 10-25% even on another core) can favour one of them
SAME_STEPS = {name: "baseline" for name in (
    "lr-1e-3", "lr-4e-3", "lr-8e-3", "schedule-wsd", "warmup-30", "weight-decay-0", "seed-1",
    "documents-sentence-drop", "seed-2", "boundary-none", "boundary-none-seed-1",
    "boundary-none-seed-2")}
SAME_STEPS.update({name: "wml" for name in VARIANTS if name.startswith("wml-")})


def corpus() -> list[Path]:
    root = os.environ.get("MINIDML_DATA_DIR")
    if not root:
        raise SystemExit("set MINIDML_DATA_DIR to the shared data directory")
    return corpus_files([Path(root) / "babylm-2024-100M-snippets"])


def config(name: str, minutes: float, out: Path, steps: int | None = None) -> TrainConfig:
    """The variant's settings: ``steps`` where given, else its reference's steps (see
    SAME_STEPS), else a wall time."""
    cfg = TrainConfig(**{**BASE, **VARIANTS[name]})
    if steps:
        return cfg.replace(steps=steps)
    reference = SAME_STEPS.get(name)
    if reference is None:
        return cfg.replace(max_time=60.0 * minutes)
    if not finished(out / reference):
        raise SystemExit(f"{name} trains for as many steps as {reference}: run that first")
    records = [json.loads(line) for line in (out / reference / "metrics.jsonl").open()]
    return cfg.replace(steps=max(r["step"] for r in records if r["event"] == "train"))


def shared_tokenizer(out: Path, files: list[Path], cfg: TrainConfig) -> Path:
    """The tokenizer ``minidml train`` would train for ``cfg``, trained once per vocabulary
    and document rule and shared by the variants that agree on them (so is the token
    cache that follows from it)."""
    name = (f"{cfg.tokenizer_type}-{cfg.vocab_size}-{cfg.documents}-{cfg.speaker_tags}-"
            f"{cfg.seed}-{cfg.tokenizer_boundary}")
    path = out / "tokenizers" / f"{name}.model"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        Tokenizer.train(corpus_documents(files, cfg), cfg.vocab_size, cfg.tokenizer_type,
                        seed=cfg.seed, boundary=cfg.tokenizer_boundary).save(path)
    return path


def finished(run_dir: Path) -> bool:
    """Whether the study finished this run (it marks the runs whose ``train`` returned)."""
    return (run_dir / "study-done").exists()


def row_bytes(tokenizer: Tokenizer, row: list[int]) -> int:
    """UTF-8 bytes of the text a row of tokens spells. A tokenizer with the word boundary
    decodes a row without its first space (taking it for the boundary); mid-text that space
    is the text's own, so it is counted."""
    text = tokenizer.decode(row)
    first = next((i for i in row if i > Tokenizer.eos_id), None)
    if tokenizer.boundary == "prefix" and first is not None and \
            tokenizer.id_to_piece(first).startswith("\u2581"):
        text = " " + text
    return len(text.encode("utf-8"))


@torch.no_grad()
def full_validation(run_dir: Path, files: list[Path]) -> dict[str, float]:
    """Loss of the run's champion (the student with the lowest loss) over its whole
    validation split: nats per token and per byte of the text those tokens decode to."""
    run = minidml.load(run_dir)
    cfg = run.config
    tokens = tokenize_corpus(files, run.tokenizer, rule=cfg.documents,
                             speaker_tags=cfg.speaker_tags)
    batches = make_batches(tokens, cfg)
    students = [s.eval() for s in run.students]
    nats, n, n_bytes = [0.0] * len(students), 0, 0
    for x, y in batches.validation():
        for i, student in enumerate(students):
            logits = student(x).float()
            nats[i] += float(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), y.flatten(), reduction="sum"))
        n += y.numel()
        n_bytes += sum(row_bytes(run.tokenizer, row) for row in y.tolist())
    best = min(range(len(students)), key=nats.__getitem__)
    return {"val_loss": nats[best] / n, "champion": best,
            "val_loss_per_student": [v / n for v in nats], "val_tokens": n,
            "val_bytes": n_bytes, "nats_per_byte": nats[best] / max(1, n_bytes)}


POOL_SIZE = 10_000


def sentence_pool(out: Path, files: list[Path]) -> list[str]:
    """Held-out sentences for every run: the baseline's validation blocks decoded to text,
    cut into sentences and utterances (speaker tags dropped), the pieces at block edges left
    out (they may be cut), and a seeded sample of ``POOL_SIZE`` of those with 3 words or
    more (kept in ``sentence-pool.json``)."""
    import numpy as np

    kept = out / "sentence-pool.json"
    if kept.exists():
        return json.loads(kept.read_text())
    run = minidml.load(out / "baseline")
    cfg = run.config
    tokens = tokenize_corpus(files, run.tokenizer, rule=cfg.documents,
                             speaker_tags=cfg.speaker_tags)
    marks = (Tokenizer.bos_id, Tokenizer.eos_id)
    found: list[str] = []
    for start, end in make_batches(tokens, cfg).val_blocks:
        pieces: list[str] = []
        doc: list[int] = []
        for t in [*tokens[start:end].tolist(), marks[1]]:
            if t in marks:
                if doc:
                    pieces += split_line(run.tokenizer.decode(doc), "drop")
                doc = []
            else:
                doc.append(t)
        found += [p for p in pieces[1:-1] if len(p.split()) >= 3]
    rng = np.random.default_rng(0)
    pool = [found[i] for i in sorted(rng.choice(len(found), POOL_SIZE, replace=False))]
    kept.write_text(json.dumps(pool) + "\n")
    return pool


@torch.no_grad()
def sentence_loss(run_dir: Path, champion: int, pool: list[str],
                  protocol: str = "lm-eval") -> float:
    """The champion's nats per byte on the held-out sentences, each scored after one BOS
    token as the zero-shot suites score a sentence under ``protocol`` (``lm-eval``: after
    one space, the measure of the study's first runs; ``babylm-2026``: as it is)."""
    run = minidml.load(run_dir)
    label = student_label(champion)
    ll = Scorer(run.students, run.tokenizer, labels=[label],
                protocol=protocol).score(pool)[label]
    return -float(ll.sum()) / sum(len(text.encode("utf-8")) for text in pool)


def summary(run_dir: Path, files: list[Path]) -> dict[str, Any]:
    """A finished run's figures (computed once, then kept in ``study-summary.json``)."""
    kept = run_dir / "study-summary.json"
    if kept.exists():
        return json.loads(kept.read_text())
    found = _summary(run_dir, files)
    kept.write_text(json.dumps(found) + "\n")
    return found


def _summary(run_dir: Path, files: list[Path]) -> dict[str, Any]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    trains = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    last = trains[-1]
    return {"steps": last["step"], "tokens": last["tokens"], "epoch": last.get("epoch"),
            "train_seconds": last["train_seconds"],
            "tokens_per_s": last["tokens"] / max(last["train_seconds"], 1e-9),
            "curve": [[e["step"], min(e["val_loss"])] for e in evals],
            **full_validation(run_dir, files)}


def report(out: Path, files: list[Path]) -> None:
    rows = {}
    pool = sentence_pool(out, files)
    for name in VARIANTS:
        run_dir = out / name
        if finished(run_dir):
            found = summary(run_dir, files)
            if "sentence_nats_per_byte" not in found:
                found["sentence_nats_per_byte"] = sentence_loss(run_dir, found["champion"], pool)
                (run_dir / "study-summary.json").write_text(json.dumps(found) + "\n")
            if "sentence_nats_per_byte_2026" not in found:
                found["sentence_nats_per_byte_2026"] = sentence_loss(
                    run_dir, found["champion"], pool, "babylm-2026")
                (run_dir / "study-summary.json").write_text(json.dumps(found) + "\n")
            rows[name] = {"change": {k: (str(v) if k == "students" else v)
                                     for k, v in VARIANTS[name].items()}, **found}
    base = rows.get("baseline")
    (HERE / "results.json").write_text(json.dumps(
        {"base": {k: (str(v) if k == "students" else v) for k, v in BASE.items()},
         "runs": rows}, indent=1) + "\n")
    lines = ["| variant | change | steps | tokens | tok/s | val nats/token | val nats/byte | "
             "Δ | sentences nats/byte (lm-eval) | Δ | sentences (babylm-2026) | Δ |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: |"]

    def delta(r: dict[str, Any], key: str) -> str:
        return "" if base is None or r is base else f"{r[key] - base[key]:+.4f}"

    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["nats_per_byte"]):
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "—"
        lines.append(f"| {name} | {change} | {r['steps']} | {r['tokens']:,} | "
                     f"{r['tokens_per_s']:,.0f} | {r['val_loss']:.4f} | "
                     f"{r['nats_per_byte']:.4f} | {delta(r, 'nats_per_byte')} | "
                     f"{r['sentence_nats_per_byte']:.4f} | "
                     f"{delta(r, 'sentence_nats_per_byte')} | "
                     f"{r['sentence_nats_per_byte_2026']:.4f} | "
                     f"{delta(r, 'sentence_nats_per_byte_2026')} |")
    (HERE / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if rows:
        _plot(rows)


def _plot(rows: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    base = rows.get("baseline")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), width_ratios=[1.1, 1])
    # the validation curves of the variants that keep the baseline's split (its context,
    # tokenizer, documents and seed): the others' curves are on other text
    same_split = [n for n in rows if not n.startswith(("context", "vocab", "documents",
                                                       "seed"))]
    for name in sorted(same_split):
        r = rows[name]
        steps, losses = zip(*r["curve"], strict=True)
        tokens = [s * r["tokens"] / r["steps"] / 1e6 for s in steps]
        left.plot(tokens, losses, label=name, lw=2 if name == "baseline" else 1)
    left.set_xlabel("training tokens (millions)")
    left.set_ylabel("validation loss (nats/token, 65k tokens of the split)")
    left.set_ylim(None, 6.0)
    left.legend(fontsize=7, ncol=2)
    left.set_title("validation curves (variants on the baseline's split)", fontsize=9)
    if base is not None:
        names = sorted((n for n in rows if n != "baseline"),
                       key=lambda n: rows[n]["sentence_nats_per_byte"])
        deltas = [rows[n]["sentence_nats_per_byte"] - base["sentence_nats_per_byte"]
                  for n in names]
        right.barh(range(len(names)), deltas,
                   color=["#2ca02c" if d < 0 else "#d62728" for d in deltas])
        right.set_yticks(range(len(names)), names, fontsize=8)
        right.invert_yaxis()
        right.axvline(0, color="k", lw=0.8)
        right.set_xlabel("Δ nats/byte against the baseline (negative: better)")
        right.set_title("held-out sentences scored after BOS, common to every run",
                        fontsize=9)
        right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--steps", type=int, help="train every run for this many steps (equal "
                    "data, whatever else the machine does)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = corpus()
    if args.report:
        report(args.out, files)
        return 0
    names = args.only or list(VARIANTS)
    # references first
    names = sorted(names, key=lambda n: (n in SAME_STEPS, names.index(n)))
    for name in names:
        run_dir = args.out / name
        if finished(run_dir):
            continue
        t0 = time.time()
        resume = (run_dir / "config.json").exists()
        print(f"[recipe] {name}: {'resuming' if resume else 'training'}", flush=True)
        cfg = config(name, args.minutes, args.out, args.steps)
        minidml.train(files, run_dir, cfg, resume=resume,
                      tokenizer=shared_tokenizer(args.out, files, cfg))
        (run_dir / "study-done").write_text(f"{time.time() - t0:.0f}\n")
        print(f"[recipe] {name}: done in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
