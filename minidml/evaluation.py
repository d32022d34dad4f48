"""Evaluation: suites (found by :mod:`minidml.plugins`) run on a trained run's students, or
on a Hugging Face causal LM (:mod:`minidml.hf_models`).

A suite is registered through the ``register_suites`` hook as a
:class:`~minidml.plugins.SuiteSpec` (the registry is :mod:`minidml.plugins`, which knows
nothing of evaluating; this module looks suites up there); its
factory builds an object with ``evaluate(ctx: EvalContext) -> SuiteResult``. Everything a
suite needs comes through :class:`EvalContext`: the run, a :class:`~minidml.scoring.Scorer`,
the data directory and the user's limits. Minimal-pair suites need one call,
:func:`score_pairs`.

Texts are scored by lm-evaluation-harness's rule (:mod:`minidml.scoring`: BOS, then
``" " + text``, or the joint tokens of ``context + " " + text`` beyond the context's).
Results follow the harness too: per task ``acc``, ``acc_stderr`` (the sample standard
deviation over examples ÷ √n) and ``n``; a group's score is the unweighted mean of its tasks'
scores, and its stderr √(Σ se²)/m, treating the tasks as independent. A pair counts as
correct only when the good text scores strictly higher: a tie counts as wrong, never as
correct by position (the harness's argmax takes the first choice, so it counts a tie as
right); each task reports its ``ties`` and a suite with any says so in a note.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from . import __version__, _io
from .data import default_cache_dir, fingerprint, read_lines
from .errors import MinidmlError
from .plugins import SuiteSpec, suites
from .scoring import ENSEMBLE, Scorer, student_label

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
    """A minimal pair: ``good`` should score higher than ``bad``. Each is scored as the
    harness scores a choice: ``" " + text`` after BOS, or after ``context`` (see
    :mod:`minidml.scoring`); pass the texts as the data gives them, with no leading space."""

    good: str
    bad: str
    context: str = ""


@dataclass
class SuiteResult:
    """Per model label (``student-0`` …, ``ensemble``), per task, a :class:`TaskResult`;
    ``groups`` maps a group name to its task names (the suite's own name is the usual one);
    ``notes`` are lines for the user (e.g. tasks whose data is missing); ``samples``, when
    the suite scores examples one by one, one :class:`Sample` per example in task order."""

    tasks: dict[str, dict[str, TaskResult]]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    """One scored minimal pair: its task, its index in the task's file, the texts and, per
    model label, the summed log-probabilities ``(good, bad)``."""

    task: str
    index: int
    pair: Pair
    scores: dict[str, tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "index": self.index, "context": self.pair.context,
                "good": self.pair.good, "bad": self.pair.bad,
                "loglikelihoods": {lb: list(v) for lb, v in self.scores.items()}}


@dataclass
class EvalContext:
    """What a suite gets: the run, a scorer, the data root and the user's limits.

    ``run`` is a :class:`minidml.Run` or a Hugging Face model's
    :class:`~minidml.hf_models.HFRun`; either way a suite uses only ``run.students``
    (:class:`~minidml.scoring.LanguageModel`: logits, ``trunk`` hidden states, ``config``),
    ``run.tokenizer`` (:class:`~minidml.scoring.TextTokenizer`), ``run.omega`` and
    ``run.path``, so it does not care which it scores."""

    run: Any  # minidml.Run or minidml.hf_models.HFRun
    scorer: Scorer
    labels: list[str]  # the models to report: student-<i> and/or ensemble
    data_dir: Path
    limit: int | None = None  # at most this many examples per task
    batch_size: int = 64
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # suite-specific settings
    suite: str = ""

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


def accuracy(correct: Sequence[float] | torch.Tensor) -> dict[str, float]:
    """``acc`` and ``acc_stderr`` (sample std ÷ √n, as lm-evaluation-harness) of 0/1 values."""
    c = torch.as_tensor(correct, dtype=torch.float64)
    n = c.numel()
    if n == 0:
        return {"acc": float("nan"), "acc_stderr": float("nan")}
    stderr = float(c.std(correction=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"acc": float(c.mean()), "acc_stderr": stderr}


def score_pairs(ctx: EvalContext, tasks: Mapping[str, Sequence[Pair]],
                groups: Mapping[str, Iterable[str]] | None = None) -> SuiteResult:
    """Accuracy of every model on every task of minimal pairs, in one scoring pass, with
    each pair's log-likelihoods in ``samples`` and a note counting ties."""
    texts, contexts, spans = [], [], {}
    chosen = {name: ctx.limited(pairs) for name, pairs in tasks.items()}
    for name, pairs in chosen.items():
        start = len(texts)
        for p in pairs:
            texts += [p.good, p.bad]
            contexts += [p.context, p.context]
        spans[name] = (start, len(texts))
    scores = ctx.scorer.score(texts, contexts)
    results: dict[str, dict[str, TaskResult]] = {}
    ties: dict[str, int] = {}
    for label in ctx.labels:
        s = scores[label]
        per = {}
        for name, (a, b) in spans.items():
            good, bad = s[a:b:2], s[a + 1:b:2]
            metrics = accuracy((good > bad).double())
            metrics["ties"] = float((good == bad).sum())
            per[name] = TaskResult(name, metrics, int(good.numel()))
        results[label] = per
        ties[label] = int(sum(t.metrics["ties"] for t in per.values()))
    grp = {ctx.suite: tuple(tasks)} if groups is None else {g: tuple(t) for g, t in
                                                            groups.items()}
    rows = {lb: scores[lb].tolist() for lb in ctx.labels}
    samples = []
    for name, pairs in chosen.items():
        a = spans[name][0]
        samples += [Sample(name, k, p, {lb: (rows[lb][a + 2 * k], rows[lb][a + 2 * k + 1])
                                        for lb in ctx.labels}) for k, p in enumerate(pairs)]
    notes = []
    if any(ties.values()):
        n = len(texts) // 2
        notes.append("ties, counted wrong (lm-evaluation-harness would count them right): "
                     + ", ".join(f"{lb} {t}" for lb, t in ties.items()) + f" of {n:,} pairs")
    return SuiteResult(results, grp, notes, samples)


def group_score(results: Mapping[str, TaskResult], tasks: Iterable[str]) -> dict[str, float]:
    """Unweighted mean of the tasks' primary scores and its stderr (tasks independent)."""
    members = [results[t] for t in tasks if t in results and not math.isnan(results[t].score)]
    if not members:
        return {"score": float("nan"), "stderr": float("nan"), "n_tasks": 0}
    m = len(members)
    se = [r.metrics.get(f"{r.primary}_stderr", float("nan")) for r in members]
    return {"score": sum(r.score for r in members) / m,
            "stderr": math.sqrt(sum(x * x for x in se)) / m, "n_tasks": m}


def data_checksum(data_dir: Path, paths: Iterable[str]) -> str | None:
    """A sha256 over the bytes of every file under ``paths`` (sorted by path)."""
    files: set[Path] = set()
    for rel in paths:
        p = data_dir / rel
        files |= {q for q in p.rglob("*") if q.is_file()} if p.is_dir() else {p}
    return fingerprint(sorted(files)) if files else None


# ----------------------------------------------------------------------------- running
@dataclass
class SuiteOutcome:
    spec: SuiteSpec
    status: str  # ok | failed | unavailable
    result: SuiteResult | None = None
    error: str | None = None
    data_sha256: str | None = None
    seconds: float = 0.0


@dataclass
class EvalResults:
    """Everything one ``evaluate`` call produced; :meth:`to_json` and :meth:`table`."""

    run: Any
    labels: list[str]
    outcomes: list[SuiteOutcome]
    date: str

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        run = self.run
        results: dict[str, dict[str, Any]] = {lb: {} for lb in self.labels}
        groups: dict[str, dict[str, Any]] = {lb: {} for lb in self.labels}
        suites = {}
        for o in self.outcomes:
            suites[o.spec.name] = {
                "status": o.status, "version": o.spec.version, "plugin": o.spec.plugin,
                "package": o.spec.package, "package_version": o.spec.package_version,
                "data_sha256": o.data_sha256, "seconds": round(o.seconds, 2),
                **({"error": o.error} if o.error else {}),
                **({"notes": o.result.notes} if o.result and o.result.notes else {})}
            if o.result is None:
                continue
            for lb, per in o.result.tasks.items():
                for name, t in per.items():
                    results[lb][f"{o.spec.name}/{name}"] = {**t.metrics, "n": t.n,
                                                            "primary": t.primary}
                for g, members in o.result.groups.items():
                    gs = group_score(per, members)
                    groups[lb][g] = {"score": gs["score"], "score_stderr": gs["stderr"],
                                     "n_tasks": gs["n_tasks"], "suite": o.spec.name}
        return {
            "minidml_version": __version__, "date": self.date,
            "run": str(run.path), "step": run.step,
            "students": [{"label": student_label(i), "shape": str(c.shape),
                          "n_params": c.n_params}
                         for i, c in enumerate(s.config for s in run.students)],
            "omega": [float(w) for w in run.omega],
            "versions": {o.spec.name: o.spec.version for o in self.outcomes},
            "suites": suites, "results": results, "groups": groups,
            "environment": {"torch": torch.__version__, "python": platform.python_version()},
        }

    def table(self) -> str:
        """Per suite: one row per task and per group, one column per model (percent)."""
        lines = []
        width = max(10, *(len(lb) for lb in self.labels))
        for o in self.outcomes:
            title = f"{o.spec.name} (v{o.spec.version})"
            if o.result is None:
                lines += [f"{title}: {o.status.upper()}: {o.error}", ""]
                continue
            names = sorted({n for per in o.result.tasks.values() for n in per})
            metric = {n: next(per[n].primary for per in o.result.tasks.values() if n in per)
                      for n in names}
            name_w = max([12, *(len(n) + len(metric[n]) + 3 for n in names),
                          *(len(g) + 10 for g in o.result.groups)])
            head = f"{title:<{name_w}}" + "".join(f" {lb:>{width}}" for lb in self.labels)
            lines += [head, "-" * len(head)]
            for n in names:
                cells = [o.result.tasks.get(lb, {}).get(n) for lb in self.labels]
                lines.append(f"{n + ' (' + metric[n] + ')':<{name_w}}" + "".join(
                    f" {_pct(c.score if c else float('nan')):>{width}}" for c in cells))
            for g, members in o.result.groups.items():
                cells = [group_score(o.result.tasks.get(lb, {}), members)["score"]
                         for lb in self.labels]
                lines.append(f"{'[' + g + '] mean':<{name_w}}"
                             + "".join(f" {_pct(c):>{width}}" for c in cells))
            lines += [f"  note: {n}" for n in o.result.notes] + [""]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """The results as JSON at ``path`` (written atomically; missing folders are made)."""
        path = Path(path)
        _make_parent(path)
        _io.write_json(path, self.to_json())
        return path

    def write_samples(self, path: str | os.PathLike) -> Path:
        """Every scored example as one JSON line (``suite``, ``task``, ``index``, the texts
        and each model's log-likelihoods), like lm-evaluation-harness's ``--log_samples``."""
        lines = [json.dumps({"suite": o.spec.name, **s.to_json()}, ensure_ascii=False)
                 for o in self.outcomes if o.result is not None for s in o.result.samples]
        path = Path(path)
        _make_parent(path)
        _io.write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
        return path


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MinidmlError(f"{path.parent}: cannot create the results folder ({e.strerror}); "
                           "give --output in a writable place") from None


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def labels_for(student: str, k: int, champion: int = 0) -> list[str]:
    """Model labels for ``--student``: ``all`` (each student, then the ensemble),
    ``ensemble``, ``champion`` (student ``champion``: the run's lowest validation loss at
    the evaluated checkpoint), a student index, or a comma-separated list of those (e.g.
    ``champion,ensemble``; each model once, in the order given)."""
    if "," in student:
        return list(dict.fromkeys(label for part in student.split(",")
                                  for label in labels_for(part.strip(), k, champion)))
    if student == "champion":
        return [student_label(champion)]
    if student == "all":
        return [student_label(i) for i in range(k)] + ([ENSEMBLE] if k > 1 else [])
    if student == ENSEMBLE:
        if k < 2:
            raise MinidmlError("--student ensemble: this run has one student; use all or 0")
        return [ENSEMBLE]
    if student.isdigit() and int(student) < k:
        return [student_label(int(student))]
    raise MinidmlError(f"--student {student}: choose all, ensemble, champion or an index "
                       f"below {k}")


def evaluate(run: Any, suites: Sequence[str], *, student: str = "all",
             data_dir: str | os.PathLike | None = None, limit: int | None = None,
             batch_size: int = 64, precision: str = "fp32", progress: bool = False,
             options: Mapping[str, Any] | None = None,
             available: Mapping[str, SuiteSpec] | None = None,
             on_suite: Callable[[SuiteOutcome], None] | None = None) -> EvalResults:
    """Run the named suites (``all``: every suite whose data is present) on a loaded run.

    A suite that raises is recorded as failed and the others still run; a suite whose data
    is missing is ``unavailable``. ``available`` defaults to the plugins' suites.
    """
    import time

    available = _registered(available)
    root = resolve_data_dir(data_dir)
    if limit is not None and limit < 1:
        raise MinidmlError(f"--limit {limit}: must be at least 1")
    names = _expand(suites, available, root)
    labels = labels_for(student, len(run.students), getattr(run, "champion", 0))
    scorer = Scorer(run.students, run.tokenizer, run.omega, labels=labels,
                    batch_size=batch_size, precision=precision, progress=progress)
    outcomes = []
    for name in names:
        spec = available[name]
        t0 = time.perf_counter()
        missing = spec.missing_data(root)
        if missing:
            outcome = SuiteOutcome(spec, "unavailable", error=(
                f"data not found: {root / missing[0]}; run `minidml data fetch {name}` "
                f"or pass --data-dir"))
        else:
            ctx = EvalContext(run, scorer, labels, root, limit, batch_size, progress,
                              dict(options or {}), suite=name)
            try:
                result = spec.factory().evaluate(ctx)
                read = [*spec.requires, *(f.path for f in spec.sources
                                          if (root / f.path).is_file())]
                outcome = SuiteOutcome(spec, "ok", result,
                                       data_sha256=data_checksum(root, dict.fromkeys(read)))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one suite's failure must not stop the others
                msg = str(e).splitlines()[0] if str(e) else ""
                outcome = SuiteOutcome(spec, "failed", error=(
                    msg if isinstance(e, MinidmlError) else f"{type(e).__name__}: {msg}"))
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        if on_suite is not None:
            on_suite(outcome)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return EvalResults(run, labels, outcomes, date)


def require_suites(requested: Sequence[str], data_dir: str | os.PathLike | None = None, *,
                   option: str = "--suite", available: Mapping[str, SuiteSpec] | None = None
                   ) -> list[str]:
    """The suites that ``requested`` names, each with its data present, else a
    :class:`MinidmlError` naming ``option``: the check to make before work (training, say)
    that ends in evaluating them."""
    available = _registered(available)
    root = resolve_data_dir(data_dir)
    names = _expand(requested, available, root, option)
    for name in names:
        missing = available[name].missing_data(root)
        if missing:
            raise MinidmlError(f"{option} {name}: its data is not in {root} (no "
                               f"{missing[0]}); pass --data-dir or run `minidml data fetch "
                               f"{name}`")
    return names


def _registered(available: Mapping[str, SuiteSpec] | None) -> Mapping[str, SuiteSpec]:
    """``available``, or by default the suites the plugins register."""
    return available if available is not None else suites()


def _expand(requested: Sequence[str], available: Mapping[str, SuiteSpec], root: Path,
            option: str = "--suite") -> list[str]:
    if not requested:
        raise MinidmlError(f"no suite given; pass {option} NAME (see `minidml suites`) or "
                           f"{option} all")
    names: list[str] = []
    for name in requested:
        if name == "all":
            names += [n for n, s in available.items() if s.data_present(root)]
        elif name in available:
            names.append(name)
        else:
            raise MinidmlError(f"{option} {name}: no such suite; choose from "
                               f"{', '.join(sorted(available))} (see `minidml suites`)")
    return list(dict.fromkeys(names))
