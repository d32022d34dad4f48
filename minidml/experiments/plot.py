"""Pictures of a run or a comparison (matplotlib, from the optional extra ``minidml[plot]``).

For a run directory: training and validation loss per student (and the ensemble's), ω over
time when it was learned, and a learning curve (suite scores and validation loss against
words seen, on a log axis, each suite beside the official 2026 baseline's final score)
once checkpoints were evaluated with ``minidml eval --step``. For a
comparison directory (``minidml compare``): each arm's validation loss (every seed), the
suite scores of every arm's champion as bars with standard errors, ω over time for every arm
that learns it (wml and its variants, every seed), and with ``--vary`` arms how much each
variant changed its arm's validation losses, the paired differences between arms'
champions (means over seeds with their 95% intervals), and with ``--curve-suites`` each
arm's champion against words seen. Files are written as PNG and SVG
under ``DIR/plots/``. The figures are built with matplotlib's object-oriented API, so
importing or calling this changes no global matplotlib state (no pyplot, no backend switch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import _io
from ..config import TrainConfig
from ..errors import MinidmlError
from ..evaluation.baselines import full_task, official_baseline
from ..rundir import checkpoint_scores, read_metrics, read_run_config
from ..words import WordCount, format_words
from .paired import t_critical
from .report import champion_and_ensemble_rows, report_columns

FORMATS = ("png", "svg")
ARM_COLOURS = {"single": "#7f7f7f", "kd": "#d62728", "dml": "#1f77b4", "wml": "#2ca02c",
               "teacher": "#ff9896"}


def _figure(width: float = 7.0, height: float = 4.2):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MinidmlError("minidml plot needs matplotlib; install it with "
                           "pip install 'minidml[plot]'") from None
    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _save(fig, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{name}.{ext}"
        with _io.atomic_open(path, "wb") as f:
            fig.savefig(f, format=ext)
        paths.append(path)
    return paths


def _series(records: list[dict[str, Any]], event: str, key: str) -> tuple[list, list]:
    rows = [r for r in records if r.get("event") == event and key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def plot(path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
         formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw the figures of a run or comparison directory; returns the files written."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path / "plots"
    if (path / "compare.json").exists():
        return _plot_comparison(path, out, formats)
    if (path / "config.json").exists():
        return _plot_run(path, out, formats)
    raise MinidmlError(f"{path}: neither a run (config.json) nor a comparison (compare.json); "
                       "give a directory written by minidml train or minidml compare")


# ----------------------------------------------------------------------------- one run
def _plot_run(run_dir: Path, out: Path, formats: Sequence[str]) -> list[Path]:
    records = read_metrics(run_dir / "metrics.jsonl")
    if not any(r.get("event") == "train" for r in records):
        raise MinidmlError(f"{run_dir / 'metrics.jsonl'}: no training records yet; train "
                           "longer (they come every --log-every steps)")
    fig = _figure(9.0, 4.0)
    left, right = fig.subplots(1, 2, sharey=True)
    steps, losses = _series(records, "train", "ce")
    k = len(losses[0])
    for i in range(k):
        left.plot(steps, [v[i] for v in losses], label=f"student {i}", lw=1.2)
    left.set(title="training cross-entropy", xlabel="step", ylabel="nats / token")
    steps, val = _series(records, "eval", "val_loss")
    for i in range(k):
        right.plot(steps, [v[i] for v in val], marker="o", ms=3, label=f"student {i}")
    if k > 1:
        _, ens = _series(records, "eval", "ensemble_val_loss")
        right.plot(steps, ens, "k--", marker="s", ms=3, label="ω-ensemble")
    right.set(title="validation loss", xlabel="step")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(run_dir.name)
    paths = _save(fig, out, "losses", formats)
    omega = _omega_figure(records, run_dir.name)
    if omega is not None:
        paths += _save(omega, out, "omega", formats)
    curve = _curve_figure(run_dir, records)
    if curve is not None:
        paths += _save(curve, out, "curve", formats)
    return paths


def _curve_figure(run_dir: Path, records: list[dict[str, Any]]):
    """Suite scores of evaluated checkpoints and validation loss against words seen (log
    axis), each suite beside the official 2026 baseline's final score; against training
    minutes for a run that did not count its words."""
    scores = checkpoint_scores(run_dir)
    if not scores:
        return None
    trains = [r for r in records if r.get("event") == "train" and "train_seconds" in r]
    count = _word_count(run_dir)
    if count is None and not trains:  # nothing to draw against (metrics from before)
        return None

    def x_of(step: int) -> float:
        if count is not None:
            return count.per_model(step)
        before = [r for r in trains if r["step"] <= step] or trains[:1]
        return before[-1]["train_seconds"] / 60

    xlabel = "words seen (each model)" if count is not None else "training minutes"
    fig = _figure(9.0, 4.0)
    left, right = fig.subplots(1, 2)
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for step, doc in scores.items():
        for label, groups in doc.get("groups", {}).items():
            for suite in dict.fromkeys(g.get("suite", n) for n, g in groups.items()):
                # the suite's own macro (its group of the same name), else its first group
                g = groups.get(suite) or next(v for v in groups.values()
                                              if v.get("suite") == suite)
                series.setdefault((suite, label), []).append(
                    (x_of(step), 100 * g["score"], 100 * g.get("score_stderr", 0.0)))
    drawn: set[str] = set()
    for (suite, label), pts in sorted(series.items()):
        x, y, err = zip(*sorted(pts), strict=True)
        line = left.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3,
                             label=f"{suite} ({label})")
        base = official_baseline(suite)
        if base is not None and suite not in drawn:
            drawn.add(suite)
            left.axhline(100 * base, color=line[0].get_color(), lw=1.0, ls="--",
                         label=f"{full_task(suite)}: official baseline, final")
    left.axhline(50, color="k", lw=0.8, ls=":")
    left.set(title="suite scores of checkpoints", xlabel=xlabel, ylabel="score (%, or 100·ρ)")
    left.legend(fontsize=6)
    steps, val = _series(records, "eval", "val_loss")
    for i in range(len(val[0]) if val else 0):
        right.plot([x_of(s) for s in steps], [v[i] for v in val], label=f"student {i}")
    right.set(title="validation loss", xlabel=xlabel, ylabel="nats / token")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if count is not None:
            words_axis(ax)
    right.legend(fontsize=8)
    fig.suptitle(run_dir.name)
    return fig


def words_axis(ax) -> None:
    """A log x axis ticked as word counts (1M, 2M, 5M, …)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_words(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _word_count(run_dir: Path) -> WordCount | None:
    """How the run's steps turn into words seen (None: it did not count words)."""
    meta = read_run_config(run_dir)
    words = meta.get("words")
    if not words:
        return None
    config = TrainConfig.from_dict(meta["config"], str(run_dir / "config.json"))
    try:
        return WordCount(int(words["corpus_words"]), int(words["corpus_tokens"]),
                         config.tokens_per_step)
    except (KeyError, TypeError, ValueError):  # a hand-edited record: draw against time
        return None


def _omega_figure(records: list[dict[str, Any]], title: str):
    steps, omega = _series(records, "omega", "omega")
    if not steps:
        return None
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    _omega_lines(ax, steps, omega)
    ax.set(title=f"learned peer weights: {title}", xlabel="step", ylabel="ω", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _omega_lines(ax, steps: list, omega: list, colours: Sequence[str] | None = None,
                 labelled: bool = True, **style: Any) -> None:
    """One line per student's ω (``colours`` in turn, else matplotlib's cycle)."""
    for i in range(len(omega[0]) if omega else 0):
        colour = {"color": colours[i % len(colours)]} if colours else {}
        ax.plot(steps, [w[i] for w in omega], label=f"ω{i} (student {i})" if labelled else None,
                **colour, **style)


# ----------------------------------------------------------------------------- comparison
def _plot_comparison(cmp_dir: Path, out: Path, formats: Sequence[str]) -> list[Path]:
    try:
        report = json.loads((cmp_dir / "report.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinidmlError(f"{cmp_dir}: no report.json yet; finish it with minidml compare "
                           "--resume") from None
    first_seed = min(a["seed"] for a in report["arms"])
    paths = []

    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    for arm in report["arms"]:
        if "base_arm" in arm:  # variants have a figure of their own
            continue
        first = arm["seed"] == first_seed  # the first seed labelled; the others fainter
        style = dict(color=ARM_COLOURS.get(arm["arm"]), lw=1.5 if first else 0.8,
                     alpha=1.0 if first else 0.45)
        records = read_metrics(cmp_dir / arm["dir"] / "metrics.jsonl")
        steps, val = _series(records, "eval", "val_loss")
        champion = next(i for i, m in enumerate(arm["models"]) if m["champion"])
        ax.plot(steps, [v[champion] for v in val], marker="o" if first else None, ms=3,
                label=f"{arm['arm']} (student {champion})" if first else None, **style)
        if "teacher" in arm:
            t_steps, t_val = _series(read_metrics(cmp_dir / arm["teacher"]["dir"] /
                                                  "metrics.jsonl"), "eval", "val_loss")
            ax.plot(t_steps, [v[0] for v in t_val], ls=":",
                    label="kd's teacher" if first else None,
                    **(style | {"color": ARM_COLOURS["teacher"]}))
    ax.axhline(report["unigram_entropy"], color="k", lw=0.8, ls="--", label="unigram entropy")
    seeds = len({a["seed"] for a in report["arms"]})
    ax.set(title="validation loss of each arm's champion"
           + (f" (seed {first_seed}; fainter: the other {seeds - 1})" if seeds > 1 else ""),
           xlabel="step",
           ylabel="nats / token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths += _save(fig, out, "validation", formats)

    rows = [r for r in report["table"] if r.get("champion_row")]
    suites = [s for s in report["suites"] if any(s in r for r in rows)]
    if suites:
        fig = _figure(max(5.0, 1.8 * len(suites) + 2), 4.2)
        ax = fig.subplots()
        width = 0.8 / len(rows)
        for j, row in enumerate(rows):
            xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(suites))]
            ys = [100 * row[s]["score"] if s in row else 0 for s in suites]
            err = [100 * row[s].get("seed_sd", row[s]["stderr"]) if s in row else 0
                   for s in suites]
            ax.bar(xs, ys, width, yerr=err, capsize=3, color=ARM_COLOURS.get(row["arm"]),
                   label=f"{row['arm']} ({row['model']}, {row['n_params'] / 1e6:.1f}M)")
        low = min(100 * r[s]["score"] for r in rows for s in suites if s in r)
        ax.set_ylim(max(0, 10 * int(low // 10) - 10), None)
        ax.set_xticks(range(len(suites)), suites)
        ax.set(title="champion of each arm", ylabel="accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        fig.legend(fontsize=8, loc="outside lower center", ncol=min(4, len(rows)),
                   frameon=False)
        paths += _save(fig, out, "scores", formats)

    # each figure only where the comparison has what it draws
    for name, figure in (("omega", _omega_arms_figure(cmp_dir, report)),
                         ("variants", _variants_figure(report)),
                         ("curves", _curves_figure(report)),
                         ("paired", _paired_figure(report)),
                         ("curves-paired", _curves_paired_figure(report))):
        if figure is not None:
            paths += _save(figure, out, name, formats)
    return paths


def _omega_arms_figure(cmp_dir: Path, report: dict[str, Any]):
    """ω over training for every arm that learns it (wml and its variants), a panel each:
    one colour per student, the first seed solid and the others dashed."""
    names = list(dict.fromkeys(a["arm"] for a in report["arms"] if a.get("mode") == "wml"))
    if not names:
        return None
    fig = _figure(min(4.0 * len(names), 12.0) + 0.5, 3.4 * -(-len(names) // 3))
    axes = fig.subplots(-(-len(names) // 3), min(len(names), 3), sharey=True,
                        squeeze=False).ravel()
    colours = ARM_COLOURS["dml"], ARM_COLOURS["kd"], ARM_COLOURS["wml"], "#9467bd", "#8c564b"
    for ax, name in zip(axes, names, strict=False):
        runs = sorted((a for a in report["arms"] if a["arm"] == name), key=lambda a: a["seed"])
        for n, arm in enumerate(runs):
            steps, omega = _series(read_metrics(cmp_dir / arm["dir"] / "metrics.jsonl"),
                                   "omega", "omega")
            _omega_lines(ax, steps, omega, colours, labelled=n == 0,
                         ls="-" if n == 0 else "--", lw=1.4 if n == 0 else 0.9)
        ax.set(title=f"{name} ({_seeds(len(runs))})", xlabel="step",
               ylim=(0, 1))
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].set_ylabel("ω")
    axes[0].legend(fontsize=8)
    fig.suptitle("learned peer weights ω (first seed solid, the others dashed)", fontsize=9)
    return fig


def _seeds(n: int) -> str:
    """``1 seed``, ``3 seeds``: how many seeds a line or a bar is the mean of."""
    return f"{n} seed{'s' * (n > 1)}"


def _curves_figure(report: dict[str, Any]):
    """The learning curves (:mod:`minidml.experiments.curves`): per curve suite, each arm's
    champion's mean score over seeds (± its standard error) against words seen, in the
    comparison's accounting, beside the official 2026 baseline's final score."""
    rows = report.get("curves") or []
    suites = report.get("curve_suites") or []
    if not rows or not suites:
        return None
    total = report["settings"]["compare"].get("words") == "total"
    fig = _figure(4.2 * len(suites) + 0.6, 3.8)
    axes = fig.subplots(1, len(suites), squeeze=False)[0]
    base_arm = {a["arm"]: a.get("base_arm", a["arm"]) for a in report["arms"]}
    names = list(dict.fromkeys(n for r in rows for n in r["arms"]))
    for ax, suite in zip(axes, suites, strict=True):
        for name in names:
            pts = sorted((r["arms"][name]["at"], 100 * r["arms"][name][suite]["score"],
                          100 * r["arms"][name][suite]["stderr"]) for r in rows
                         if name in r["arms"])
            x, y, err = zip(*pts, strict=True)
            seeds = max(r["arms"][name]["seeds"] for r in rows if name in r["arms"])
            ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2,
                        label=f"{name} ({_seeds(seeds)})",
                        color=ARM_COLOURS.get(name),
                        ls="-" if base_arm.get(name) == name else "--")
        base = official_baseline(suite)
        if base is not None:
            ax.axhline(100 * base, color="k", lw=1.0, ls="--",
                       label=f"{full_task(suite)}: official baseline, final")
        _words_panel(ax, suite, total, "score (%, or 100·ρ)")
    axes[0].legend(fontsize=7)
    fig.suptitle("each arm's champion at its checkpoints by words (mean over its seeds "
                 "± standard error)", fontsize=9)
    return fig


def _words_panel(ax, suite: str, total: bool, ylabel: str) -> None:
    """A curve suite's panel against words on a log axis: each model's words, or (``total``)
    an arm's models' words together."""
    ax.set(title=suite, xlabel="words read by an arm's models together" if total
           else "words seen (each model)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    words_axis(ax)


PAIR_COLOURS = ("#2ca02c", "#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#bcbd22", "#7f7f7f", "#ff7f0e")


def _curves_paired_figure(report: dict[str, Any]):
    """Where the arms separate, and whether they converge: per curve suite, the paired
    difference a − b of each pair of arms' champions at each checkpoint by words (the end of
    training last), its mean over seeds with a 95% t-interval where there are two seeds or
    more."""
    suites = report.get("curve_suites") or []

    def words(row: dict[str, Any]) -> float:  # the end: where the arms stopped
        at = [a["at"] for a in row["arms"].values()]
        return row["milestone"] if row["milestone"] != "end" else sum(at) / len(at)

    by_pair: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}
    for row in report.get("curves") or []:
        for p in row["pairs"]:
            by_pair.setdefault((p["a"], p["b"]), []).append((words(row), p))
    if not by_pair or not suites:
        return None
    total = report["settings"]["compare"].get("words") == "total"
    fig = _figure(4.2 * len(suites) + 0.6, 3.8)
    axes = fig.subplots(1, len(suites), squeeze=False)[0]
    for ax, suite in zip(axes, suites, strict=True):
        for n, ((a, b), points) in enumerate(by_pair.items()):
            pts = sorted(((w, p[suite], len(p["seeds"])) for w, p in points if suite in p),
                         key=lambda t: t[0])
            if not pts:
                continue
            x = [w for w, _, _ in pts]
            y = [100 * cell["mean"] for _, cell, _ in pts]
            err = [0.0 if cell["stderr"] is None else 100 * t_critical(k - 1) * cell["stderr"]
                   for _, cell, k in pts]
            ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2,
                        color=PAIR_COLOURS[n % len(PAIR_COLOURS)],
                        label=f"{a} − {b} ({_seeds(max(k for _, _, k in pts))})")
        ax.axhline(0, color="k", lw=0.8)
        _words_panel(ax, suite, total, "Δ score (points, or 100·Δρ)")
    axes[0].legend(fontsize=7)
    fig.suptitle("champions, a − b within a seed at each checkpoint by words (the last point: "
                 "the end of training): mean over seeds, 95% t-interval where there are two "
                 "or more", fontsize=9)
    return fig


def _paired_figure(report: dict[str, Any]):
    """Per pair of arms (their champions), the mean over seeds of the paired difference
    a − b of the validation loss and of each score column, with 95% t-intervals (none with
    one seed): one panel per quantity."""
    rows = [r for r in report.get("paired") or [] if r["model"] == "champion"]
    if not rows:
        return None
    columns = ["val_loss", *(c for c in report_columns(report) if any(c in r for r in rows))]
    fig = _figure(2.6 * len(columns) + 1.6, 1.0 + 0.4 * len(rows))
    axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
    names = [f"{r['a']} − {r['b']} ({_seeds(len(r['seeds']))})" for r in rows]
    for ax, column in zip(axes, columns, strict=True):
        scale = 1.0 if column == "val_loss" else 100.0
        ys, means, errs = [], [], []
        for y, r in enumerate(rows):
            if column not in r:
                continue
            cell = r[column]
            ys.append(y)
            means.append(scale * cell["mean"])
            half = (t_critical(len(r["seeds"]) - 1) * cell["stderr"]
                    if cell["stderr"] is not None else 0.0)
            errs.append(scale * half)
        better = [(m < 0) == (column == "val_loss") for m in means]
        ax.barh(ys, means, 0.6, xerr=errs, capsize=3,
                color=["#2ca02c" if b else "#d62728" for b in better])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title("Δ validation loss (nats)" if column == "val_loss"
                     else f"Δ {column} (points)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].invert_yaxis()
    fig.suptitle("champions, a − b within a seed: mean over the seeds both arms finished, "
                 "95% t-interval where there are two or more (green: a better)", fontsize=9)
    return fig


def _variants_figure(report: dict[str, Any]):
    """Per variant, the change of its champion's and its ensemble's validation loss from
    its arm's (negative: the variant is better)."""
    rows = champion_and_ensemble_rows(report)
    champion, ensemble = ({arm: r["val_loss"] for arm, r in by.items()} for by in rows)
    # a variant whose arm has not finished yet has nothing to be set against
    base = {a["arm"]: a["base_arm"] for a in report["arms"]
            if a.get("base_arm") in champion and a["arm"] in champion}
    if not base:
        return None
    names = list(base)
    fig = _figure(7.0, 1.2 + 0.45 * len(names))
    ax = fig.subplots()
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], [champion[n] - champion[base[n]] for n in names], 0.4,
            color="#4d4d4d", label="champion")
    with_ensemble = [(y, n) for y, n in zip(ys, names, strict=True)
                     if n in ensemble and base[n] in ensemble]
    if with_ensemble:
        ax.barh([y + 0.2 for y, _ in with_ensemble],
                [ensemble[n] - ensemble[base[n]] for _, n in with_ensemble], 0.4,
                color="#b3b3b3", label="ensemble")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set(title="each variant minus its arm (lower is better)",
           xlabel="Δ validation loss (nats / token)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
