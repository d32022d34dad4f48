"""The time-to-quality learning curves: each run's evaluated checkpoints against training
time and against words seen.

    python docs/results/time-to-quality/curve.py OUT "single=runs/t2q/single" "wml=runs/t2q/wml"
    python docs/results/time-to-quality/curve.py OUT --suite blimp-fast "single=…" "wml=…"

For every checkpoint evaluated by ``minidml eval RUN --step N`` (the newest results), the point
gets the training minutes, tokens and words seen per student at that step (from
``metrics.jsonl``), the validation loss of the evaluated student at the last evaluation at or
before it, and each suite's score ± stderr; every validation evaluation gives the champion's
(lowest) loss. Writes ``OUT/curve.json`` and ``OUT/curve.png``: the validation loss against
minutes, and ``--suite`` (default ``blimp``) against minutes and against words seen, one line
per run, beside the official 2026 strict-small baseline's final score on its full task. Needs the
``plot`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from minidml.evaluation.baselines import full_task, official_baseline
from minidml.experiments.plot import words_axis
from minidml.rundir import checkpoint_scores, read_metrics


def events(run: Path) -> tuple[dict[int, dict], list[dict]]:
    """The run's training records by step, and its validation evaluations, read once."""
    records = read_metrics(run / "metrics.jsonl")
    train = {r["step"]: r for r in records if r.get("event") == "train"}
    return train, [r for r in records if r.get("event") == "eval"]


def train_at(train: dict[int, dict], step: int) -> dict | None:
    """The last training record at or before ``step``."""
    known = [s for s in train if s <= step]
    return train[max(known)] if known else None


def points(run: Path, train: dict[int, dict], evals: list[dict]) -> list[dict]:
    by_step: dict[int, dict] = {}
    for step, result in checkpoint_scores(run).items():
        labels = [s["label"] for s in result["students"]]
        for label, suites in result["groups"].items():
            point = by_step.setdefault(step, {"step": step, "student": label})
            if point["student"] != label:
                continue  # one student per checkpoint: the first evaluated
            t = train_at(train, step)
            point.update(train_minutes=round(t["train_seconds"] / 60, 1), tokens=t["tokens"],
                         words=t.get("words"), epochs=t.get("epoch"))
            seen = [e for e in evals if e["step"] <= step]
            if seen and label in labels:
                e = seen[-1]
                point.update(val_step=e["step"],
                             val_loss=round(e["val_loss"][labels.index(label)], 4))
            for name, group in suites.items():
                if "=" in name:  # a field's or phenomenon's mean: the suites' own suffice
                    continue
                point[name] = {"score": round(group["score"], 4),
                               "stderr": round(group["score_stderr"], 4)}
    return [by_step[s] for s in sorted(by_step)]


def validation(train: dict[int, dict], evals: list[dict]) -> list[list[float]]:
    """[minutes, step, the champion's validation loss] at every evaluation of the run."""
    out = []
    for e in evals:
        t = train_at(train, e["step"])
        if t is not None:
            out.append([round(t["train_seconds"] / 60, 2), e["step"], round(min(e["val_loss"]), 4)])
    return out


def draw(curves: dict[str, list[dict]], val: dict[str, list[list[float]]], suite: str,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss, by_time, by_words) = plt.subplots(1, 3, figsize=(15, 4))
    for i, (name, pts) in enumerate(curves.items()):
        color = f"C{i}"  # one colour per run in every panel
        loss.plot([v[0] for v in val[name]], [v[2] for v in val[name]], label=name,
                  color=color)
        scored = [p for p in pts if suite in p]
        for ax, x in ((by_time, [p["train_minutes"] for p in scored]),
                      (by_words, [p["words"] for p in scored])):
            if None in x:  # a run recorded before words were counted: no words axis
                continue
            ax.errorbar(x, [100 * p[suite]["score"] for p in scored],
                        yerr=[200 * p[suite]["stderr"] for p in scored], fmt="o-", capsize=3,
                        label=name, color=color)
    loss.set(xlabel="training minutes", ylabel="validation loss (nats/token)",
             title="champion's validation loss")
    base = official_baseline(suite)
    for ax, xlabel in ((by_time, "training minutes"), (by_words, "words seen per student")):
        if base is not None:
            ax.axhline(100 * base, color="grey", ls=":", lw=1,
                       label=f"{full_task(suite)}: official baseline, final")
        ax.set(xlabel=xlabel, ylabel=f"{suite} accuracy (%)", title=f"{suite} (± 2 stderr)")
    words_axis(by_words)
    for ax in (loss, by_time, by_words):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="curve.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN")
    ap.add_argument("--suite", default="blimp")
    args = ap.parse_args(argv)
    if not all(re.fullmatch(r"[^=]+=.+", a) for a in args.runs):
        ap.error("each run is NAME=RUN")
    out, suite = args.out, args.suite
    runs = dict(a.split("=", 1) for a in args.runs)
    read = {name: events(Path(run)) for name, run in runs.items()}
    curves = {name: points(Path(run), *read[name]) for name, run in runs.items()}
    val = {name: validation(*read[name]) for name in runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(
        {"runs": runs, "suite": suite, "curves": curves, "validation": val}, indent=1) + "\n")
    draw(curves, val, suite, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
