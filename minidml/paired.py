"""Paired comparisons of :func:`minidml.compare.compare`'s arms.

Two arms trained with the same seed share the tokenizer, the order of the data and the
initial draw of every student, so much of what makes one seed's score differ from another's
is common to both, and the difference between the arms is measured with less noise than
either score alone. Two views are given:

* **per-seed differences** (:func:`seed_differences`): for each pair of arms (``wml − dml``,
  ``wml − kd``, ``wml − single``, ``dml − single``, ``kd − single``, and each variant minus
  its arm), for their champions (and their ensembles where both have one), the difference
  of the validation loss and of each suite's macro score within every seed, then the mean
  over seeds ± its standard error (the seeds' standard deviation ÷ √S; none for S = 1), and
  whether |mean| > 2 standard errors;
* **per-example intervals** (:func:`example_differences`): both models scored the very same
  minimal pairs, so the difference of their macro accuracies (mean over seeds of the mean
  over tasks of the per-task accuracy difference) gets a **paired bootstrap** interval that
  resamples the pairs within each (seed, task) stratum: the strata are what the macro
  averages over, and resampling pairs, not models, keeps each pair's two verdicts together.
  McNemar's test on the pooled discordant pairs is given beside it (exact binomial p), the
  classic test for two classifiers on the same items; it judges the pooled accuracy, which
  weighs large tasks more than the macro does, so the interval is the one to quote.

Champions are chosen on validation loss (by :mod:`minidml.compare`), never on a suite.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from .scoring import ENSEMBLE

__all__ = ["MAIN_PAIRS", "SAMPLES_FILE", "arm_pairs", "bootstrap_difference",
           "example_differences", "mcnemar", "read_correct", "seed_differences"]

MAIN_PAIRS = (("wml", "dml"), ("wml", "kd"), ("wml", "single"), ("dml", "single"),
              ("kd", "single"))
SAMPLES_FILE = "eval.samples.jsonl"  # in each arm's run directory
CHAMPION = "champion"


def arm_pairs(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The pairs (a, b) of arm names that the report can compare, as a − b: the main pairs
    whose arms both ran, then each variant against its arm."""
    names = {a["arm"] for a in report["arms"]}
    pairs = [(a, b) for a, b in MAIN_PAIRS if a in names and b in names]
    pairs += sorted({(a["arm"], a["base_arm"]) for a in report["arms"]
                     if "base_arm" in a and a["base_arm"] in names})
    return pairs


def _model(arm: Mapping[str, Any], which: str) -> Mapping[str, Any] | None:
    if which == CHAMPION:
        return next((m for m in arm["models"] if m.get("champion")), None)
    return next((m for m in arm["models"] if m["label"] == which), None)


def _by_seed(report: Mapping[str, Any], name: str) -> dict[int, Mapping[str, Any]]:
    return {a["seed"]: a for a in report["arms"] if a["arm"] == name}


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds, its standard error and whether |mean| > 2 stderr (S ≥ 2)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "stderr": None, "significant": None, "per_seed": list(values)}
    se = statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "stderr": se, "significant": abs(mean) > 2 * se,
            "per_seed": list(values)}


def seed_differences(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per pair of arms and per model (champion; ensemble where both arms have one): the
    per-seed differences a − b of the validation loss and of each suite's macro score, and
    their summary over the seeds that both arms ran (see the module's docstring)."""
    suites = list(report["suites"])
    rows = []
    for a, b in arm_pairs(report):
        runs_a, runs_b = _by_seed(report, a), _by_seed(report, b)
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            continue
        for which in (CHAMPION, ENSEMBLE):
            models = [(_model(runs_a[s], which), _model(runs_b[s], which)) for s in seeds]
            if any(ma is None or mb is None for ma, mb in models):
                continue
            row: dict[str, Any] = {"a": a, "b": b, "model": which, "seeds": seeds,
                                   "val_loss": _summary([ma["val_loss"] - mb["val_loss"]
                                                         for ma, mb in models])}
            for suite in suites:
                if all(suite in ma["scores"] and suite in mb["scores"] for ma, mb in models):
                    row[suite] = _summary([ma["scores"][suite]["score"]
                                           - mb["scores"][suite]["score"]
                                           for ma, mb in models])
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- per example
def read_correct(path: str | Path, suites: Iterable[str] | None = None
                 ) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """From an evaluation's samples file (``--log-samples``, one JSON line per scored pair):
    per (suite, task), per model label, whether each pair was scored right (good > bad; a
    tie is wrong, as in the suites' accuracy), in the file's index order."""
    keep = set(suites) if suites is not None else None
    rows: dict[tuple[str, str], dict[str, list[tuple[int, bool]]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            if keep is not None and s["suite"] not in keep:
                continue
            per = rows.setdefault((s["suite"], s["task"]), {})
            for label, (good, bad) in s["loglikelihoods"].items():
                per.setdefault(label, []).append((s["index"], good > bad))
    return {key: {lb: np.array([ok for _, ok in sorted(v)], dtype=bool) for lb, v in per.items()}
            for key, per in rows.items()}


def bootstrap_difference(strata: Sequence[tuple[np.ndarray, np.ndarray, float]],
                         n_boot: int = 10_000, level: float = 0.95, seed: int = 0
                         ) -> dict[str, float]:
    """Paired bootstrap of Σ_s w_s·(mean(a_s) − mean(b_s)) over strata (a_s, b_s, w_s) of
    paired 0/1 verdicts: each stratum's pairs are resampled with replacement, both models'
    verdicts on a pair staying together. Returns the observed value and the percentile
    interval. (A pair's difference is −1, 0 or 1, so a stratum's resampled mean is drawn
    exactly from the multinomial of those three counts.)"""
    rng = np.random.default_rng(seed)
    observed = 0.0
    draws = np.zeros(n_boot)
    for a, b, w in strata:
        if len(a) != len(b):
            raise ValueError(f"paired verdicts of different lengths ({len(a)} and {len(b)})")
        n = len(a)
        if n == 0:
            continue
        up, down = int(np.sum(a & ~b)), int(np.sum(~a & b))
        observed += w * (up - down) / n
        counts = rng.multinomial(n, [up / n, down / n, 1 - (up + down) / n], size=n_boot)
        draws += w * (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return {"difference": observed, "low": float(lo), "high": float(hi), "level": level,
            "n_boot": n_boot}


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test of paired 0/1 verdicts: the discordant pairs (a right and b
    wrong: ``a_only``; the reverse: ``b_only``) and the two-sided binomial p-value."""
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(a_only, b_only)
    # P(X ≤ k) for X ~ Binomial(n, 1/2), in logs so that n in the tens of thousands is fine
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    cdf = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * cdf)}


def example_differences(report: Mapping[str, Any], out: str | Path,
                        suites: Sequence[str] | None = None, n_boot: int = 10_000
                        ) -> list[dict[str, Any]]:
    """Per pair of arms, per zero-shot suite: the champions' macro accuracy difference
    (mean over seeds), its paired-bootstrap interval and McNemar's test, from each arm's
    samples file under ``out`` (arms evaluated without one are left out)."""
    suites = list(suites if suites is not None else report["suites"])
    out = Path(out)
    cache: dict[Path, dict] = {}

    def verdicts(arm: Mapping[str, Any]) -> dict | None:
        path = out / arm["dir"] / SAMPLES_FILE
        if path not in cache:
            cache[path] = read_correct(path, suites) if path.exists() else None
        return cache[path]

    rows = []
    for a, b in arm_pairs(report):
        runs_a, runs_b = _by_seed(report, a), _by_seed(report, b)
        seeds = sorted(set(runs_a) & set(runs_b))
        for suite in suites:
            strata, pooled_a, pooled_b = [], [], []
            for s in seeds:
                va, vb = verdicts(runs_a[s]), verdicts(runs_b[s])
                if va is None or vb is None:
                    strata = []
                    break
                la, lb = _model(runs_a[s], CHAMPION)["label"], _model(runs_b[s], CHAMPION)["label"]
                tasks = sorted(t for (su, t) in va if su == suite and (su, t) in vb)
                for t in tasks:
                    x, y = va[(suite, t)][la], vb[(suite, t)][lb]
                    strata.append((x, y, 1.0 / (len(tasks) * len(seeds))))
                    pooled_a.append(x)
                    pooled_b.append(y)
            if not strata:
                continue
            rows.append({"a": a, "b": b, "suite": suite, "seeds": seeds,
                         "bootstrap": bootstrap_difference(strata, n_boot),
                         "mcnemar": mcnemar(np.concatenate(pooled_a),
                                            np.concatenate(pooled_b))})
    return rows


def format_tables(report: Mapping[str, Any]) -> list[str]:
    """The report's markdown sections for the paired differences (empty without any)."""
    lines: list[str] = []
    rows = report.get("paired") or []
    suites = list(report["suites"])
    if rows:
        lines += ["", "## Paired differences over seeds", "",
                  "Each cell is the mean over seeds of the difference a − b within a seed "
                  "(same tokenizer, data order and initial draw) ± its standard error; ✓ marks "
                  "|mean| > 2 stderr. Losses in nats/token (negative: a is better), scores in "
                  "points (positive: a is better).", ""]
        head = ["a − b", "model", "seeds", "Δ val loss", *(f"Δ {s}" for s in suites)]
        body = []
        for r in rows:
            cells = [f"{r['a']} − {r['b']}", r["model"], str(len(r["seeds"])),
                     _cell(r["val_loss"], 1.0, 3)]
            cells += [_cell(r[s], 100.0, 1) if s in r else "-" for s in suites]
            body.append(cells)
        lines += _io.md_table(head, body)
    examples = report.get("paired_examples") or []
    if examples:
        lines += ["", "## Per-example paired intervals", "",
                  "The champions' macro accuracy difference a − b (points) with a 95% paired "
                  "bootstrap interval (pairs resampled within each seed and task, both "
                  "verdicts on a pair kept together), and McNemar's exact test on the pooled "
                  "discordant pairs (a right only / b right only).", ""]
        body = [[f"{r['a']} − {r['b']}", r["suite"],
                 f"{100 * r['bootstrap']['difference']:+.2f}",
                 f"[{100 * r['bootstrap']['low']:+.2f}, {100 * r['bootstrap']['high']:+.2f}]",
                 f"{r['mcnemar']['a_only']:,} / {r['mcnemar']['b_only']:,}",
                 f"{r['mcnemar']['p_value']:.3g}"] for r in examples]
        lines += _io.md_table(["a − b", "suite", "Δ macro", "95% interval", "discordant",
                               "McNemar p"], body)
    return lines


def _cell(summary: Mapping[str, Any], scale: float, digits: int) -> str:
    text = f"{scale * summary['mean']:+.{digits}f}"
    if summary["stderr"] is not None:
        text += f" ± {scale * summary['stderr']:.{digits}f}" + (
            " ✓" if summary["significant"] else "")
    return text

