"""A comparison's report: every arm's summaries gathered into one table (champions, each
model, means over seeds), and ``report.md``, the table as a reader sees it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _io
from .._version import __version__
from ..config import default_alpha
from ..counts import format_count
from ..evaluation.scoring import ENSEMBLE
from ..rundir import read_metrics
from ..tokenizer import Tokenizer
from . import curves, paired
from .config import MACRO, TEACHER, CompareConfig, Variant
from .scores import score_text


def build_report(config: CompareConfig, settings: dict[str, Any], tokenizer: Tokenizer,
            shapes: list, teacher: Any, arms: list[dict[str, Any]], entropy: float,
            out: Path) -> dict[str, Any]:
    base = config.train
    arms = [_with_run_summaries(a, out) for a in arms]
    rows = table(config, arms)
    return {
        "minidml_version": __version__, "date": _io.utc_now(), "out": str(out),
        "settings": settings, "suites": list(config.suites),
        "curve_suites": list(config.curve_suites),
        "score_columns": score_columns(config.suites), "seeds": config.seeds,
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256},
        "unigram_entropy": entropy,
        "students": [c.to_dict() for c in shapes], "teacher": teacher.to_dict(),
        "context": base.context, "tokens_per_step": base.tokens_per_step,
        "arms": arms, "table": rows,
    }


def _with_run_summaries(arm: dict[str, Any], cmp_dir: Path) -> dict[str, Any]:
    """``arm`` with both summaries of its run's metrics, the file read once."""
    records = read_metrics(cmp_dir / arm["dir"] / "metrics.jsonl")
    return add_outer_steps(add_best_validation(arm, cmp_dir, records), cmp_dir, records)


def add_best_validation(arm: dict[str, Any], cmp_dir: Path,
                        records: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``arm`` with each model's (and its teacher's) lowest validation loss over the run's
    evaluations and the step of it, read from the run's metrics (``records``, when the
    caller has read them already): what early stopping on held-out text would have kept,
    beside the last evaluation the champion is chosen on."""
    def best(records: Sequence[Mapping[str, Any]],
             models: list[dict[str, Any]]) -> list[dict[str, Any]]:
        evals = [r for r in records if r.get("event") == "eval"]
        out = []
        for i, m in enumerate(models):
            if m["label"] == ENSEMBLE:
                values = [r.get("ensemble_val_loss") for r in evals]
            else:
                values = [r["val_loss"][i] if "val_loss" in r else None for r in evals]
            points = [(v, r["step"]) for v, r in zip(values, evals, strict=True)
                      if v is not None and math.isfinite(v)]
            out.append(m | (dict(zip(("best_val_loss", "best_val_step"), min(points),
                                     strict=True)) if points else {}))
        return out

    if records is None:
        records = read_metrics(cmp_dir / arm["dir"] / "metrics.jsonl")
    arm = arm | {"models": best(records, arm["models"])}
    if "teacher" in arm:
        teacher = arm["teacher"]
        arm["teacher"] = teacher | {"models": best(
            read_metrics(cmp_dir / teacher["dir"] / "metrics.jsonl"), teacher["models"])}
    return arm


def add_outer_steps(arm: dict[str, Any], cmp_dir: Path,
                    records: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``arm`` with a summary of its outer steps, for an arm that learns ω: the range each
    ω_i took after the outer steps, and the size of the hypergradient's second-order term
    against its first-order one, ``‖c(hypergrad − direct)‖ / ‖c(direct)‖`` (median and
    largest over the steps), read from the run's metrics (``records``, when the caller has
    read them already): how much the unrolled inner step (the ``unroll`` setting) could
    steer ω at all. ``c`` removes a vector's mean: the mirror step normalises ω, so a
    gradient's part along (1, …, 1) cannot move it, and with the ensemble objective that
    part dominates ``direct`` (Σ_i ω_i·direct_i = −1). Steps whose gradients are not
    finite, or whose centred direct term is 0, are left out of the shares (``n`` counts the
    steps in them)."""
    if records is None:
        records = read_metrics(cmp_dir / arm["dir"] / "metrics.jsonl")
    steps = [r for r in records
             if r.get("event") == "omega" and "hypergrad" in r and "direct" in r]
    if not steps:
        return arm
    shares = []
    for r in steps:
        direct = _centred(r["direct"])
        second = _centred([h - d for h, d in zip(r["hypergrad"], r["direct"], strict=True)])
        size, other = math.hypot(*direct), math.hypot(*second)
        if math.isfinite(size) and math.isfinite(other) and size > 0:
            shares.append(other / size)
    omegas = list(zip(*(r["omega"] for r in steps), strict=True))
    return arm | {"outer_steps": {
        "n": len(shares),
        "omega_range": [[min(w), max(w)] for w in omegas],
        "second_order_share_median": statistics.median(shares) if shares else None,
        "second_order_share_max": max(shares) if shares else None}}


def _centred(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def table(config: CompareConfig, arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: per arm its champion (each seed's own, averaged), then each model."""
    rows = []
    for name, arm, _ in config.arm_specs():
        runs = [a for a in arms if a["arm"] == name]
        if not runs:  # not finished yet (compare's --only)
            continue
        labels = [m["label"] for m in runs[0]["models"]]
        if arm == "kd":
            labels.append(TEACHER)
        champions = [next(m for m in a["models"] if m["champion"]) for a in runs]
        names = sorted({m["label"] for m in champions})
        title = names[0] if len(names) == 1 else "champion (" + ", ".join(
            f"{n} ×{sum(m['label'] == n for m in champions)}" for n in names) + ")"
        rows.append(_aggregate(name, title, champions, runs, score_columns(config.suites)) | {
            "champion_row": True, "champion": True})
        for lb in labels:
            per_seed = [_model(a, lb) for a in runs]
            rows.append(_aggregate(name, lb, per_seed, runs, score_columns(config.suites)))
    return rows


def _model(arm: dict[str, Any], label: str) -> dict[str, Any]:
    if label == TEACHER:
        return arm["teacher"]["models"][0]
    return next(m for m in arm["models"] if m["label"] == label)


def _aggregate(arm: str, label: str, per_seed: list[dict[str, Any]],
               runs: list[dict[str, Any]], suites: Sequence[str]) -> dict[str, Any]:
    """One row of the table: means over seeds; stderr of one seed, or the spread of several."""
    row: dict[str, Any] = {"arm": arm, "model": label, "n_params": per_seed[0]["n_params"],
                           "champion": all(m["champion"] for m in per_seed)
                           if label != TEACHER else False,
                           "champions": sum(m["champion"] for m in per_seed),
                           "val_loss": _mean([m["val_loss"] for m in per_seed])}
    if len(per_seed) > 1:
        row["val_loss_sd"] = statistics.stdev([m["val_loss"] for m in per_seed])
    if all("best_val_loss" in m for m in per_seed):
        row["best_val_loss"] = _mean([m["best_val_loss"] for m in per_seed])
        row["best_val_step"] = statistics.median_low([m["best_val_step"] for m in per_seed])
    for s in suites:
        got = [m["scores"][s] for m in per_seed if s in m["scores"]]
        if not got:
            continue
        cell = {"score": _mean([g["score"] for g in got]),
                "stderr": _mean([g["stderr"] for g in got])}
        if len(got) > 1:
            cell["seed_sd"] = statistics.stdev([g["score"] for g in got])
        row[s] = cell
    if label == TEACHER:
        row["train_flops"] = _mean([r["teacher"]["train_flops"] for r in runs])
        row["train_seconds"] = _mean([r["teacher"]["train_seconds"] for r in runs])
    else:
        extra = [r.get("teacher_forward_flops", 0) + r.get("outer_flops_estimate", 0)
                 + (r["teacher"]["train_flops"] if "teacher" in r else 0) for r in runs]
        row["arm_flops"] = _mean([r["train_flops"] + e for r, e in zip(runs, extra,
                                                                         strict=True)])
        row["arm_seconds"] = _mean([r["train_seconds"] + (r["teacher"]["train_seconds"]
                                                          if "teacher" in r else 0)
                                    for r in runs])
    return row


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _reading_line(st: dict[str, Any], arms: dict[str, Any], any_arm: dict[str, Any],
                  report: dict[str, Any]) -> str:
    """What the models read: the same for every model, or (``--words total``) each arm's."""
    tail = f"context {report['context']}, lr {st['train']['lr']}, seeds {report['seeds']}"
    if st.get("words", "per-model") == "per-model":
        return (f"- every model: {any_arm['tokens_per_model']:,} training tokens "
                f"({any_arm['steps']} steps of {report['tokens_per_step']:,}), {tail}")
    parts = []
    for name, a in arms.items():
        teacher = a.get("teacher")
        whose = (f"{a['tokens_per_model']:,} per student" if teacher is None else
                 f"teacher {teacher['tokens_per_model']:,} + student {a['tokens_per_model']:,}")
        parts.append(f"{name} {a.get('tokens_total', 0):,} ({whose})")
    return ("- equal words in total (--words total): each arm's models read together "
            + "; ".join(parts) + f" tokens; {tail}")


def format_report(report: dict[str, Any]) -> str:
    """``report.md``: what was compared, then the champions' table and every model's."""
    suites = report_columns(report)
    st = report["settings"]["compare"]
    tr = st["train"]
    words = ", ".join(Path(f).name for f in report["corpus"]["files"])
    arms: dict[str, dict[str, Any]] = {}  # each arm's first seed's run (the base seed's)
    for a in sorted(report["arms"], key=lambda a: a["seed"] != tr["seed"]):
        arms.setdefault(a["arm"], a)
    any_arm = next(iter(arms.values()))
    lines = [
        "# minidml compare", "",
        f"- corpus: {words} ({report['corpus']['tokens']:,} tokens)",
        f"- tokenizer: {tr['tokenizer_type']}, {report['tokenizer']['vocab_size']} pieces; "
        f"unigram entropy of the corpus {report['unigram_entropy']:.3f} nats/token",
        f"- budget N = {format_count(st['budget'])}, K = {st['students']} students: "
        + "; ".join(f"{c['n_layers']}×{c['d_model']} ({c['n_params'] / 1e6:.2f}M)"
                    for c in report["students"])
        + f"; kd teacher {report['teacher']['n_layers']}×{report['teacher']['d_model']} "
          f"({report['teacher']['n_params'] / 1e6:.2f}M)",
        _reading_line(st, arms, any_arm, report),
        f"- kd: α = {arms['kd']['alpha']}, T = {arms['kd']['temperature']}" if "kd" in arms
        else "- kd: not run",
        f"- dml/wml: α = {_mutual_alpha(tr)}, T = {tr['temperature'] or 1.0}; wml: "
        f"hypergradient "
        f"{tr['hypergrad']}, ω updated every {tr['outer_every']} steps (β = {tr['outer_lr']})",
        f"- suites: {', '.join(report['suites'])}"
        + (f"; {MACRO}: their mean" if MACRO in suites else "")
        + "".join(f"; {k} {v}" for k, v in sorted(st.get("suite_options", {}).items()))
        + (f" (at most {st['eval_limit']} examples per task)" if st["eval_limit"] else ""),
        *([f"- trained in another comparison and reused here: {', '.join(reused)}"]
          if (reused := sorted({a['arm'] for a in report['arms'] if a.get('reused_from')}))
          else []),
        *([f"- not finished yet (a later --resume runs them): "
           f"{', '.join(report['unfinished'])}"] if report.get("unfinished") else []),
        "",
        "Scores are accuracies in percent, each suite's unweighted mean over its tasks, ± its "
        "standard error" + (" (± the spread over seeds after it)" if report["seeds"] > 1
                            else "") + ". The champion (★) of an arm is its student with the "
        "lowest validation loss at the end of training; \"lowest\" is the lowest it reached at "
        "any evaluation during training (the median step over seeds), what early stopping "
        "would keep. FLOPs count training (forward + backward) of every model an "
        "arm needs: kd includes training its teacher and the teacher's forward passes, wml "
        "an estimate of its outer steps.", "",
        "## Champions", "",
    ]
    head = ["arm", "model", "params", "val loss", "lowest (step)", *suites, "arm FLOPs",
            "arm time"]
    lines += _io.md_table(head, [_md_row(r, suites) for r in report["table"]
                              if r.get("champion_row")])
    lines += ["", "## Every model", ""]
    lines += _io.md_table(head[:-2], [_md_row(r, suites)[:-2] for r in report["table"]
                                   if not r.get("champion_row")])
    variants = _variant_rows(report)
    if variants:
        lines += ["", "## Variants", "",
                  "Each variant is its arm with one setting changed; Δ is the variant minus "
                  "its arm (negative losses and positive scores are better).", ""]
        lines += _io.md_table(["variant", "champion val loss", "ensemble val loss", *suites],
                           variants)
    lines += paired.format_tables(report)
    lines += curves.format_tables(report)
    wml = [a for a in report["arms"] if a.get("base_arm", a["arm"]) == "wml"]
    if wml:
        lines += ["", "## Learned peer weights ω", ""]
        if any("outer_steps" in a for a in wml):
            lines += ["At the end of training, with the range each ω_i took after the outer "
                      "steps; \"2nd order\" is the hypergradient's term through the unrolled "
                      "inner step against its direct term, each with its mean removed (the "
                      "part along (1, …, 1) cannot move ω): ‖c(hypergrad − direct)‖ / "
                      "‖c(direct)‖, median and largest over the outer steps.", ""]
        for a in wml:
            outer = a.get("outer_steps", {})
            ranges = outer.get("omega_range") or [None] * len(a["models"])
            weights = [(m, r) for m, r in zip((m for m in a["models"] if "omega" in m), ranges,
                                              strict=False)]
            line = f"- {a['arm']}, seed {a['seed']}: " + ", ".join(
                f"{m['label']} {m['omega']:.3f}"
                + (f" ({r[0]:.3f}–{r[1]:.3f})" if r else "") for m, r in weights)
            if outer.get("second_order_share_median") is not None:
                line += (f"; 2nd order {outer['second_order_share_median']:.2e} "
                         f"(largest {outer['second_order_share_max']:.2e}) over "
                         f"{outer['n']} outer steps")
            lines.append(line)
    return "\n".join(lines) + "\n"


def champion_and_ensemble_rows(report: dict[str, Any]
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's table rows of each arm's champion, and of each arm's ensemble (arms of
    several students only), by arm name."""
    champion = {r["arm"]: r for r in report["table"] if r.get("champion_row")}
    ensemble = {r["arm"]: r for r in report["table"] if r["model"] == ENSEMBLE}
    return champion, ensemble


def _variant_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per variant finished with its arm: its champion's and ensemble's validation loss and
    its champion's scores, each with the difference from its arm."""
    suites = report_columns(report)
    champion, ensemble = champion_and_ensemble_rows(report)

    def cell(value: float, ref: float, scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * value:.{digits}f} (Δ {scale * (value - ref):+.{digits}f})"

    rows = []
    for v in report["settings"]["compare"]["variants"]:
        name = Variant(**v).name
        if name not in champion or v["arm"] not in champion:
            continue  # not finished yet (the report lists what is not)
        ours, ref = champion[name], champion[v["arm"]]
        row = [name, cell(ours["val_loss"], ref["val_loss"])]
        if name in ensemble and v["arm"] in ensemble:
            row.append(cell(ensemble[name]["val_loss"], ensemble[v["arm"]]["val_loss"]))
        else:
            row.append("-")
        for suite in suites:
            if suite in ours and suite in ref:
                row.append(cell(ours[suite]["score"], ref[suite]["score"], 100, 1))
            else:
                row.append("-")
        rows.append(row)
    return rows


def _mutual_alpha(train: Mapping[str, Any]) -> float:
    """The α of the mutual arms: the setting, else its default for mutual learning."""
    return train["alpha"] if train["alpha"] is not None else default_alpha("wml")


def score_columns(suites: Sequence[str]) -> list[str]:
    """The report's score columns: each suite, then their mean when there are several."""
    return [*suites, MACRO] if len(suites) > 1 else list(suites)


def report_columns(report: Mapping[str, Any]) -> list[str]:
    """A report's score columns (reports written before the macro have only the suites)."""
    return list(report.get("score_columns", report["suites"]))


def _md_row(row: dict[str, Any], suites: Sequence[str]) -> list[str]:
    name = row["model"] + (" ★" if row["champion"] and "×" not in row["model"] else "")
    cells = [row["arm"], name, f"{row['n_params'] / 1e6:.2f}M", f"{row['val_loss']:.3f}",
             f"{row['best_val_loss']:.3f} ({row['best_val_step']})" if "best_val_loss" in row
             else "-"]
    for s in suites:
        c = row.get(s)
        if c is None:
            cells.append("-")
            continue
        text = score_text(c["score"], c["stderr"])
        if "seed_sd" in c:
            text += f" (± {100 * c['seed_sd']:.1f})"
        cells.append(text)
    flops = row.get("arm_flops", row.get("train_flops", math.nan))
    secs = row.get("arm_seconds", row.get("train_seconds", math.nan))
    cells += [_flops(flops), f"{secs / 60:.1f} min"]
    return cells


def _flops(n: float) -> str:
    """``3.1e15`` as ``3.1 PFLOP``."""
    if not math.isfinite(n):
        return "-"
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"


__all__ = ["add_best_validation", "add_outer_steps", "build_report", "champion_and_ensemble_rows",
           "format_report", "report_columns", "score_columns", "table"]
