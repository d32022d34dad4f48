"""Evaluation: suites (found by :mod:`minidml.evaluation.plugins`, written against
:mod:`minidml.evaluation.suite`) run on a trained run's students, or on a Hugging Face causal
LM (:mod:`minidml.hf.models`).

A suite is registered through the ``register_suites`` hook as a
:class:`~minidml.evaluation.plugins.SuiteSpec` (the registry,
:mod:`minidml.evaluation.plugins`, knows nothing of evaluating; this module looks suites up
there). :func:`evaluate` runs the suites asked for, each in an
:class:`~minidml.evaluation.suite.EvalContext`, records a suite that fails or lacks its data
without stopping the others, and returns :class:`EvalResults`: the JSON of ``eval.json`` (per
model and task, lm-evaluation-harness's metrics; per group the mean), a table, and every
scored example (``eval.samples.jsonl``). Every result names the scoring protocol it was made
under (:mod:`minidml.evaluation.protocols`), in ``protocol`` and in each suite's version
(``3+babylm-2026``), so results of different protocols are never taken for each other.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .. import _io
from .._version import __version__
from ..data import fingerprint
from ..errors import MinidmlError, describe
from .plugins import SuiteSpec, suites
from .protocols import DEFAULT_PROTOCOL, get_protocol
from .scoring import ENSEMBLE, Scorer, student_label
from .suite import DATA_ENV, EvalContext, SuiteResult, group_score, resolve_data_dir


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root that evaluation reads
    (:func:`~minidml.evaluation.suite.resolve_data_dir`); one the user named (``data_dir`` or
    ``$MINIDML_DATA_DIR``) must exist, since a typo would otherwise leave only the suites that
    need no data."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        if data_dir is not None:
            raise MinidmlError(f"--data-dir {data_dir}: no such directory; give the folder "
                               "that holds the evaluation data, or leave --data-dir out")
        if os.environ.get(DATA_ENV):
            raise MinidmlError(f"${DATA_ENV}={root}: no such directory; point it at the "
                               "folder that holds the evaluation data, or unset it")
    return root


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
    protocol: str = DEFAULT_PROTOCOL

    def version(self, spec: SuiteSpec) -> str:
        """The suite's version as its results record it: the suite's own and the protocol."""
        return f"{spec.version}+{self.protocol}"

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
                "status": o.status, "version": self.version(o.spec), "plugin": o.spec.plugin,
                "package": o.spec.package, "package_version": o.spec.package_version,
                "data_sha256": o.data_sha256, "seconds": round(o.seconds, 2),
                **({"error": o.error} if o.error else {}),
                **({"notes": o.result.notes} if o.result and o.result.notes else {}),
                **({"settings": o.result.settings} if o.result and o.result.settings else {})}
            if o.result is None:
                continue
            for lb, per in o.result.tasks.items():
                for name, t in per.items():
                    results[lb][f"{o.spec.name}/{name}"] = {**t.metrics, "n": t.n,
                                                            "primary": t.primary}
                for g, members in o.result.groups.items():
                    gs = group_score(per, members, o.result.groups)
                    groups[lb][g] = {"score": gs["score"], "score_stderr": gs["stderr"],
                                     "n_tasks": gs["n_tasks"], "suite": o.spec.name}
        return {
            "minidml_version": __version__, "date": self.date, "protocol": self.protocol,
            "run": str(run.path), "step": run.step,
            "students": [{"label": student_label(i), "shape": str(c.shape),
                          "n_params": c.n_params}
                         for i, c in enumerate(s.config for s in run.students)],
            "omega": [float(w) for w in run.omega],
            "versions": {o.spec.name: self.version(o.spec) for o in self.outcomes},
            "suites": suites, "results": results, "groups": groups,
            "environment": {"torch": torch.__version__, "python": platform.python_version()},
        }

    def table(self) -> str:
        """Per suite: one row per task and per group, one column per model (accuracies and
        other shares in percent, correlations as they are)."""
        lines = [f"protocol: {self.protocol}", ""]
        width = max(10, *(len(lb) for lb in self.labels))
        for o in self.outcomes:
            title = f"{o.spec.name} (v{self.version(o.spec)})"
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
                    f" {_cell(c.score if c else float('nan'), metric[n]):>{width}}"
                    for c in cells))
            kinds = set(metric.values())
            kind = kinds.pop() if len(kinds) == 1 else "acc"
            for g, members in o.result.groups.items():
                means = [group_score(o.result.tasks.get(lb, {}), members,
                                     o.result.groups)["score"] for lb in self.labels]
                lines.append(f"{'[' + g + '] mean':<{name_w}}"
                             + "".join(f" {_cell(m, kind):>{width}}" for m in means))
            lines += [f"  note: {n}" for n in o.result.notes] + [""]
        return "\n".join(lines).rstrip() + "\n"

    def file_name(self, step: bool = True) -> str:
        """The results file's name under a run's ``eval/``: ``results-step<N>-<date>.json``
        (the step evaluated: ``minidml plot`` draws a run's curve from them), or without the
        step (``step`` False: an exported model has none)."""
        stamp = self.date.replace(":", "").replace("-", "")[:15]
        return f"results-step{self.run.step}-{stamp}.json" if step else f"results-{stamp}.json"

    def write(self, path: str | os.PathLike, unique: bool = False) -> Path:
        """The results as JSON at ``path`` (written atomically; missing folders are made);
        with ``unique``, never over an existing file: ``NAME-2.json``, ``NAME-3.json``, …
        where ``path`` is taken (two evaluations finishing in the same second)."""
        path, data = Path(path), self.to_json()
        _make_parent(path)
        if not unique:
            _io.write_json(path, data)
            return path
        candidate, n = path, 1
        while True:
            try:
                _io.write_json(candidate, data, exclusive=True)
                return candidate
            except FileExistsError:
                n += 1
                candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")

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


CORRELATIONS = ("rho", "curve_fitness")  # metrics shown as they are, not as percentages


def _cell(x: float, metric: str) -> str:
    if metric in CORRELATIONS:
        return "-" if math.isnan(x) else f"{x:.3f}"
    return _pct(x)


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
             on_suite: Callable[[SuiteOutcome], None] | None = None,
             protocol: str = DEFAULT_PROTOCOL) -> EvalResults:
    """Run the named suites (``all``: every suite whose data is present and that is defined
    under ``protocol``) on a loaded run, scoring texts by ``protocol``
    (:mod:`minidml.evaluation.protocols`).

    A suite that raises is recorded as failed and the others still run; a suite whose data
    is missing is ``unavailable``. ``available`` defaults to the plugins' suites.
    """
    import time

    available = _registered(available)
    rule = get_protocol(protocol)
    root = data_root(data_dir)
    if limit is not None and limit < 1:
        raise MinidmlError(f"--limit {limit}: must be at least 1")
    names = _expand(suites, available, root, protocol=rule.name)
    labels = labels_for(student, len(run.students), getattr(run, "champion", 0))
    scorer = Scorer(run.students, run.tokenizer, run.omega, labels=labels,
                    batch_size=batch_size, precision=precision, progress=progress,
                    protocol=rule)
    outcomes = []
    for name in names:
        spec = available[name]
        t0 = time.perf_counter()
        missing = spec.missing_data(root)
        if missing:
            hint = (f"run `minidml data fetch {name}` or pass --data-dir" if spec.sources else
                    "it cannot be downloaded: put the official file there (the BabyLM "
                    "evaluation data, osf.io/ryjfm) or pass --data-dir")
            outcome = SuiteOutcome(spec, "unavailable",
                                   error=f"data not found: {root / missing[0]}; {hint}")
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
                outcome = SuiteOutcome(spec, "failed", error=describe(e))
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        if on_suite is not None:
            on_suite(outcome)
    date = datetime.now(UTC).isoformat(timespec="seconds")
    return EvalResults(run, labels, outcomes, date, rule.name)


def require_suites(requested: Sequence[str], data_dir: str | os.PathLike | None = None, *,
                   option: str = "--suite", available: Mapping[str, SuiteSpec] | None = None,
                   protocol: str = DEFAULT_PROTOCOL) -> list[str]:
    """The suites that ``requested`` names, each with its data present, else a
    :class:`MinidmlError` naming ``option``: the check to make before work (training, say)
    that ends in evaluating them."""
    available = _registered(available)
    root = data_root(data_dir)
    names = _expand(requested, available, root, option, get_protocol(protocol).name)
    for name in names:
        missing = available[name].missing_data(root)
        if missing:
            raise MinidmlError(f"{option} {name}: its data is not in {root} (no "
                               f"{missing[0]}); pass --data-dir or run `minidml data fetch "
                               f"{name}`")
    return names


# named sets of suites (besides ``all``): each takes the registered suites it names whose
# data is present
ZERO_SHOT_2026 = ("blimp", "blimp-supplement", "ewok", "entity-tracking", "wug-adj",
                  "wug-past", "comps", "reading")
GROUPS = {
    "babylm-fast": lambda name: name.endswith("-fast"),  # the 2026 fast sets, for checkpoints
    "babylm-2026": lambda name: name in ZERO_SHOT_2026,  # the 2026 zero-shot tasks, full
}


def _registered(available: Mapping[str, SuiteSpec] | None) -> Mapping[str, SuiteSpec]:
    """``available``, or by default the suites the plugins register."""
    return available if available is not None else suites()


def _expand(requested: Sequence[str], available: Mapping[str, SuiteSpec], root: Path,
            option: str = "--suite", protocol: str = DEFAULT_PROTOCOL) -> list[str]:
    if not requested:
        raise MinidmlError(f"no suite given; pass {option} NAME (see `minidml suites`) or "
                           f"{option} all")
    names: list[str] = []
    for name in requested:
        if name == "all" or name in GROUPS:
            chosen = [n for n, s in available.items() if s.data_present(root)
                      and s.supports(protocol) and (name == "all" or GROUPS[name](n))]
            if not chosen:
                raise MinidmlError(f"{option} {name}: none of its suites has its data in "
                                   f"{root}; pass --data-dir or run `minidml data fetch`")
            names += chosen
        elif name in available:
            if not available[name].supports(protocol):
                raise MinidmlError(
                    f"{option} {name}: defined only under --protocol "
                    f"{' or '.join(available[name].protocols)}, not {protocol}; pass "
                    f"--protocol {available[name].protocols[0]} or drop {option} {name}")
            names.append(name)
        else:
            raise MinidmlError(f"{option} {name}: no such suite; choose from "
                               f"{', '.join(sorted(available))} (see `minidml suites`)")
    return list(dict.fromkeys(names))
