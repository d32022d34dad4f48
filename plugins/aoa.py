"""``aoa``: the BabyLM 2026 age-of-acquisition evaluation (Chang & Bergen, 2022), as the
official pipeline runs it (``evaluation_pipeline/AoA_word/run.py``, ``scripts/eval_aoa.sh``)
and scores it (``_calculate_aoa_results`` of ``calculate_results_from_pred.py``: the
``AoAEvaluator`` of ``evaluation_pipeline/utils.py``). Defined under ``babylm-2026`` only.

**Data** (no public copy; the official files go where the official layout puts them):
``babylm-eval-2026/full_eval/aoa/cdi_childes.json``, ``{word: [{"context": text, …}, …]}``,
and ``cdi_human.csv`` beside it, one row per CDI word with a ``word`` column and the share of
children who produce it at each age in months, columns ``16`` … ``30`` (an empty cell, or one
of pandas' missing-value texts, is missing). The words are taken in the file's order, each with
all its contexts in order, leaving out a word of one character (``len(word) > 1``, as the
official loader keeps them) and one with fewer than ``min_context`` contexts: 0, the default of
the official ``run.py`` (``eval_aoa.sh`` sets ``MIN_CONTEXT=20`` but never passes it on). A
row is one (word, context); ``--limit N`` keeps the first N words.

**Revisions.** The measure follows each word over training: every checkpoint of the run that
is published as a revision (its ``words.json``: ``chck_1M``, …, see :mod:`minidml.words`), in
order of words seen. The final model (``main``) is not one: the official run evaluates the
``chck_*`` revisions only. A Hugging Face directory, or a run without such checkpoints, is a
one-line error.

**Surprisal** (the official causal rule, ``compute_surprisal_causal``): the text is
``context.strip() + " " + word.strip()``, encoded with the tokenizer's special tokens
(minidml's: BOS first). The scored tokens are those after the first whose character span ends
past the start of the word (``len(text) - len(word.strip())``): the word's pieces, the one
that carries its word boundary included. A row's surprisal is −Σ ln p of those tokens, in
nats, each row on its own (nothing is averaged over contexts; the fit below sees every
context's point). The ensemble's probability of a token is the ω-weighted mixture of the
students'.

**Curve fitness** (``AoAEvaluator.compute_curve_fitness``), when ``cdi_human.csv`` is there:

- *a word's points*: one per row, ``x = log10(s + 1)`` with ``s`` the words seen of its
  revision as the official code reads a revision's name (the first number in it, times 1,000
  for ``k``, 10⁶ for ``M``, 10⁹ for ``B``: ``chck_10M`` → 10⁷), ``y = −surprisal``; rows
  whose surprisal is NaN are dropped, and a word with fewer than 3 rows, or fewer than 4
  left, has no AoA;
- *the model's AoA*: ``f(x) = a / (1 + exp(−b (x − c))) + d`` fitted by scipy's
  ``curve_fit`` (Levenberg–Marquardt, at most 1,000 evaluations; a failed fit is no AoA)
  from ``(max y − min y, 1, mean x, min y)``. With ``T = −(L − (L − min surprisal) / 2)``,
  ``L = log2 300,000``, the AoA is ``c − ln(a / (T − d) − 1) / b`` (log10 of words seen):
  none when ``a ≤ 0``, ``b ≤ 0``, ``T`` is not strictly between ``d`` and ``a + d``, or
  ``10^AoA − 1`` lies outside the word's first and last ``s``;
- *the children's AoA*: the same curve fitted to the word's shares over the ages with a value
  (at least 3; its first row in the file), from ``(1, 0.1, mean age, 0)`` within ``0 ≤ a ≤ 2``,
  ``0 ≤ b ≤ 1``, first age ≤ ``c`` ≤ last age, ``−0.5 ≤ d ≤ 0.5`` (the bounded ``curve_fit``,
  at most 1,000 evaluations), and the age where it crosses 0.5, none outside the ages or under
  the same conditions;
- *the score*: Pearson's r between the two AoAs over the words that have both (``n_words``),
  as it is (−1 … 1; the official report prints it to two decimals); 0.0 when fewer than 3
  words have both, as the official code gives it.

The fits are the official code's ``curve_fit`` calls, so they need scipy (the ``aoa`` extra:
``pip install 'minidml[aoa]'``), imported only to fit; the surprisals need numpy and torch
only. Without ``cdi_human.csv`` nothing needs scipy; with it and without scipy the suite is a
one-line error before any surprisal is computed.

**Results.** Per model label one task, ``aoa``, whose ``curve_fitness`` (NaN without
``cdi_human.csv``, with a note naming the file) is the primary metric, with ``n_words`` and the
mean surprisal at each revision (``surprisal/<revision>``); ``n`` is the number of words
scored. The suite's ``rows`` hold, per label and revision, every row's surprisal in file
order, from which ``--babylm-results`` writes the official ``AoA_word/surprisal.json``
(:meth:`AoASuite.surprisal_file`), and which ``minidml babylm collate`` scores again
(:meth:`AoASuite.score_file`).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import (
    ENSEMBLE,
    EvalContext,
    Request,
    Scorer,
    SuiteResult,
    TaskResult,
    read_json,
)

from .reading import MISSING, read_records

FOLDER = "babylm-eval-2026/full_eval/aoa"
WORDS_FILE = f"{FOLDER}/cdi_childes.json"
HUMAN_FILE = f"{FOLDER}/cdi_human.csv"
MIN_CONTEXT = 0  # the official run.py's default (eval_aoa.sh does not pass its MIN_CONTEXT)
AGES = tuple(range(16, 31))  # the months the official reader looks for, in this order
VOCAB = 300_000  # the official "approximate vocabulary": chance is log2 of it
THRESHOLD = 0.5  # half way, for the model and the children alike
MAX_EVALUATIONS = 1000  # curve_fit's maxfev in the official code
TASK = "aoa"


# ----------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class WordSet:
    """The words of ``cdi_childes.json`` that are scored, in file order, each with its
    contexts in order, and how many words the file holds."""

    words: list[str]
    contexts: list[list[str]]
    in_file: int

    def __len__(self) -> int:
        return len(self.words)

    def head(self, n: int | None) -> WordSet:
        """The first ``n`` words (all of them when ``n`` is None)."""
        if n is None:
            return self
        return WordSet(self.words[:n], self.contexts[:n], self.in_file)

    @property
    def rows(self) -> list[tuple[int, int]]:
        """(word index, context index) of every row, in file order."""
        return [(w, k) for w, cs in enumerate(self.contexts) for k in range(len(cs))]


def read_words(path: str | Path, min_context: int = MIN_CONTEXT) -> WordSet:
    """The scored words of a ``cdi_childes.json`` (see the module docstring). A file that is
    not JSON, not ``{word: [{"context": text, …}, …]}``, or a context that is not text, is a
    one-line error naming the file and the word."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise MinidmlError(f"{path}: expected {{word: [{{\"context\": …}}, …]}}, the official "
                           "cdi_childes.json; re-download the file")
    words, contexts = [], []
    for word, entries in data.items():
        if not isinstance(entries, list):
            raise MinidmlError(f"{path}: word {word[:30]!r} holds no list of contexts; "
                               "re-download the file")
        texts = []
        for k, entry in enumerate(entries):
            text = entry.get("context") if isinstance(entry, dict) else None
            if not isinstance(text, str):
                raise MinidmlError(f"{path}: context {k} of {word[:30]!r} has no 'context' "
                                   "text; fix or re-download the file")
            texts.append(text)
        if len(word) > 1 and len(texts) >= min_context:
            words.append(word)
            contexts.append(texts)
    return WordSet(words, contexts, len(data))


@dataclass
class Human:
    """``cdi_human.csv``: per row its word (None where missing) and its shares at
    :data:`AGES` that the file has (NaN where missing); the children's AoA of a word is
    computed once."""

    words: list[str | None]
    ages: np.ndarray
    shares: np.ndarray  # [row, age]
    _aoa: dict[str, float | None] = field(default_factory=dict, repr=False)

    def child_aoa(self, word: str) -> float | None:
        """The age in months at which the fitted curve of the word's first row crosses 0.5
        (None: no such row, or no AoA; see the module docstring)."""
        if word not in self._aoa:
            try:
                row = self.words.index(word)
            except ValueError:
                self._aoa[word] = None
            else:
                self._aoa[word] = child_aoa(self.ages, self.shares[row])
        return self._aoa[word]

    def __contains__(self, word: str) -> bool:
        return word in self.words


def read_human(path: str | Path) -> Human:
    """``cdi_human.csv`` as the official reader (pandas) reads it: a ``word`` column and the
    age columns ``16`` … ``30`` that are there. A missing column or a share that is not a
    number is a one-line error naming the file."""
    path = Path(path)
    records = read_records(path)
    header = records[0][1]
    ages = [a for a in AGES if str(a) in header]
    if "word" not in header or not ages:
        lacking = "'word'" if "word" not in header else "any age column (16 … 30)"
        raise MinidmlError(f"{path}: no column {lacking} in the header; the AoA fit needs "
                           "the official cdi_human.csv: re-download it")
    at_word = header.index("word")
    at_age = [header.index(str(a)) for a in ages]
    words: list[str | None] = []
    shares = []
    for number, row in records[1:]:
        row = row + [""] * (len(header) - len(row))
        words.append(None if row[at_word] in MISSING else row[at_word])
        values = []
        for a, i in zip(ages, at_age, strict=True):
            cell = row[i]
            if cell in MISSING:
                values.append(math.nan)
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise MinidmlError(f"{path}:{number}: column {str(a)!r} holds {cell[:30]!r}, "
                                   "not a number; fix the cell or leave it empty") from None
        shares.append(values)
    return Human(words, np.asarray(ages, dtype=np.float64),
                 np.asarray(shares, dtype=np.float64).reshape(len(words), len(ages)))


# ----------------------------------------------------------------------------- revisions
REVISION = re.compile(r"chck_(\d+)([kM]?)")
UNITS = {"": 1, "k": 1_000, "M": 1_000_000}


def revision_words(name: str) -> int | None:
    """The words seen that a revision's name stands for (the inverse of
    :func:`minidml.words.revision_name`; None: not such a name)."""
    m = REVISION.fullmatch(name)
    return None if m is None else int(m.group(1)) * UNITS[m.group(2)]


STEP = re.compile(r"(\d+(?:\.\d+)?)\s*([KMB]?)", re.IGNORECASE)
MULTIPLIERS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9}


def step_value(step: Any) -> float | None:
    """A revision's words seen as the official scorer reads them from its name: a number as
    it is, else the first number in the text times its unit (``chck_10M`` → 1e7; None: no
    number)."""
    if isinstance(step, int | float):
        return float(step)
    m = STEP.search(str(step))
    if m is None:
        return None
    return float(m.group(1)) * MULTIPLIERS[m.group(2).upper()]


@dataclass(frozen=True)
class Revision:
    """A revision of the run: its name, the words seen it stands for, its checkpoint's step."""

    name: str
    words: int
    step: int


def run_revisions(run: Any) -> list[Revision]:
    """The revisions of a loaded minidml run, in order of words seen; a Hugging Face model
    or a run without any is a one-line error."""
    import minidml
    from minidml.rundir import checkpoint_of, checkpoint_steps, revisions

    if not isinstance(run, minidml.Run):
        raise MinidmlError(f"{run.path}: a Hugging Face model has no checkpoints to follow "
                           "over training; aoa scores a minidml run's revisions (chck_1M, …): "
                           "evaluate the run directory")
    found = []
    for step in checkpoint_steps(run.path):
        for name in revisions(checkpoint_of(run.path, step)):
            words = revision_words(name)
            if words is not None:
                found.append(Revision(name, words, step))
    if not found:
        raise MinidmlError(f"{run.path}: no checkpoint at words seen (chck_1M, …) to follow "
                           "the words over; train with --track or --checkpoint-words")
    return sorted(found, key=lambda r: (r.words, r.name))


def total_steps(track: str | None, revisions: Sequence[str]) -> int:
    """What the official file's metadata calls ``total_steps``: the number of revisions of the
    track (19 for strict-small, 28 for the others), or of the run without a track."""
    from minidml.words import track_milestones

    return len(track_milestones(track)) if track else len(revisions)


# ----------------------------------------------------------------------------- surprisal
def requests(scorer: Scorer, words: WordSet) -> tuple[list[Request], list[int]]:
    """The scoring request of every distinct (context, word) text and, per row, which."""
    index: dict[tuple[str, str], int] = {}
    lookup = []
    for w, k in words.rows:
        key = (words.contexts[w][k].strip() + " ", words.words[w].strip())
        lookup.append(index.setdefault(key, len(index)))
    keys = list(index)
    reqs = scorer.encode([w for _, w in keys], [c for c, _ in keys], [""] * len(keys))
    return reqs, lookup


def surprisals(scorer: Scorer, reqs: Sequence[Request], lookup: Sequence[int]
               ) -> dict[str, np.ndarray]:
    """{label: each row's surprisal (nats)} under ``scorer``'s models."""
    at = np.asarray(lookup, dtype=np.int64)
    return {lb: -v.numpy()[at] for lb, v in scorer.score_ids(reqs).items()}


# ----------------------------------------------------------------------------- curve fits
NEEDS_SCIPY = "aoa: the curve fit needs scipy; pip install 'minidml[aoa]'"


def sigmoid(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """``a / (1 + exp(−b (x − c))) + d`` (evaluated in this order, as the official code)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return a / (1 + np.exp(-b * (x - c))) + d


def _optimize() -> Any:
    """``scipy.optimize``, imported only when a fit is made (the one part of aoa that needs
    scipy); without scipy, a one-line error naming the extra."""
    try:
        import scipy.optimize
    except ImportError:
        raise MinidmlError(NEEDS_SCIPY) from None
    return scipy.optimize


def fit_sigmoid(x: np.ndarray, y: np.ndarray, p0: Sequence[float | np.floating[Any]],
                **bounds: Any) -> np.ndarray | None:
    """:func:`sigmoid`'s parameters fitted to ``(x, y)`` by scipy's ``curve_fit`` as the
    official code calls it (``maxfev=1000``; ``bounds``: the children's box); None where the
    fit fails, as the official code takes any exception there for no AoA."""
    optimize = _optimize()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)  # the covariance: unused
            fitted, _ = optimize.curve_fit(sigmoid, x, y, p0=p0, maxfev=MAX_EVALUATIONS,
                                           **bounds)
    except Exception:  # noqa: BLE001 - as the official code: a failed fit is no AoA
        return None
    return fitted


def child_aoa(ages: np.ndarray, shares: np.ndarray) -> float | None:
    """The children's AoA from one word's shares at ``ages`` (NaN: missing); see the module
    docstring."""
    valid = ~np.isnan(shares)
    if not np.any(valid):
        return None
    x, y = ages[valid], shares[valid]
    if len(y) < 3:
        return None
    fitted = fit_sigmoid(x, y, [1.0, 0.1, np.mean(x), 0.0],
                         bounds=([0, 0, x[0], -0.5], [2.0, 1.0, x[-1], 0.5]))
    if fitted is None:
        return None
    a, b, c, d = (float(v) for v in fitted)
    if b <= 0 or a <= 0 or d >= THRESHOLD or a + d <= THRESHOLD:  # NaN passes, as there
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        aoa = c - float(np.log(a / (THRESHOLD - d) - 1)) / b
    return None if aoa < x[0] or aoa > x[-1] else aoa


def model_aoa(surprisal: Sequence[float], steps: Sequence[float]) -> float | None:
    """The model's AoA (log10 of the words seen) from one word's points; see the module
    docstring."""
    if len(surprisal) < 3:
        return None
    s, t = np.asarray(surprisal, dtype=np.float64), np.asarray(steps, dtype=np.float64)
    valid = ~np.isnan(s)
    if not np.any(valid):
        return None
    s, t = s[valid], t[valid]
    chance = float(np.log2(VOCAB))
    level = chance - THRESHOLD * (chance - float(np.min(s)))
    y = -s
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(t + 1)
    fitted = fit_sigmoid(x, y, [np.max(y) - np.min(y), 1.0, np.mean(x), np.min(y)])
    if fitted is None:
        return None
    a, b, c, d = (float(v) for v in fitted)
    target = -level
    if b <= 0 or a <= 0 or target <= d or target >= a + d:
        return None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        aoa = c - float(np.log(a / (target - d) - 1)) / b
        words = float(np.power(10.0, aoa)) - 1
    return None if words < t[0] or words > t[-1] else aoa


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r (NaN when either side is constant)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return math.nan
    return float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))


@dataclass(frozen=True)
class Fitness:
    """The official score and what it is made of: the words with both AoAs, in order of
    their first row, and their AoAs (the model's as log10 of words seen, the children's in
    months)."""

    curve_fitness: float
    words: list[str]
    model: list[float]
    children: list[float]


def curve_fitness(records: Iterable[tuple[Any, str, Any]], human: Human,
                  progress: bool = False) -> Fitness:
    """The official curve fitness of ``(revision, word, surprisal)`` records (a revision's
    words seen read from its name by :func:`step_value`; a record whose surprisal is no
    number, or whose revision has none, is left out, as the official scorer leaves it out);
    ``progress``: a bar over the words fitted."""
    from tqdm.auto import tqdm

    points: dict[str, tuple[list[float], list[float]]] = {}
    for step, word, value in records:
        steps, values = points.setdefault(word, ([], []))
        try:
            at = step_value(step)
            surprisal = float(value)
        except (TypeError, ValueError):
            continue
        if at is not None:
            steps.append(at)
            values.append(surprisal)
    words, model, children = [], [], []
    for word, (steps, values) in tqdm(points.items(), desc="fitting", unit="word",
                                      disable=not progress, leave=False, dynamic_ncols=True):
        if word not in human:
            continue
        child = human.child_aoa(word)
        if child is None:
            continue
        ours = model_aoa(values, steps)
        if ours is None:
            continue
        words.append(word)
        model.append(ours)
        children.append(child)
    score = pearson(model, children) if len(words) >= 3 else 0.0
    return Fitness(score, words, model, children)


# ----------------------------------------------------------------------------- the suite
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AoASuite:
    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        revs = run_revisions(ctx.run)
        words = read_words(ctx.path(WORDS_FILE)).head(ctx.limit)
        if not len(words):
            raise MinidmlError(f"{ctx.data_dir / WORDS_FILE}: no word to score (words of one "
                               "character are left out); re-download the file")
        human_path = ctx.data_dir / HUMAN_FILE
        human = read_human(human_path) if human_path.is_file() else None
        if human is not None:
            _optimize()  # the fit needs scipy: say so before the surprisals, not after
        reqs, lookup = requests(ctx.scorer, words)
        rows: dict[str, dict[str, list[float]]] = {lb: {} for lb in ctx.labels}
        for rev, scorer in self._scorers(ctx, revs):
            for label, values in surprisals(scorer, reqs, lookup).items():
                rows[label][rev.name] = values.tolist()
        tasks = {}
        per_row = words.rows
        for label in ctx.labels:
            metrics: dict[str, float] = {"curve_fitness": math.nan, "n_words": math.nan}
            if human is not None:
                fit = curve_fitness(((rev.name, words.words[w], s) for rev in revs for (w, _), s
                                     in zip(per_row, rows[label][rev.name], strict=True)),
                                    human, ctx.progress)
                metrics = {"curve_fitness": fit.curve_fitness, "n_words": float(len(fit.words))}
            for rev in revs:
                values = np.asarray(rows[label][rev.name])
                metrics[f"surprisal/{rev.name}"] = float(values.mean()) if len(values) \
                    else math.nan
            tasks[label] = {TASK: TaskResult(TASK, metrics, len(words), "curve_fitness")}
        notes = [f"{len(words):,} words, {len(per_row):,} (word, context) rows, at "
                 f"{len(revs)} revision{'s' if len(revs) > 1 else ''} ({revs[0].name} … "
                 f"{revs[-1].name}); the final model (main) is none: the official run "
                 "scores the chck_* revisions only"]
        if human is None:
            notes.append(f"no curve fitness: the fit needs {human_path} (the official "
                         "cdi_human.csv, which has no public copy); the surprisals go to "
                         "--babylm-results")
        elif any(t[TASK].metrics["n_words"] < 3 for t in tasks.values()):
            notes.append("fewer than 3 words have both a model and a child AoA for some "
                         "model: the official score is then 0.0")
        if ENSEMBLE in ctx.labels:
            notes.append("ensemble: each token's probability is the ω-weighted mixture of the "
                         "students' at the revision")
        track = getattr(ctx.run.config, "track", None)
        settings = {"min_context": MIN_CONTEXT, "words": len(words), "track": track,
                    "revisions": {r.name: {"words": r.words, "step": r.step} for r in revs},
                    "cdi_human_sha256": _sha256(human_path) if human is not None else None}
        return SuiteResult(tasks, {ctx.suite: (TASK,)}, notes, rows=rows, settings=settings)

    @staticmethod
    def _scorers(ctx: EvalContext, revs: Sequence[Revision]):
        """(revision, a scorer of its checkpoint's models), one checkpoint loaded at a time
        (the evaluated checkpoint's own scorer where it is one)."""
        import minidml

        made: tuple[int, Scorer] | None = None
        for rev in revs:
            if rev.step == ctx.run.step:
                scorer = ctx.scorer
            elif made is not None and made[0] == rev.step:
                scorer = made[1]
            else:
                made = None  # let the previous checkpoint go before loading the next
                run = minidml.load(ctx.run.path, device=str(ctx.run.device), step=rev.step)
                scorer = Scorer(run.students, run.tokenizer, run.omega, labels=ctx.labels,
                                batch_size=ctx.batch_size, precision=ctx.scorer.precision,
                                progress=ctx.progress, protocol=ctx.scorer.protocol)
                made = (rev.step, scorer)
            yield rev, scorer

    # the official surprisal.json (written by --babylm-results, scored by babylm collate)
    def row_count(self, data_dir: Path) -> int | None:
        """The rows of one revision in the official file of the data under ``data_dir``
        (None: the word file is not there)."""
        path = Path(data_dir) / WORDS_FILE
        return len(read_words(path).rows) if path.is_file() else None

    def human_file(self, data_dir: Path) -> Path:
        return Path(data_dir) / HUMAN_FILE

    def surprisal_file(self, rows: Mapping[str, Sequence[float]], settings: Mapping[str, Any],
                       data_dir: Path, model: str) -> dict[str, Any]:
        """The official ``surprisal.json`` of one model's rows (per revision, in the order
        of words seen): ``metadata`` (``model_name``, ``use_bos_only`` false, ``total_steps``
        the track's revisions, ``completed_steps``) and ``results``, per revision, word and
        context in order, ``{"step", "word_count", "target_word", "context_id", "context",
        "surprisal"}``, as ``run.py`` writes them."""
        path = Path(data_dir) / WORDS_FILE
        words = read_words(path).head(int(settings["words"]))
        pairs = words.rows
        revs = dict(sorted(settings["revisions"].items(), key=lambda kv: kv[1]["words"]))
        results = []
        for name, info in revs.items():
            values = rows[name]
            if len(values) != len(pairs):
                raise MinidmlError(f"{path}: {len(pairs):,} rows, but {len(values):,} "
                                   f"surprisals of {name}; the file changed since it was "
                                   "scored: evaluate again")
            for (w, k), value in zip(pairs, values, strict=True):
                results.append({"step": name, "word_count": int(info["words"]),
                                "target_word": words.words[w], "context_id": k,
                                "context": words.contexts[w][k], "surprisal": float(value)})
        return {"metadata": {"model_name": model, "use_bos_only": False,
                             "total_steps": total_steps(settings.get("track"), list(revs)),
                             "completed_steps": len(revs)},
                "results": results}

    def score_file(self, data: Mapping[str, Any], data_dir: Path) -> dict[str, float] | None:
        """The official score of a ``surprisal.json`` (``curve_fitness``, ``n_words``; None:
        no ``cdi_human.csv`` under ``data_dir``; without scipy, a one-line error)."""
        path = self.human_file(data_dir)
        if not path.is_file():
            return None
        fit = curve_fitness(((r["step"], r["target_word"], r["surprisal"])
                             for r in data["results"]), read_human(path))
        return {"curve_fitness": fit.curve_fitness, "n_words": float(len(fit.words))}


@hookimpl
def register_suites(register):
    register("aoa", AoASuite, version="1",
             description="BabyLM 2026 age of acquisition: words' surprisal over the revisions, "
                         "curve fitness against children's (needs cdi_human.csv)",
             requires=(WORDS_FILE,), protocols=("babylm-2026",))
