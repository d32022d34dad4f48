"""Learning curves by words seen: where a comparison's arms separate, and whether they meet.

With ``curve_suites`` (the fast sets, say), every arm's run keeps a checkpoint at each count
of ``curve_words`` it reaches (1M, 2M, … 10M, 20M, … by default), and its champion there
(the student with the lowest validation loss at the run's latest evaluation before it:
held-out text, never a suite) is scored on those suites, and so is its champion at the end.
Counts are in the comparison's accounting (``CompareConfig.words``): words one model has
seen (``per-model``), or words all of an arm's models have read together, its kd teacher's
training included (``total``): a dml arm of K students reaches the count c once each
student has seen c/K words, a kd student once it has seen c less its teacher's words.

Each point is the run's own ``eval/results-step<N>-<date>.json`` (``minidml plot RUN``
draws it), so a resumed comparison scores only the points it lacks. The report
(:func:`table`, :func:`format_tables`) gives at each count each arm's mean over seeds and,
for each pair of arms (:func:`minidml.experiments.paired.arm_pairs`), the mean over seeds
of their difference within a seed, with its standard error.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import MinidmlError
from ..evaluation.runner import evaluate
from ..evaluation.scoring import student_label
from ..rundir import checkpoint_scores, load
from ..words import WordCount, format_words, track_milestones
from . import paired
from .scores import model_scores, score_text

__all__ = ["DEFAULT_WORDS", "arm_counts", "format_tables", "point", "score_points", "table",
           "targets"]

DEFAULT_WORDS = track_milestones("strict")  # 1M … 10M, 20M … 100M, 200M … 1B
END = "end"  # the row of the runs' last checkpoints: every arm at its equal data


def arm_counts(milestones: Iterable[int], count: WordCount, steps: int, words: str
               ) -> dict[int, int]:
    """``{count: words per model}`` for each of ``milestones`` that a run of ``steps`` steps
    reaches, counted as ``words`` counts (``per-model``, or ``total``: ``count``'s models
    and teacher words together)."""
    out = {}
    for c in sorted(set(milestones)):
        per = c if words == "per-model" else -(-(c - count.teacher_words) // count.models)
        if per >= 1 and count.first_step(per) <= steps:
            out[c] = per
    return out


def score_points(run_dir: Path, final: Any, counts: Mapping[int, int], count: WordCount,
                 words: str, suites: Sequence[str], *, data_dir: Any = None,
                 limit: int | None = None, batch_size: int = 64, progress: bool = False,
                 say: Callable[[str], None] = lambda message: None, label: str = ""
                 ) -> list[dict[str, Any]]:
    """The curve of one run: its champion at the checkpoint of each of ``counts`` (see
    :func:`arm_counts`) and at the end (``final``, the loaded run), scored on ``suites``
    (at most ``limit`` examples per task); points already scored (a results file of that
    step with the champion's scores) are read, not scored again."""
    done = checkpoint_scores(run_dir)
    points = []
    for step, milestone in targets(counts, count, final.step):
        run = final if step == final.step else load(run_dir, str(final.device), step=step)
        champion = student_label(run.champion)
        scores = model_scores(done.get(step, {"groups": {}}), champion, suites)
        if not all(s in scores for s in suites):
            say(f"{label}: scoring its champion at step {step:,} on {', '.join(suites)}")
            results = evaluate(run, suites, student="champion", data_dir=data_dir,
                               limit=limit, batch_size=batch_size, progress=progress)
            failed = [f"{o.spec.name}: {o.error}" for o in results.outcomes if o.status != "ok"]
            if failed:
                raise MinidmlError(f"{label}: the curve's evaluation did not complete "
                                   f"({'; '.join(failed)}); fix it and continue with --resume")
            results.write(run_dir / "eval" / results.file_name(), unique=True)
            done[step] = results.to_json()
            scores = model_scores(done[step], champion, suites)
        points.append(point(milestone, step, count, words, champion, scores))
    return points


def targets(counts: Mapping[int, int], count: WordCount, steps: int
            ) -> list[tuple[int, int | str]]:
    """A curve's points as (step, milestone): the first step at which each of ``counts``
    (see :func:`arm_counts`) is reached, then the run's last step (:data:`END`; a count
    reached at the last step is both)."""
    return [*sorted((count.first_step(per), c) for c, per in counts.items()), (steps, END)]


def point(milestone: int | str, step: int, count: WordCount, words: str, champion: str,
          scores: Mapping[str, Any]) -> dict[str, Any]:
    """One point of a curve: the champion's ``scores`` at ``step``, its words counted both
    ways and as ``words`` counts them (``at``)."""
    per_model, total = count.per_model(step), count.total(step)
    return {"milestone": milestone, "step": step, "words": per_model, "words_total": total,
            "at": per_model if words == "per-model" else total, "champion": champion,
            "scores": dict(scores)}


def table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per count (and :data:`END`): each arm's points (mean over seeds of its champion's
    score per suite, the standard error over seeds, or with one seed the suite's own) and
    each pair's paired difference a − b over the seeds that both reached it."""
    suites = report.get("curve_suites") or []
    arms: dict[str, dict[int, dict[Any, Mapping[str, Any]]]] = {}
    for a in report["arms"]:
        for p in a.get("curve", []):
            arms.setdefault(a["arm"], {}).setdefault(a["seed"], {})[p["milestone"]] = p
    if not suites or not arms:
        return []
    keys = sorted({m for seeds in arms.values() for pts in seeds.values() for m in pts
                   if m != END}) + [END]
    rows = []
    for key in keys:
        row: dict[str, Any] = {"milestone": key, "arms": {}, "pairs": []}
        for name, seeds in arms.items():
            got = [pts[key] for pts in seeds.values() if key in pts]
            if got:
                row["arms"][name] = {"at": statistics.fmean(p["at"] for p in got),
                                     "seeds": len(got),
                                     **{s: _mean_cell([p["scores"][s] for p in got])
                                        for s in suites}}
        for a, b in paired.arm_pairs(report):
            both = sorted(s for s in set(arms.get(a, {})) & set(arms.get(b, {}))
                          if key in arms[a][s] and key in arms[b][s])
            if both:
                row["pairs"].append({"a": a, "b": b, "seeds": both, **{
                    s: paired.summary([arms[a][i][key]["scores"][s]["score"]
                                       - arms[b][i][key]["scores"][s]["score"] for i in both])
                    for s in suites}})
        rows.append(row)
    return rows


def _mean_cell(cells: Sequence[Mapping[str, float]]) -> dict[str, float]:
    scores = [c["score"] for c in cells]
    return {"score": statistics.fmean(scores),
            "stderr": (statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1
                       else cells[0]["stderr"])}


def format_tables(report: Mapping[str, Any]) -> list[str]:
    """The report's markdown section for the curves (empty without any)."""
    rows = report.get("curves") or []
    if not rows:
        return []
    total = report["settings"]["compare"].get("words") == "total"
    unit = ("words read by an arm's models together (its kd teacher's training included)"
            if total else "words seen by each model")
    lines = ["", "## Learning curves by words seen", "",
             f"Each arm's champion at its checkpoint by {unit}, then at the end (its last "
             "step: every arm at its equal data), scored on each curve suite: the mean over "
             "seeds ± its standard error over seeds (with one seed, the suite's own); then "
             "the paired difference a − b within a seed, its mean ± standard error (✓: "
             "differs from 0 by a two-sided t-test at 95%). Points in percent."]
    names = list(dict.fromkeys(n for r in rows for n in r["arms"]))
    pairs = list(dict.fromkeys(f"{p['a']} − {p['b']}" for r in rows for p in r["pairs"]))
    for suite in report["curve_suites"]:
        body = []
        for r in rows:
            first = next(iter(r["arms"].values()))
            words = (f"end ({format_words(first['at'])})" if r["milestone"] == END
                     else format_words(r["milestone"]))
            cells = [words]
            for n in names:
                got = r["arms"].get(n, {}).get(suite)
                cells.append("-" if got is None else score_text(got["score"], got["stderr"]))
            found = {f"{p['a']} − {p['b']}": p[suite] for p in r["pairs"]}
            cells += [paired.cell(found[p], 100.0, 1) if p in found else "-" for p in pairs]
            body.append(cells)
        lines += ["", f"**{suite}**", ""]
        lines += _io.md_table(["words", *names, *pairs], body)
    return lines

