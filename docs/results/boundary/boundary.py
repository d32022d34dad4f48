"""What the tokenizer's word boundary does: the recipe study's baseline with the boundary
(``--tokenizer-boundary prefix``, the default) and without it (``none``, the tokenizers made
before), three seeds each, every run the same number of steps.

    export MINIDML_DATA_DIR=../shared/data S=docs/results/recipe/study.py
    taskset -c 0 python $S runs/recipe2 --steps 496 --only baseline --only seed-1 --only seed-2 &
    taskset -c 1 python $S runs/recipe2 --steps 496 --only boundary-none \\
        --only boundary-none-seed-1 --only boundary-none-seed-2 &
    wait; python docs/results/boundary/boundary.py runs/recipe2

Judged as the recipe study judges a run, on held-out text (each run's own validation split in
nats per byte, and the study's 10,000 held-out sentences in nats per byte, scored under both
protocols); BLiMP's fast set under both protocols is reported beside, not used to choose.
Differences are paired by seed (the same seed draws the same corpus sample for the
tokenizer, data order and initial weights): mean ± standard error over the three seeds.
Writes ``results.json`` and ``results.md`` beside this script.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import minidml
from minidml.evaluation.runner import evaluate

HERE = Path(__file__).resolve().parent
SEEDS = {0: ("baseline", "boundary-none"), 1: ("seed-1", "boundary-none-seed-1"),
         2: ("seed-2", "boundary-none-seed-2")}
PROTOCOLS = ("babylm-2026", "lm-eval")


def _study():
    spec = importlib.util.spec_from_file_location("study", HERE.parent / "recipe" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(study, out: Path, name: str, pool: list[str]) -> dict:
    run_dir = out / name
    kept = run_dir / "boundary-summary.json"
    if kept.exists():
        return json.loads(kept.read_text())
    found = study.summary(run_dir, study.corpus())
    run = minidml.load(run_dir)
    found["boundary"] = run.tokenizer.boundary
    for protocol in PROTOCOLS:
        found[f"sentences_{protocol}"] = study.sentence_loss(run_dir, found["champion"], pool,
                                                             protocol)
        res = evaluate(run, ["blimp-fast"], student="0", protocol=protocol)
        found[f"blimp_fast_{protocol}"] = res.to_json()["groups"]["student-0"]["blimp-fast"][
            "score"]
    kept.write_text(json.dumps(found) + "\n")
    return found


def paired(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd / math.sqrt(n)


def main() -> int:
    out = Path(sys.argv[1])
    study = _study()
    pool = study.sentence_pool(out, study.corpus())
    rows = {seed: {arm: measure(study, out, name, pool) for arm, name in
                   zip(("prefix", "none"), names, strict=True)}
            for seed, names in SEEDS.items() if all((out / n / "study-done").exists()
                                                    for n in names)}
    keys = ["nats_per_byte", *(f"sentences_{p}" for p in PROTOCOLS),
            *(f"blimp_fast_{p}" for p in PROTOCOLS)]
    diffs = {k: paired([r["prefix"][k] - r["none"][k] for r in rows.values()]) for k in keys}
    (HERE / "results.json").write_text(json.dumps(
        {"runs": rows, "prefix_minus_none": diffs}, indent=1) + "\n")
    lines = ["| seed | boundary | steps | val nats/token | val nats/byte | sentences nats/byte "
             "(babylm-2026) | (lm-eval) | BLiMP fast (babylm-2026) | (lm-eval) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for seed, r in rows.items():
        for arm in ("prefix", "none"):
            m = r[arm]
            lines.append(f"| {seed} | {arm} | {m['steps']} | {m['val_loss']:.4f} | "
                         f"{m['nats_per_byte']:.4f} | {m['sentences_babylm-2026']:.4f} | "
                         f"{m['sentences_lm-eval']:.4f} | "
                         f"{100 * m['blimp_fast_babylm-2026']:.1f} | "
                         f"{100 * m['blimp_fast_lm-eval']:.1f} |")
    lines += ["", f"prefix − none over {len(rows)} seeds (mean ± standard error):", ""]
    for k, (mean, se) in diffs.items():
        scale = 100 if k.startswith("blimp") else 1
        lines.append(f"- {k}: {scale * mean:+.4f} ± {scale * se:.4f}")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
