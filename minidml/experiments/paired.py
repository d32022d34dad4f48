"""Paired comparisons of :func:`minidml.experiments.compare.compare`'s arms.

Two arms trained with the same seed share the tokenizer, the order of the data and the
initial draw of every student, so much of what makes one seed's score differ from another's
is common to both, and the difference between the arms is measured with less noise than
either score alone. Two views are given:

* **per-seed differences** (:func:`seed_differences`): for each pair of arms (``wml − dml``,
  ``wml − kd``, ``wml − single``, ``dml − single``, ``kd − single``, and each variant minus
  its arm), for their champions (and their ensembles where both have one, and each student
  of the same shape in both, like for like where the champions differ), the difference
  of the validation loss and of each suite's macro score within every seed, then the mean
  over seeds ± its standard error (the seeds' standard deviation ÷ √S; none for S = 1), and
  whether the mean differs from 0 by a two-sided t-test at 95% (S − 1 degrees of freedom):
  this is the view that includes the noise of training;
* **per-example intervals** (:func:`example_differences`): both models scored the very same
  minimal pairs, so the difference of their macro accuracies (mean over seeds of the mean
  over tasks of the per-task accuracy difference) gets a **paired bootstrap** interval that
  resamples the test items within each task (the macro averages over tasks), an item's
  verdicts by both models in every seed staying together (the seeds scored the same items).
  It measures how much the choice of test items moves the difference between these trained
  models. McNemar's exact test in each seed is given beside it, the classic test for two
  classifiers on the same items; it judges the pooled accuracy, which weighs large tasks
  more than the macro does.

Champions are chosen on validation loss (by :mod:`minidml.experiments.compare`), never on a suite.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..evaluation.scoring import ENSEMBLE
from ..evaluation.suite import first_chosen

__all__ = ["MAIN_PAIRS", "SAMPLES_FILE", "VERDICTS_FILE", "arm_pairs", "bootstrap_difference",
           "cell", "example_differences", "format_tables", "mcnemar", "read_correct",
           "read_verdicts", "results_verdicts", "run_verdicts", "seed_differences", "summary",
           "t_critical", "write_verdicts"]

MAIN_PAIRS = (("wml", "dml"), ("wml", "kd"), ("wml", "single"), ("dml", "single"),
              ("kd", "single"))
SAMPLES_FILE = "eval.samples.jsonl"  # in each arm's run directory
# ... and what the paired tests read of it, a few hundredth of its size (write_verdicts)
VERDICTS_FILE = "eval.verdicts.json"
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


def _both(pairs: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]]
          ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]] | None:
    """The pairs of models, or None where either side of any of them is missing."""
    out = []
    for ma, mb in pairs:
        if ma is None or mb is None:
            return None
        out.append((ma, mb))
    return out


def _same_shapes(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]]
                 ) -> list[str]:
    """The students that two arms share, like for like: a label with the same shape in both
    arms in every seed, leaving out one that is both arms' champion in every seed (the
    champion's row already compares it)."""
    def student(run: Mapping[str, Any], label: str) -> Mapping[str, Any] | None:
        m = _model(run, label)
        return m if m is not None and m.get("shape") is not None else None

    labels = []
    for m in runs_a[0]["models"] if runs_a else []:
        label = m["label"]
        pairs = _both([(student(ra, label), student(rb, label))
                       for ra, rb in zip(runs_a, runs_b, strict=True)])
        if label == ENSEMBLE or pairs is None or any(ma["shape"] != mb["shape"]
                                                     for ma, mb in pairs):
            continue
        if not all(ma.get("champion") and mb.get("champion") for ma, mb in pairs):
            labels.append(label)
    return labels


def _by_seed(report: Mapping[str, Any], name: str) -> dict[int, Mapping[str, Any]]:
    return {a["seed"]: a for a in report["arms"] if a["arm"] == name}


# two-sided 95% critical values of Student's t by degrees of freedom (a df between two keys
# takes the smaller key's, the larger value: conservative)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t_critical(df: int) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` degrees of freedom
    (1.96 beyond 120)."""
    if df < 1:
        raise ValueError("t_critical: needs at least one degree of freedom")
    if df > 120:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds, its standard error, and whether the mean differs from 0 at the 95%
    level by a t-test with S − 1 degrees of freedom (|mean| > t·stderr; needs S ≥ 2, and
    None where every seed's difference is the same: no spread, no test)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "stderr": None, "significant": None, "per_seed": list(values)}
    se = statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "stderr": se,
            "significant": abs(mean) > t_critical(len(values) - 1) * se if se > 0 else None,
            "per_seed": list(values)}


def seed_differences(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per pair of arms and per model (champion; ensemble where both arms have one; each
    student of the same shape in both, unless it is both arms' champion throughout): the
    per-seed differences a − b of the validation loss and of each suite's macro score (and
    of their mean, the report's ``macro`` column), and their summary over the seeds that both
    arms ran (see the module's docstring)."""
    suites = list(report.get("score_columns", report["suites"]))
    rows = []
    for a, b in arm_pairs(report):
        runs_a, runs_b = _by_seed(report, a), _by_seed(report, b)
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            continue
        for which in (CHAMPION, ENSEMBLE, *_same_shapes([runs_a[s] for s in seeds],
                                                       [runs_b[s] for s in seeds])):
            models = _both([(_model(runs_a[s], which), _model(runs_b[s], which))
                            for s in seeds])
            if models is None:
                continue
            row: dict[str, Any] = {"a": a, "b": b, "model": which, "seeds": seeds,
                                   "val_loss": summary([ma["val_loss"] - mb["val_loss"]
                                                         for ma, mb in models])}
            for suite in suites:
                if all(suite in ma["scores"] and suite in mb["scores"] for ma, mb in models):
                    row[suite] = summary([ma["scores"][suite]["score"]
                                           - mb["scores"][suite]["score"]
                                           for ma, mb in models])
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- per example
def read_correct(path: str | Path, suites: Iterable[str] | None = None
                 ) -> dict[tuple[str, str], dict[str, dict[int, bool]]]:
    """From an evaluation's samples file (``--log-samples``, one JSON line per scored item):
    per (suite, task), per model label, whether each item (by its index in the task's file)
    was scored right, as the suites' accuracy counts it
    (:func:`minidml.evaluation.suite.first_chosen`)."""
    keep = set(suites) if suites is not None else None
    rows: dict[tuple[str, str], dict[str, dict[int, bool]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            if keep is not None and s["suite"] not in keep:
                continue
            per = rows.setdefault((s["suite"], s["task"]), {})
            for label, scores in s["loglikelihoods"].items():
                per.setdefault(label, {})[s["index"]] = first_chosen(scores)
    return rows


def results_verdicts(results: Any) -> dict[tuple[str, str], dict[str, dict[int, bool]]]:
    """The per-item verdicts of an evaluation still in memory (an
    :class:`~minidml.evaluation.runner.EvalResults`), as :func:`run_verdicts` reads them from
    its files: the tasks it scored by accuracy, each item by its index."""
    rows: dict[tuple[str, str], dict[str, dict[int, bool]]] = {}
    primary: dict[tuple[str, str], str | None] = {}
    for o in results.outcomes:
        if o.result is None:
            continue
        primary.update(((o.spec.name, name), t.primary)
                       for per in o.result.tasks.values() for name, t in per.items())
        for s in o.result.samples:
            per = rows.setdefault((o.spec.name, s.task), {})
            for label, scores in s.scores.items():
                per.setdefault(label, {})[s.index] = first_chosen(scores)
    return _accuracy_only(rows, primary)


def _accuracy_only(rows: dict[tuple[str, str], dict[str, dict[int, bool]]],
                   primary: Mapping[tuple[str, str], str | None]
                   ) -> dict[tuple[str, str], dict[str, dict[int, bool]]]:
    """``rows`` without the tasks whose primary metric is not accuracy (wug's correlation):
    their items have no right or wrong to pair. A task ``primary`` does not name counts as
    accuracy."""
    return {k: v for k, v in rows.items() if primary.get(k, "acc") == "acc"}


def run_verdicts(run_dir: str | Path, suites: Iterable[str] | None = None
                 ) -> dict[tuple[str, str], dict[str, dict[int, bool]]] | None:
    """A run's per-item verdicts on the tasks its evaluation scored by accuracy: its
    :data:`VERDICTS_FILE`, else read from its :data:`SAMPLES_FILE` (tasks whose primary
    metric in its ``eval.json`` is not accuracy, such as wug's correlation, left out);
    None where it has neither."""
    run_dir = Path(run_dir)
    if (run_dir / VERDICTS_FILE).exists():
        return read_verdicts(run_dir / VERDICTS_FILE, suites)
    if not (run_dir / SAMPLES_FILE).exists():
        return None
    rows = read_correct(run_dir / SAMPLES_FILE, suites)
    try:
        results = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["results"]
        primary = {tuple(k.split("/", 1)): v.get("primary")
                   for per in results.values() for k, v in per.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return rows
    return _accuracy_only(rows, primary)


def write_verdicts(path: str | Path,
                   verdicts: Mapping[tuple[str, str], Mapping[str, Mapping[int, bool]]]) -> None:
    """``verdicts`` (as :func:`read_correct` gives them) in a compact file: per suite, task
    and model, its items' indices as runs ``[first, count]`` and whether each was scored
    right as a string of ``1`` and ``0``, in the order of the indices. A run's directory
    keeps everything the per-example tests need in it, without the samples' texts."""
    doc: dict[str, Any] = {}
    for (suite, task), per in sorted(verdicts.items()):
        for label, items in sorted(per.items()):
            order = sorted(items)
            runs: list[list[int]] = []
            for i in order:
                if runs and runs[-1][0] + runs[-1][1] == i:
                    runs[-1][1] += 1
                else:
                    runs.append([i, 1])
            doc.setdefault(suite, {}).setdefault(task, {})[label] = {
                "index": runs, "correct": "".join("1" if items[i] else "0" for i in order)}
    _io.write_json(path, {"format": 1, "verdicts": doc})


def read_verdicts(path: str | Path, suites: Iterable[str] | None = None
                  ) -> dict[tuple[str, str], dict[str, dict[int, bool]]]:
    """What :func:`write_verdicts` wrote, as :func:`read_correct` gives it."""
    keep = set(suites) if suites is not None else None
    doc = json.loads(Path(path).read_text(encoding="utf-8"))["verdicts"]
    rows: dict[tuple[str, str], dict[str, dict[int, bool]]] = {}
    for suite, tasks in doc.items():
        if keep is not None and suite not in keep:
            continue
        for task, per in tasks.items():
            for label, v in per.items():
                order = [i for first, n in v["index"] for i in range(first, first + n)]
                rows.setdefault((suite, task), {})[label] = {
                    i: c == "1" for i, c in zip(order, v["correct"], strict=True)}
    return rows


def bootstrap_difference(strata: Sequence[tuple[np.ndarray, float]], n_boot: int = 10_000,
                         level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of Σ_s w_s·mean(d_s) over strata (d_s, w_s), where d_s holds one
    value per item: a − b of the two models' verdicts on it (averaged over seeds when the
    same items were scored by each seed's models). Each stratum's items are resampled with
    replacement, so both models' verdicts on an item, in every seed, stay together. Returns
    the observed value and the percentile interval. (An item's d takes few distinct values,
    so a stratum's resampled mean is drawn exactly from the multinomial of their counts.)"""
    rng = np.random.default_rng(seed)
    observed = 0.0
    draws = np.zeros(n_boot)
    for d, w in strata:
        d = np.asarray(d, dtype=np.float64)
        n = len(d)
        if n == 0:
            continue
        values, counts = np.unique(d, return_counts=True)
        observed += w * float(d.mean())
        drawn = rng.multinomial(n, counts / n, size=n_boot)
        draws += w * (drawn @ values) / n
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return {"difference": observed, "low": float(lo), "high": float(hi), "level": level,
            "n_boot": n_boot}


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test of paired 0/1 verdicts: the discordant pairs (a right and b
    wrong: ``a_only``; the reverse: ``b_only``) and the two-sided binomial p-value."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired verdicts of different lengths ({len(a)} and {len(b)})")
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
    (mean over seeds of the mean over tasks), its paired-bootstrap interval, and McNemar's
    test in each seed, from each arm's samples file under ``out`` (pairs of arms with a
    seed evaluated without one are left out).

    The items are the same in every seed, so the bootstrap resamples items (within each
    task) and takes each item's difference averaged over the seeds: the interval says how
    much the test items' sampling moves the difference between these trained models; the
    spread between seeds is :func:`seed_differences`' business."""
    suites = list(suites if suites is not None else report["suites"])
    out = Path(out)
    cache: dict[Path, dict | None] = {}

    def verdicts(arm: Mapping[str, Any]) -> dict | None:
        path = out / arm["dir"]
        if path not in cache:
            cache[path] = run_verdicts(path, suites)
        return cache[path]

    rows = []
    for a, b in arm_pairs(report):
        runs_a, runs_b = _by_seed(report, a), _by_seed(report, b)
        seeds = sorted(set(runs_a) & set(runs_b))
        sides = []  # per seed: (verdicts of a's champion, of b's champion), per task
        for s in seeds:
            va, vb = verdicts(runs_a[s]), verdicts(runs_b[s])
            ma, mb = _model(runs_a[s], CHAMPION), _model(runs_b[s], CHAMPION)
            if va is None or vb is None or ma is None or mb is None:
                break
            sides.append((va, vb, ma["label"], mb["label"]))
        if not seeds or len(sides) < len(seeds):
            continue
        for suite in suites:
            tasks = set.intersection(*({t for (su, t) in va if su == suite} & {
                t for (su, t) in vb if su == suite} for va, vb, _, _ in sides))
            strata = []
            # per seed: the verdicts of a's champion and of b's, an array per task
            per_seed: list[tuple[list[np.ndarray], list[np.ndarray]]] = [
                ([], []) for _ in sides]
            for t in sorted(tasks):
                key = (suite, t)
                items = sorted(set.intersection(*(set(va[key].get(la, {})) & set(
                    vb[key].get(lb, {})) for va, vb, la, lb in sides)))
                if not items:
                    continue
                d = np.zeros(len(items))
                for (va, vb, la, lb), (xa, xb) in zip(sides, per_seed, strict=True):
                    x = np.array([va[key][la][i] for i in items], dtype=bool)
                    y = np.array([vb[key][lb][i] for i in items], dtype=bool)
                    d += (x.astype(float) - y.astype(float)) / len(sides)
                    xa.append(x)
                    xb.append(y)
                strata.append(d)
            if not strata:
                continue
            tests = [mcnemar(np.concatenate(xa), np.concatenate(xb)) for xa, xb in per_seed]
            rows.append({"a": a, "b": b, "suite": suite, "seeds": seeds,
                         "bootstrap": bootstrap_difference(
                             [(d, 1.0 / len(strata)) for d in strata], n_boot),
                         "mcnemar": tests})
    return rows


def format_tables(report: Mapping[str, Any]) -> list[str]:
    """The report's markdown sections for the paired differences (empty without any)."""
    lines: list[str] = []
    rows = report.get("paired") or []
    suites = list(report.get("score_columns", report["suites"]))
    if rows:
        lines += ["", "## Paired differences over seeds", "",
                  "Each cell is the mean over seeds of the difference a − b within a seed "
                  "(same tokenizer, data order and initial draw) ± its standard error; ✓ marks "
                  "a mean that differs from 0 by a two-sided t-test at 95% (S − 1 degrees of "
                  "freedom). Losses in nats/token (negative: a is better), scores in "
                  "points (positive: a is better). A row named for a student compares the "
                  "student of that label in both arms, of the same shape: like for like "
                  "where the champions differ in size.", ""]
        head = ["a − b", "model", "seeds", "Δ val loss", *(f"Δ {s}" for s in suites)]
        body = []
        for r in rows:
            cells = [f"{r['a']} − {r['b']}", r["model"], str(len(r["seeds"])),
                     cell(r["val_loss"], 1.0, 3)]
            cells += [cell(r[s], 100.0, 1) if s in r else "-" for s in suites]
            body.append(cells)
        lines += _io.md_table(head, body)
    examples = report.get("paired_examples") or []
    if examples:
        lines += ["", "## Per-example paired intervals", "",
                  "The champions' macro accuracy difference a − b (points, mean over seeds) "
                  "with a 95% paired bootstrap interval (the test items resampled within each "
                  "task, an item's verdicts in every seed kept together: the noise of the "
                  "test items, given these trained models), and McNemar's exact test in each "
                  "seed on its discordant pairs (a right only / b right only, summed over "
                  "seeds; the largest p over seeds).", ""]
        body = [[f"{r['a']} − {r['b']}", r["suite"],
                 f"{100 * r['bootstrap']['difference']:+.2f}",
                 f"[{100 * r['bootstrap']['low']:+.2f}, {100 * r['bootstrap']['high']:+.2f}]",
                 f"{sum(m['a_only'] for m in r['mcnemar']):,} / "
                 f"{sum(m['b_only'] for m in r['mcnemar']):,}",
                 f"{max(m['p_value'] for m in r['mcnemar']):.3g}"] for r in examples]
        lines += _io.md_table(["a − b", "suite", "Δ macro", "95% interval", "discordant",
                               "McNemar p (largest)"], body)
    return lines


def cell(diff: Mapping[str, Any], scale: float, digits: int) -> str:
    """A difference's table cell (:func:`summary`'s): ``+1.2 ± 0.4 ✓``."""
    text = f"{scale * diff['mean']:+.{digits}f}"
    if diff["stderr"] is not None:
        text += f" ± {scale * diff['stderr']:.{digits}f}" + (
            " ✓" if diff["significant"] else "")
    return text

