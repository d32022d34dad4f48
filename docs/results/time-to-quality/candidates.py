"""Candidates for the one-hour defaults, each against the published hour, on held-out text.

    python docs/results/time-to-quality/candidates.py runs/t31 --run ctx64   # train (or resume)
    python docs/results/time-to-quality/candidates.py runs/t31 --report      # measure, write

The reference is the published hour (``runs/t2q4/single``: the defaults, ``--max-time 60m``
on the 2-core AVX2 CPU, 2,160 steps of 32 × 128 tokens = 8.85M tokens). A candidate changes
one thing and trains on the same corpus, seed and number of tokens (its steps are set so),
so that what it buys per token is measured whatever else the machine does meanwhile; what
it costs per token is measured apart, on an idle machine (``--probe``), and turned into the
tokens it would see in the hour. Judged on the held-out measure of the recipe study: the
champion's nats per byte on 10,000 sentences cut from validation text
(``runs/recipe2/sentence-pool.json``), each scored after BOS as the 2026 pipeline scores a
sentence; and on its own validation split in nats per byte. The test suites are not looked
at to choose.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("MINIDML_DATA_DIR", "../shared/data")) / "babylm-2024-100M-snippets"
REFERENCE = Path("runs/t2q4/single")
POOL = Path("runs/recipe2/sentence-pool.json")
HOUR_TOKENS = 2160 * 32 * 128
# name -> the change from the defaults, and its steps: the hour's tokens where the change
# leaves a token's cost as it was (None: an hour at the idle throughput --probe measured)
CANDIDATES: dict[str, tuple[list[str], int | None]] = {
    "defaults": (["--optimizer", "adamw"], 2160),  # the hour's defaults (AdamW then) again
    "ctx64": (["--context", "64"], HOUR_TOKENS // (32 * 64)),
    "muon": (["--optimizer", "muon"], None),
    "muon-lr-2e-3": (["--optimizer", "muon", "--lr", "2e-3"], None),
    "muon-lr-8e-3": (["--optimizer", "muon", "--lr", "8e-3"], None),
    "muon-vocab-8192": (["--optimizer", "muon", "--vocab-size", "8192"], None),
    "vocab-8192": (["--vocab-size", "8192"], None),
    "muon-vocab-8192-lr-8e-3": (["--optimizer", "muon", "--vocab-size", "8192", "--lr", "8e-3"],
                                None),
    "small-2x128": (["--layers", "2", "--width", "128", "--heads", "2", "--vocab-size",
                     "8192"], None),
}
# a learning rate costs nothing per token: such a candidate trains its base's hour
PROBE_AS = {"muon-lr-2e-3": "muon", "muon-lr-8e-3": "muon",
            "muon-vocab-8192-lr-8e-3": "muon-vocab-8192"}
EVAL_SHARE = 0.03  # of an hour's steps spent validating (every 200 steps), as the hour did


def minidml(*args: str) -> list[str]:
    return [sys.executable, "-m", "minidml", *args]


def planned_steps(out: Path, name: str) -> int:
    change, steps = CANDIDATES[name]
    if steps is not None:
        return steps
    probes = out / "probes.json"
    found = json.loads(probes.read_text()) if probes.exists() else {}
    probed = PROBE_AS.get(name, name)
    if probed not in found:
        raise SystemExit(f"{name}: no throughput yet; run --probe {probed} on an idle machine")
    context = int(change[change.index("--context") + 1]) if "--context" in change else 128
    return int(found[probed]["tokens_per_s"] * 3600 * (1 - EVAL_SHARE) / (32 * context))


def train(out: Path, name: str) -> None:
    run_dir = out / name
    resume = ["--resume"] if (run_dir / "config.json").exists() else []
    subprocess.run(minidml("train", str(CORPUS), "--out", str(run_dir), "--mode", "single",
                           "--students", "1", "--track", "strict-small", "--seed", "0",
                           "--keep-checkpoints", "2", "-q", *CANDIDATES[name][0], "--steps",
                           str(planned_steps(out, name)), *resume), check=True)


def probe(out: Path, name: str, steps: int = 60) -> dict[str, float]:
    """Tokens per second of the candidate's shape over ``steps`` steps after 20 of warming
    up (compilation included in neither), on whatever the machine is doing: run it idle."""
    run_dir = out / f"probe-{name}"
    change = CANDIDATES[name][0]
    subprocess.run(minidml("train", str(CORPUS), "--out", str(run_dir), "--force", "--mode",
                           "single", "--students", "1", "--seed", "0", "--steps",
                           str(steps + 20), "--log-every", "10", "--eval-every", "100000",
                           "--compile", "on", "-q", *change), check=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()
            if '"train"' in line]
    first = next(r for r in rows if r["step"] >= 20)
    last = rows[-1]
    return {"tokens_per_s": (last["tokens"] - first["tokens"])
            / (last["train_seconds"] - first["train_seconds"])}


def measure(run_dir: Path, pool: list[str]) -> dict[str, float]:
    import minidml as api
    from minidml.evaluation.scoring import Scorer, student_label

    run = api.load(run_dir)
    label = student_label(0)
    ll = Scorer(run.students, run.tokenizer, labels=[label],
                protocol="babylm-2026").score(pool)[label]
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()
             if '"eval"' in line]
    trains = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()
              if '"train"' in line]
    return {"step": run.step, "tokens": trains[-1]["tokens"],
            "val_loss": min(evals[-1]["val_loss"]),
            "sentence_nats_per_byte": -float(ll.sum()) / sum(len(t.encode()) for t in pool)}


def report(out: Path) -> None:
    pool = json.loads(POOL.read_text())
    kept = out / "candidates.json"
    found = json.loads(kept.read_text()) if kept.exists() else {}
    runs = [("reference", REFERENCE), ("strict-small-2x128", Path("runs/t29/strict-small")),
            *((n, out / n) for n in CANDIDATES)]
    for name, run_dir in runs:
        done = run_dir.is_dir() and any((run_dir / "checkpoints").glob("step-*"))
        if not done or found.get(name, {}).get("step") == _last_step(run_dir):
            continue
        found[name] = {**found.get(name, {}), **measure(run_dir, pool)}
        kept.write_text(json.dumps(found, indent=1) + "\n")
    base = found.get("reference", {}).get("sentence_nats_per_byte")
    print("| run | step | tokens | validation loss (nats/token) | held-out sentences "
          "(nats/byte) | vs the hour |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in found.items():
        delta = "" if base is None or name == "reference" else \
            f"{r['sentence_nats_per_byte'] - base:+.4f}"
        print(f"| {name} | {r['step']:,} | {r['tokens'] / 1e6:.2f}M | {r['val_loss']:.3f} | "
              f"{r['sentence_nats_per_byte']:.4f} | {delta} |")


def _last_step(run_dir: Path) -> int | None:
    steps = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))
    return steps[-1] if steps else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", action="append", choices=sorted(CANDIDATES), default=[])
    ap.add_argument("--probe", action="append", choices=sorted(CANDIDATES), default=[])
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    for name in args.run:
        t0 = time.time()
        train(args.out, name)
        print(f"[candidates] {name}: {time.time() - t0:.0f}s", flush=True)
    for name in args.probe:
        probes = args.out / "probes.json"
        found = json.loads(probes.read_text()) if probes.exists() else {}
        found[name] = probe(args.out, name)
        probes.write_text(json.dumps(found, indent=1) + "\n")
        print(json.dumps({name: found[name]}), flush=True)
    if args.report:
        report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
