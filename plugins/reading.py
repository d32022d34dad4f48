"""``reading`` (and ``reading-fast``, the same file in the fast set): the BabyLM 2026 reading
evaluation, how well a model's surprisal predicts human reading times and ERPs.

**Data.** ``reading_data.csv``: one row per word in context. Cells are read as the official
pipeline's pandas reads them: an empty cell, or one of pandas' default missing-value texts
(``NA``, ``NaN``, ``None``, ``null``, … exactly, see :data:`MISSING`), is missing; a missing
``item`` becomes the text ``"None"`` (the sentence that starts with that word), while a missing
``prev_item`` means the row has no previous word.

**What is scored** (the official causal rule, ``get_p2``). A row's ``pred`` is
−log p2(``item``, ``word``) and its ``prev_pred`` −log p2(``prev_item``, ``prev_word``)
(missing when ``prev_item`` is). p2(sentence, word): the word's pieces are the tokenizer's
encoding of ``word`` alone, without special tokens (with a word boundary, minidml's first
piece is the word's piece in running text); the first piece's probability is the softmax of
the logits at the last position of the sentence encoded with its special tokens (minidml: BOS
first). A further piece's is taken the same way, after the sentence extended by the decoded
text of every earlier piece (plain concatenation: the first piece decodes without its word
boundary, so the context reads ``"Arthur placedchoc"``), and the id scored for it is the first
piece of its own decoded text encoded again on its own (``"olate"`` becomes the piece that
starts ``" olate"``). p2 is the product of the pieces' probabilities. Every model label is
scored this way; the ensemble's probability of a piece is the ω-weighted mixture of the
students'.

**Regressions.** Ordinary least squares with an intercept, for each of the eleven measures
(:data:`MEASURES`). First family: the baseline ``dv ~ Subtlex_log10 + length +
context_length`` and their three pairwise products, on the rows where the measure and those
predictors are present, against the same plus ``pred`` on the rows where ``pred`` is present
too. Second ("spillover") family: the baseline predictors ``Subtlex_log10, length,
context_length, prev_length, prev_pred`` and all ten pairwise products, then ``+ pred``. For
each fit: R² (centred), ΔR² = R²_model − R²_base, the share of the baseline's unexplained
variance that surprisal explains, ΔR² / (1 − R²_base), the coefficient of ``pred`` and its t
value, AIC and ΔAIC.

**Scores.** ``eye_tracking``: the mean of ΔR² / (1 − R²_base) over the first family's four
measures whose names contain ``RT`` (first fixation, first pass, go-past, right-bounded).
``self_paced_reading``: ΔR² / (1 − R²_base) of ``self_paced_reading_time`` in the spillover
family. The official report prints both ×100; here they are fractions (``rel_delta_r2``, the
primary metric; the table prints ×100), each task carrying every measure of its family as
``<measure>/<metric>``, with ``corr`` the Pearson correlation of ``pred`` and the measure
over the rows where both are present. ``n`` is the number of rows in the headline fits.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import ENSEMBLE, EvalContext, Request, Scorer, SuiteResult, TaskResult

FILE = "babylm-eval-2026/full_eval/reading/reading_data.csv"
FAST_FILE = "babylm-eval-2026/fast_eval/reading/reading_data.csv"

MEASURES = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound", "self_paced_reading_time",
            "ELAN", "LAN", "N400", "P600", "EPNP", "PNP")
EYE_TRACKING = tuple(m for m in MEASURES if "RT" in m)
SELF_PACED = "self_paced_reading_time"
BASELINE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = (*BASELINE, "prev_length", "prev_pred")
TEXTS = ("item", "word", "prev_item", "prev_word")
NUMBERS = (*BASELINE, "prev_length", *MEASURES)
# pandas' default missing-value texts (read_csv's na_values, pandas 2.x), matched exactly
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                     "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                     "nan", "null"})
MISSING_ITEM = "None"  # what a missing item is read as (fillna("None"))


# ----------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class ReadingTable:
    """The rows of ``reading_data.csv``: texts (``prev_item``/``prev_word`` None where
    missing), numeric columns as float arrays (NaN where missing), and each row's place in
    the file (``path:line``) for messages."""

    items: list[str]
    words: list[str]
    prev_items: list[str | None]
    prev_words: list[str | None]
    numbers: dict[str, np.ndarray]
    where: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def head(self, n: int | None) -> ReadingTable:
        """The first ``n`` rows (all of them when ``n`` is None)."""
        if n is None:
            return self
        return ReadingTable(self.items[:n], self.words[:n], self.prev_items[:n],
                            self.prev_words[:n], {k: v[:n] for k, v in self.numbers.items()},
                            self.where[:n])


def _number(text: str, where: str, column: str) -> float:
    if text in MISSING:
        return math.nan
    try:
        if "_" in text:  # Python reads 1_000; pandas does not
            raise ValueError
        value = float(text)
    except ValueError:
        raise MinidmlError(f"{where}: column {column!r} holds {text[:30]!r}, not a number; "
                           "fix the cell or re-download the file") from None
    if not math.isfinite(value):
        raise MinidmlError(f"{where}: column {column!r} holds {text[:30]!r}; the regressions "
                           "need finite numbers: fix the cell or leave it empty") from None
    return value


def read_table(path: str | Path) -> ReadingTable:
    """The reading data at ``path`` (see the module docstring for missing cells). A missing
    column, a row with too many cells, a non-number in a numeric column, a missing ``word``,
    or a ``prev_item`` without its ``prev_word`` is a one-line error naming the file."""
    path = Path(path)
    records = read_records(path)
    header = records[0][1]
    lacking = [c for c in (*TEXTS, *NUMBERS) if c not in header]
    if lacking:
        raise MinidmlError(f"{path}: no column {', '.join(map(repr, lacking))} in the header; "
                           "the reading data needs it: re-download the file")
    index = {c: header.index(c) for c in (*TEXTS, *NUMBERS)}  # the first of equal names
    items, words, prev_items, prev_words, where = [], [], [], [], []
    numbers: dict[str, list[float]] = {c: [] for c in NUMBERS}
    for line, row in records[1:]:
        at = f"{path}:{line}"
        if len(row) > len(header):
            raise MinidmlError(f"{at}: {len(row)} cells, but the header names {len(header)}; "
                               "fix the row or re-download the file")
        row = row + [""] * (len(header) - len(row))  # short rows: the rest missing
        cell = {c: (None if row[i] in MISSING else row[i]) for c, i in index.items()
                if c in TEXTS}
        if cell["word"] is None:
            raise MinidmlError(f"{at}: no word; every row needs the word to score")
        if cell["prev_item"] is not None and cell["prev_word"] is None:
            raise MinidmlError(f"{at}: prev_item {cell['prev_item'][:30]!r} without its "
                               "prev_word; fill it in or leave prev_item empty")
        items.append(MISSING_ITEM if cell["item"] is None else cell["item"])
        words.append(cell["word"])
        prev_items.append(cell["prev_item"])
        prev_words.append(cell["prev_word"])
        for c in NUMBERS:
            numbers[c].append(_number(row[index[c]], at, c))
        where.append(at)
    return ReadingTable(items, words, prev_items, prev_words,
                        {c: np.asarray(v, dtype=np.float64) for c, v in numbers.items()}, where)


def read_records(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each row of the CSV file at ``path``, the header first, blank
    lines skipped as pandas skips them; an unreadable or empty file is a one-line error."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            records = [(reader.line_num, row) for row in reader
                       if row and not (len(row) == 1 and not row[0].strip())]
    except UnicodeDecodeError as e:
        raise MinidmlError(f"{path}: not UTF-8 text ({e.reason}); re-download the file") from None
    except csv.Error as e:
        raise MinidmlError(f"{path}: not a readable CSV file ({e}); re-download the file"
                           ) from None
    except OSError as e:
        raise MinidmlError(f"{path}: cannot read ({e.strerror or e})") from None
    if not records:
        raise MinidmlError(f"{path}: empty; re-download the file")
    return records


# ----------------------------------------------------------------------------- surprisal
def surprisals(scorer: Scorer, pairs: Sequence[tuple[str, str]],
               where: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{label: −log p2(sentence, word) of each ``(sentence, word)``} under the official rule
    (the module docstring), every piece of every word scored in one batched call. A word, or
    a later piece's decoded text, that encodes to no tokens cannot be scored (the official
    code fails there too): a one-line error naming ``where[i]``."""
    tok = scorer.tokenizer
    texts = sorted({w for _, w in pairs})
    word_ids = dict(zip(texts, tok.encode_batch(texts), strict=True))
    decoded: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in decoded:
            decoded[i] = tok.decode([i])
        return decoded[i]

    # per pair, its pieces as (context text, the text whose first token is the target)
    plans: list[list[tuple[str, str | int]]] = []
    for k, (sentence, word) in enumerate(pairs):
        ids = word_ids[word]
        if not ids:
            raise MinidmlError(f"{_at(where, k)}: the word {word[:30]!r} encodes to no tokens; "
                               "it cannot be scored")
        plan: list[tuple[str, str | int]] = [(sentence, ids[0])]
        context = sentence + decode(ids[0])
        for i in ids[1:]:
            piece = decode(i)
            plan.append((context, piece))
            context += piece
        plans.append(plan)
    later = sorted({t for plan in plans for _, t in plan if isinstance(t, str)})
    first_id: dict[str, int | None] = {}
    for text, ids in zip(later, tok.encode_batch(later), strict=True):
        first_id[text] = ids[0] if ids else None
    contexts = sorted({c for plan in plans for c, _ in plan})
    context_ids = {c: ids for c, (ids, _) in
                   zip(contexts, tok.encode_with_spans(contexts), strict=True)}
    requests: dict[tuple[str, int], int] = {}
    lookup: list[list[int]] = []
    for k, plan in enumerate(plans):
        rows = []
        for context, target in plan:
            if isinstance(target, str):
                first = first_id[target]
                if first is None:
                    raise MinidmlError(
                        f"{_at(where, k)}: a piece of {pairs[k][1][:30]!r} decodes to "
                        f"{target!r}, which encodes to no tokens; it cannot be scored")
                target = first
            rows.append(requests.setdefault((context, target), len(requests)))
        lookup.append(rows)
    batch = []
    for context, target in requests:
        ids = list(context_ids[context])
        batch.append(Request([*ids, target], len(ids), len(ids) + 1))
    logp = {lb: v.numpy() for lb, v in scorer.score_ids(batch).items()}
    return {lb: np.asarray([-sum(float(v[r]) for r in rows) for rows in lookup],
                           dtype=np.float64) for lb, v in logp.items()}


def table_surprisals(scorer: Scorer, table: ReadingTable
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{label: (pred, prev_pred)}: each row's surprisal and its previous word's (NaN where the
    row has no ``prev_item``), in one scoring pass."""
    has_prev = [k for k, p in enumerate(table.prev_items) if p is not None]
    pairs = list(zip(table.items, table.words, strict=True))
    # a row with a prev_item has its prev_word (read_table)
    pairs += cast("list[tuple[str, str]]",
                  [(table.prev_items[k], table.prev_words[k]) for k in has_prev])
    where = table.where + [table.where[k] for k in has_prev]
    n = len(table)
    out = {}
    for label, s in surprisals(scorer, pairs, where).items():
        prev = np.full(n, math.nan)
        prev[has_prev] = s[n:]
        out[label] = (s[:n], prev)
    return out


def _at(where: Sequence[str] | None, k: int) -> str:
    return where[k] if where is not None else f"row {k}"


# ----------------------------------------------------------------------------- regressions
@dataclass(frozen=True)
class Fit:
    """An OLS fit with an intercept: rows, R² (centred), the last predictor's coefficient
    and t value, and AIC."""

    n: int
    r2: float
    coef: float
    t: float
    aic: float


NAN_FIT = Fit(0, math.nan, math.nan, math.nan, math.nan)


def ols(y: np.ndarray, predictors: Sequence[np.ndarray]) -> Fit:
    """Least squares of ``y`` on an intercept and ``predictors`` (the Moore–Penrose solution
    where they are collinear; rank and residual degrees of freedom as statsmodels counts
    them)."""
    n = len(y)
    if n == 0:
        return NAN_FIT
    x = np.column_stack([np.ones(n), *predictors])
    pinv = np.linalg.pinv(x, rcond=1e-15)
    beta = pinv @ y
    resid = y - x @ beta
    ssr = float(resid @ resid)
    centred = y - y.mean()
    tss = float(centred @ centred)
    rank = int(np.linalg.matrix_rank(x))
    df_resid = n - rank
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ssr / tss if tss > 0 else math.nan
        scale = ssr / df_resid if df_resid > 0 else math.nan
        var = scale * float(pinv[-1] @ pinv[-1])
        t = float(beta[-1]) / math.sqrt(var) if var > 0 else math.nan
        llf = -n / 2 * (math.log(2 * math.pi) + math.log(ssr / n) + 1) if ssr > 0 else math.inf
    return Fit(n, r2, float(beta[-1]), t, -2 * llf + 2 * rank)


def _with_products(columns: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The columns, then every pairwise product (the formulas' ``a:b`` terms)."""
    k = len(columns)
    return [*columns, *(columns[i] * columns[j] for i in range(k) for j in range(i + 1, k))]


@dataclass(frozen=True)
class Comparison:
    """A baseline fit and the fit with ``pred`` added, for one measure."""

    base: Fit
    model: Fit

    @property
    def delta_r2(self) -> float:
        return self.model.r2 - self.base.r2

    @property
    def rel_delta_r2(self) -> float:
        """ΔR² as a share of the variance the baseline leaves unexplained (the official
        score, ÷ 100)."""
        rest = 1.0 - self.base.r2
        return self.delta_r2 / rest if rest != 0 else math.nan

    def metrics(self) -> dict[str, float]:
        return {"rel_delta_r2": self.rel_delta_r2, "delta_r2": self.delta_r2,
                "r2": self.model.r2, "r2_base": self.base.r2, "coef": self.model.coef,
                "t": self.model.t, "aic": self.model.aic,
                "delta_aic": self.model.aic - self.base.aic, "n": float(self.model.n)}


def compare(columns: Mapping[str, np.ndarray], dv: str, baseline: Sequence[str]) -> Comparison:
    """``dv`` on ``baseline`` and their pairwise products, then with ``pred`` added, each on
    the rows where every variable it uses is present."""

    def fit(names: Sequence[str], extra: Sequence[str]) -> Fit:
        used = [dv, *names, *extra]
        keep = np.logical_and.reduce([~np.isnan(columns[c]) for c in used])
        x = _with_products([columns[c][keep] for c in names])
        return ols(columns[dv][keep], [*x, *(columns[c][keep] for c in extra)])

    return Comparison(fit(baseline, ()), fit(baseline, ("pred",)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r over the rows where both are present (pandas' pairwise ``corr``)."""
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 2:
        return math.nan
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


@dataclass(frozen=True)
class Regressions:
    """Both families of fits for every measure, and the two official scores (fractions)."""

    plain: dict[str, Comparison]
    spillover: dict[str, Comparison]
    corr: dict[str, float]

    @property
    def eye_tracking(self) -> float:
        return float(np.mean([self.plain[m].rel_delta_r2 for m in EYE_TRACKING]))

    @property
    def self_paced_reading(self) -> float:
        return self.spillover[SELF_PACED].rel_delta_r2


def regressions(numbers: Mapping[str, np.ndarray], pred: np.ndarray,
                prev_pred: np.ndarray) -> Regressions:
    """Every fit of the official evaluation, given the table's numeric columns and each
    row's surprisal and previous word's surprisal (NaN where missing)."""
    columns = {**numbers, "pred": pred, "prev_pred": prev_pred}
    return Regressions({m: compare(columns, m, BASELINE) for m in MEASURES},
                       {m: compare(columns, m, SPILLOVER) for m in MEASURES},
                       {m: correlation(pred, numbers[m]) for m in MEASURES})


def _rows_used(columns: Mapping[str, np.ndarray], variables: Sequence[Sequence[str]]) -> int:
    """Rows that enter at least one of the fits using these variable lists."""
    used = [np.logical_and.reduce([~np.isnan(columns[c]) for c in vs]) for vs in variables]
    return int(np.logical_or.reduce(used).sum())


# ----------------------------------------------------------------------------- the suite
class ReadingSuite:
    file = FILE

    def __init__(self) -> None:
        self._tables: dict[Path, ReadingTable] = {}  # read once per data file

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        path = ctx.path(self.file)
        table = read_table(path).head(ctx.limit)
        if not len(table):
            raise MinidmlError(f"{path}: no rows; re-download the file")
        tasks: dict[str, dict[str, TaskResult]] = {}
        rows: dict[str, dict[str, list[float]]] = {}
        for label, (pred, prev_pred) in table_surprisals(ctx.scorer, table).items():
            rows[label] = {"pred": pred.tolist(), "prev_pred": prev_pred.tolist()}
            fits = regressions(table.numbers, pred, prev_pred)
            columns = {**table.numbers, "pred": pred, "prev_pred": prev_pred}
            eye = {"rel_delta_r2": fits.eye_tracking}
            spr = {"rel_delta_r2": fits.self_paced_reading}
            for m in MEASURES:
                eye |= {f"{m}/{k}": v for k, v in fits.plain[m].metrics().items()}
                eye[f"{m}/corr"] = fits.corr[m]
                spr |= {f"{m}/{k}": v for k, v in fits.spillover[m].metrics().items()}
            n_eye = _rows_used(columns, [(m, *BASELINE, "pred") for m in EYE_TRACKING])
            n_spr = _rows_used(columns, [(SELF_PACED, *SPILLOVER, "pred")])
            tasks[label] = {
                "eye_tracking": TaskResult("eye_tracking", eye, n_eye, "rel_delta_r2"),
                "self_paced_reading": TaskResult("self_paced_reading", spr, n_spr,
                                                 "rel_delta_r2")}
        notes = []
        if ENSEMBLE in ctx.labels:
            notes.append("ensemble: a word's surprisal is −log of the product over its pieces "
                         "of the ω-weighted mixture of the students' probabilities")
        return SuiteResult(tasks, {ctx.suite: ("eye_tracking", "self_paced_reading")}, notes,
                           rows=rows)

    # the official predictions file holds each row's pred and prev_pred (ScoresRows); a
    # collation scores one such file per revision, against the table read once
    def _table(self, data_dir: Path) -> ReadingTable:
        path = Path(data_dir) / self.file
        if path not in self._tables:
            self._tables[path] = read_table(path)
        return self._tables[path]

    def row_count(self, data_dir: Path) -> int | None:
        path = Path(data_dir) / self.file
        return len(self._table(data_dir)) if path.is_file() else None

    def score_rows(self, rows: Mapping[str, Sequence[float]], data_dir: Path
                   ) -> dict[str, float]:
        table = self._table(data_dir)
        pred, prev = (np.asarray(rows[c], dtype=np.float64) for c in ("pred", "prev_pred"))
        if len(pred) != len(table) or len(prev) != len(table):
            raise MinidmlError(f"{Path(data_dir) / self.file}: {len(table):,} rows, but "
                               f"{len(pred):,} predictions; score the whole file")
        fits = regressions(table.numbers, pred, prev)
        return {"eye_tracking": fits.eye_tracking,
                "self_paced_reading": fits.self_paced_reading}


class ReadingFastSuite(ReadingSuite):
    file = FAST_FILE


@hookimpl
def register_suites(register):
    register("reading", ReadingSuite, version="1",
             description="BabyLM 2026 reading: surprisal's gain in R² for eye-tracking and "
                         "self-paced reading times, 1,726 words",
             requires=(FILE,), protocols=("babylm-2026",))
    register("reading-fast", ReadingFastSuite, version="1",
             description="BabyLM 2026 reading, the fast set (the same 1,726 words)",
             requires=(FAST_FILE,), protocols=("babylm-2026",))
