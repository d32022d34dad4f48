"""What a suite is and what it gets: the API of suite plugins.

A suite (found by :mod:`minidml.evaluation.plugins`, run by
:func:`minidml.evaluation.runner.evaluate`) builds an object with ``evaluate(ctx:
EvalContext) -> SuiteResult``. Everything it needs comes through :class:`EvalContext`: the
run, a :class:`~minidml.evaluation.scoring.Scorer`, the data directory and the user's limits.
Minimal-pair suites need one call, :func:`score_pairs`;
:func:`read_jsonl` reads their data with one-line errors, and :func:`accuracy` and
:func:`group_score` give the harness's metrics.

Which tokens of a text are scored is the evaluation's protocol (:mod:`minidml.evaluation.protocols`:
the official BabyLM 2026 rule by default, or lm-evaluation-harness's), which the scorer
applies; a suite only says what the choices are. Results: per task ``acc``, ``acc_stderr``
(the sample standard deviation over examples ÷ √n) and ``n``; a group's score is the
unweighted mean of its members' scores (a member may itself be a group), and its stderr
√(Σ se²)/m, treating them as independent. A pair counts as correct when the good text scores
at least as high as the bad one: both pipelines put the correct choice first and take the
first of equal scores, so a tie counts as correct; each task reports its ``ties`` and a suite
with any says so in a note.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from ..data import default_cache_dir, read_lines
from ..errors import MinidmlError
from .protocols import Request
from .scoring import ENSEMBLE, Scorer

__all__ = [
    "DATA_ENV", "ENSEMBLE", "Choices", "EvalContext", "Pair", "Request", "Sample", "Scorer",
    "ScoresRows", "Suite",
    "SuiteResult", "TaskResult", "accuracy", "as_choices", "chosen", "default_data_dir",
    "first_chosen",
    "group_score",
    "read_json", "read_jsonl", "resolve_data_dir", "score_choices", "score_pairs", "spearman",
]

DATA_ENV = "MINIDML_DATA_DIR"


# ----------------------------------------------------------------------------- data location
def default_data_dir() -> Path:
    """``$MINIDML_DATA_DIR`` if set, else ``data/`` in the per-user cache directory."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else default_cache_dir() / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the given directory, ``$MINIDML_DATA_DIR``, or the cache."""
    return Path(data_dir) if data_dir is not None else default_data_dir()


# ----------------------------------------------------------------------------- suites
class Suite(Protocol):
    def evaluate(self, ctx: EvalContext) -> SuiteResult: ...


class ScoresRows(Protocol):
    """A suite whose official predictions are numbers per row of its data (its
    :attr:`SuiteResult.rows`) rather than a choice per item, and which scores such
    predictions itself (the BabyLM collation reads them back through it)."""

    def row_count(self, data_dir: Path) -> int | None:
        """The rows of the suite's data under ``data_dir`` (None: the data is not there)."""
        ...

    def score_rows(self, rows: Mapping[str, Sequence[float]], data_dir: Path
                   ) -> dict[str, float]:
        """The suite's scores (fractions, per task) from ``rows`` (per column one value per
        data row, NaN where missing), as :meth:`Suite.evaluate` scores them."""
        ...


@dataclass(frozen=True)
class TaskResult:
    """One task's metrics (``primary`` names the one that groups average) for one model."""

    name: str
    metrics: dict[str, float]
    n: int
    primary: str = "acc"

    @property
    def score(self) -> float:
        return self.metrics[self.primary]


class Pair(NamedTuple):
    """A minimal pair: ``good`` should score higher than ``bad``. Each is the choice
    ``context + join + text`` whose ``join + text`` is scored, or the text alone when there is
    no context (see :mod:`minidml.evaluation.protocols`); pass the texts as the data gives them."""

    good: str
    bad: str
    context: str = ""
    join: str = " "


class Choices(NamedTuple):
    """A multiple-choice item whose first text is the correct one: choice ``i`` is
    ``contexts[i] + join + texts[i]`` (``contexts`` empty: each text alone), and its
    ``join + texts[i]`` is what is scored."""

    texts: tuple[str, ...]
    contexts: tuple[str, ...] = ()
    join: str = " "


def as_choices(item: Pair | Choices) -> Choices:
    """A :class:`Pair` as the two-choice item it is; :class:`Choices` as they are."""
    if isinstance(item, Choices):
        if item.contexts and len(item.contexts) != len(item.texts):
            raise ValueError(f"{len(item.contexts)} contexts for {len(item.texts)} choices")
        return item
    return Choices((item.good, item.bad), (item.context,) * 2 if item.context else (),
                   item.join)


@dataclass
class SuiteResult:
    """Per model label (``student-0`` …, ``ensemble``), per task, a :class:`TaskResult`;
    ``groups`` maps a group name to its task names (the suite's own name is the usual one);
    ``notes`` are lines for the user (e.g. tasks whose data is missing); ``samples``, when
    the suite scores examples one by one, one :class:`Sample` per example in task order;
    ``rows``, when what it scores are numbers per row of its data rather than choices, per
    model label named columns of one number per row, in file order (reading's surprisals,
    ``pred`` and ``prev_pred``; glue's predicted class per validation example, one column per
    task); ``settings``, the suite's settings that decide what its numbers mean (recorded
    with the results)."""

    tasks: dict[str, dict[str, TaskResult]]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    rows: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One scored item: its task, its index among the task's items (in file order), the item
    (a :class:`Pair` or :class:`Choices`) and, per model label, the summed log-probabilities
    of its choices (for a pair ``(good, bad)``)."""

    task: str
    index: int
    pair: Pair | Choices
    scores: dict[str, tuple[float, ...]]

    def to_json(self) -> dict[str, Any]:
        head = {"task": self.task, "index": self.index}
        lls = {"loglikelihoods": {lb: list(v) for lb, v in self.scores.items()}}
        if isinstance(self.pair, Choices):
            return {**head, "contexts": list(self.pair.contexts), "join": self.pair.join,
                    "choices": list(self.pair.texts), **lls}
        return {**head, "context": self.pair.context,
                **({"join": self.pair.join} if self.pair.context else {}),
                "good": self.pair.good, "bad": self.pair.bad, **lls}


@dataclass
class EvalContext:
    """What a suite gets: the run, a scorer, the data root and the user's limits.

    ``run`` is a :class:`minidml.Run` or a Hugging Face model's
    :class:`~minidml.hf.models.HFRun`; either way a suite uses only ``run.students``
    (:class:`~minidml.evaluation.scoring.LanguageModel`: logits, ``trunk`` hidden states,
    ``config``),
    ``run.tokenizer`` (:class:`~minidml.evaluation.scoring.TextTokenizer`), ``run.omega`` and
    ``run.path``, so it does not care which it scores."""

    run: Any  # minidml.Run or minidml.hf.models.HFRun
    scorer: Scorer
    labels: list[str]  # the models to report: student-<i> and/or ensemble
    data_dir: Path
    limit: int | None = None  # at most this many examples per task
    batch_size: int = 64
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # suite-specific settings
    suite: str = ""

    @property
    def protocol(self) -> str:
        """The name of the scoring protocol this evaluation follows."""
        return self.scorer.protocol.name

    def path(self, relative: str) -> Path:
        """A file or directory under the data root; a clear error if it is missing."""
        p = self.data_dir / relative
        if not p.exists():
            raise MinidmlError(f"{p}: not found; run `minidml data fetch {self.suite}` or "
                               f"pass --data-dir")
        return p

    def limited(self, items: Sequence[Any]) -> Sequence[Any]:
        return items if self.limit is None else items[:self.limit]

    def student_indices(self) -> list[int]:
        return [int(lb.rsplit("-", 1)[1]) for lb in self.labels if lb != ENSEMBLE]


# ----------------------------------------------------------------------------- helpers
def read_json(path: str | os.PathLike, fix: str = "re-download the file") -> Any:
    """The JSON document at ``path``; a file that cannot be read, is not UTF-8 or is not
    valid JSON is a one-line error naming it and ending with ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MinidmlError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); {fix}") from None
    except UnicodeDecodeError:
        raise MinidmlError(f"{path}: not UTF-8 text; {fix}") from None
    except OSError as e:
        raise MinidmlError(f"{path}: cannot read ({e.strerror or e})") from None


def read_jsonl(path: str | os.PathLike,
               fields: Sequence[str] | Mapping[str, type | tuple[type, ...]] = ()
               ) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (plain, .gz or .xz). A bad line, a row without one of
    ``fields``, or (when ``fields`` maps names to types) a value of the wrong type is a
    one-line error naming the file and line."""
    path = Path(path)
    types = fields if isinstance(fields, Mapping) else {}
    rows = []
    for number, line in enumerate(read_lines([path]), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise MinidmlError(f"{path}:{number}: not valid JSON ({why}); "
                               "re-download the file") from None
        if not isinstance(row, dict):
            raise MinidmlError(f"{path}:{number}: expected a JSON object per line")
        bad = _not_unicode(row)
        if bad is not None:
            raise MinidmlError(f"{path}:{number}: field {bad!r} holds text that is not valid "
                               "Unicode (a lone surrogate escape); fix or re-download the file")
        lacking = [k for k in fields if k not in row]
        if lacking:
            raise MinidmlError(f"{path}:{number}: missing field(s) {', '.join(lacking)}")
        for key, kind in types.items():
            kinds = kind if isinstance(kind, tuple) else (kind,)
            value = row[key]  # JSON true/false are bools, which Python counts as ints too
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                want = " or ".join(t.__name__ for t in kinds)
                raise MinidmlError(f"{path}:{number}: field {key!r} should be {want}, "
                                   f"got {type(row[key]).__name__}")
        rows.append(row)
    return rows


def _not_unicode(row: Mapping[str, Any]) -> str | None:
    """The first field of ``row`` whose text (at any depth) cannot be encoded as UTF-8."""
    def bad(value: Any) -> bool:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
            return False
        if isinstance(value, list):
            return any(bad(v) for v in value)
        if isinstance(value, dict):
            return any(bad(v) for v in value.values())
        return False

    return next((key for key, value in row.items() if bad(value)), None)


def accuracy(correct: Sequence[float] | torch.Tensor) -> dict[str, float]:
    """``acc`` and ``acc_stderr`` (sample std ÷ √n, as lm-evaluation-harness) of 0/1 values."""
    c = torch.as_tensor(correct, dtype=torch.float64)
    n = c.numel()
    if n == 0:
        return {"acc": float("nan"), "acc_stderr": float("nan")}
    stderr = float(c.std(correction=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"acc": float(c.mean()), "acc_stderr": stderr}


def chosen(scores: Sequence[float]) -> int:
    """The choice a model makes of choices that scored ``scores``, as the official pipeline
    makes it (``torch.max``): the first of the highest, or the first NaN (a diverged model's
    NaN wins, as there)."""
    nan = next((i for i, s in enumerate(scores) if s != s), None)
    if nan is not None:
        return nan
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def first_chosen(scores: Sequence[float]) -> bool:
    """Whether an item whose choices scored ``scores`` (the correct one first) is right: no
    other choice scores higher than the first (a tie is right, as both pipelines count it;
    NaNs as :func:`chosen` takes them)."""
    return len(scores) < 2 or chosen(scores) == 0


def score_choices(ctx: EvalContext, tasks: Mapping[str, Sequence[Pair | Choices]],
                  groups: Mapping[str, Iterable[str]] | None = None) -> SuiteResult:
    """Accuracy of every model on every task of multiple-choice items (minimal pairs or
    :class:`Choices`, the correct text first), in one scoring pass, with each item's
    log-likelihoods in ``samples`` and a note counting ties. An item is correct when no other
    choice scores higher than the first (the first of equal scores is taken)."""
    chosen = {name: ctx.limited(its) for name, its in tasks.items()}
    items = {name: [as_choices(it) for it in its] for name, its in chosen.items()}
    texts: list[str] = []
    contexts: list[str] = []
    joins: list[str] = []
    for its in items.values():
        for c in its:
            texts += c.texts
            contexts += c.contexts or [""] * len(c.texts)
            joins += [c.join] * len(c.texts)
    scores = ctx.scorer.score(texts, contexts, joins)
    rows = {lb: scores[lb].tolist() for lb in ctx.labels}
    results: dict[str, dict[str, TaskResult]] = {lb: {} for lb in ctx.labels}
    samples, ties = [], dict.fromkeys(ctx.labels, 0)
    at = 0
    for name, its in items.items():
        correct: dict[str, list[float]] = {lb: [] for lb in ctx.labels}
        tied = dict.fromkeys(ctx.labels, 0)
        for k, (c, original) in enumerate(zip(its, chosen[name], strict=True)):
            per = {lb: tuple(rows[lb][at:at + len(c.texts)]) for lb in ctx.labels}
            at += len(c.texts)
            for lb, v in per.items():
                right = first_chosen(v)
                correct[lb].append(float(right))
                tied[lb] += right and v[0] in v[1:]  # right, and no other higher: a tie
            samples.append(Sample(name, k, original, per))
        for lb in ctx.labels:
            metrics = accuracy(correct[lb])
            metrics["ties"] = float(tied[lb])
            results[lb][name] = TaskResult(name, metrics, len(correct[lb]))
            ties[lb] += tied[lb]
    grp = {ctx.suite: tuple(tasks)} if groups is None else {g: tuple(t) for g, t in
                                                            groups.items()}
    notes = []
    if any(ties.values()):
        n = sum(len(its) for its in items.values())
        notes.append("ties, counted correct as both pipelines count them: "
                     + ", ".join(f"{lb} {t}" for lb, t in ties.items()) + f" of {n:,} items")
    return SuiteResult(results, grp, notes, samples)


def score_pairs(ctx: EvalContext, tasks: Mapping[str, Sequence[Pair]],
                groups: Mapping[str, Iterable[str]] | None = None) -> SuiteResult:
    """:func:`score_choices` for minimal pairs: accuracy of every model on every task."""
    return score_choices(ctx, tasks, groups)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (tied values share their mean rank, as scipy ranks them);
    NaN when either side is constant, holds a NaN (as scipy's), or there are fewer than two
    values."""
    def ranks(v: Sequence[float]) -> torch.Tensor:
        """1-based ranks: the values below, plus the mean place among the equal ones."""
        t = torch.as_tensor(v, dtype=torch.float64)
        _, where, counts = torch.unique(t, return_inverse=True, return_counts=True)
        below = torch.cumsum(counts, 0) - counts
        return (below[where] + (counts[where] + 1) / 2).double()

    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)}")
    if len(x) < 2 or any(v != v for v in (*x, *y)):
        return float("nan")
    a, b = ranks(x), ranks(y)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def group_score(results: Mapping[str, TaskResult], tasks: Iterable[str],
                groups: Mapping[str, Iterable[str]] | None = None) -> dict[str, float]:
    """Unweighted mean of the members' primary scores and its stderr (members independent).
    A member named in ``groups`` rather than ``results`` counts as that group's score."""
    groups = groups or {}
    scores, errors = [], []
    for t in tasks:
        if t in results:
            r = results[t]
            score, se = r.score, r.metrics.get(f"{r.primary}_stderr", float("nan"))
        elif t in groups:
            inner = group_score(results, groups[t], {g: m for g, m in groups.items() if g != t})
            score, se = inner["score"], inner["stderr"]
        else:
            continue
        if not math.isnan(score):
            scores.append(score)
            errors.append(se)
    if not scores:
        return {"score": float("nan"), "stderr": float("nan"), "n_tasks": 0}
    m = len(scores)
    return {"score": sum(scores) / m,
            "stderr": math.sqrt(sum(x * x for x in errors)) / m, "n_tasks": m}
