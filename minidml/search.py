"""Student architecture search: K diverse shapes whose parameter counts hit given targets.

The paper ("When Babies Teach Babies", BabyLM 2024) gives student *i* of *K* a share
``N / (i + 2)`` of a budget *N* (N/2, N/3, …, N/(K+1)) and finds shapes by Bayesian optimisation
that builds models. Here the parameter count is analytic (:attr:`StudentConfig.n_params
<minidml.model.StudentConfig.n_params>`, exact by construction), so the search is an exhaustive
scan of a small discrete grid and takes milliseconds; no model is ever built.

Typical use::

    from minidml.search import plan, format_table
    students = plan(20_000_000, 4, vocab_size=16384)       # harmonic targets
    print(format_table(students))
    shapes = [c.shape for c in students]                    # minidml.model.Shape, for training

The pieces, for other schemes or explicit targets: :func:`targets` (budget → targets),
:func:`search` (targets → candidates) and :func:`min_budget`.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict, cast

from .counts import format_count, round_up
from .errors import MinidmlError
from .model import Shape, StudentConfig
from .throughput import flop_seconds_per_token

__all__ = [
    "DEFAULT_ASPECT_RANGE", "DEFAULT_HEAD_DIMS", "DEFAULT_LAYERS", "DEFAULT_MLP_RATIOS",
    "DEFAULT_SPEED_SLACK", "DEFAULT_WIDTHS", "DEEP_NARROW", "SCHEMES", "SHALLOW_WIDE",
    "Candidate", "aspect", "format_table", "heads_for", "min_budget", "plan", "search",
    "targets",
]

SCHEMES = ("harmonic", "equal")
DEFAULT_LAYERS = range(1, 33)
# multiples of 64, and 96 (three heads of 32): narrow students at small budgets need a width
# between 64 and 128, and 96 trains 1.3x more efficiently than 64 (see minidml.throughput)
DEFAULT_WIDTHS = (64, 96, *range(128, 2049, 64))
DEFAULT_HEAD_DIMS = (32, 64)
DEFAULT_MLP_RATIOS = (8 / 3,)
DEFAULT_ASPECT_RANGE = (8.0, 256.0)
DEFAULT_SPEED_SLACK = 1.25  # a student may be this much slower than its target's fastest shape
DEFAULT_TOLERANCE = 0.02
DEEP_NARROW = "deep-narrow"
SHALLOW_WIDE = "shallow-wide"


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Candidate:
    """One chosen student: its shape, exact parameter count, target and role."""

    shape: Shape
    n_params: int
    target: int
    role: str = ""  # DEEP_NARROW or SHALLOW_WIDE

    @property
    def error(self) -> float:
        """Relative error of the parameter count, signed: ``(n_params - target) / target``."""
        return (self.n_params - self.target) / self.target

    @property
    def aspect(self) -> float:
        """``d_model / n_layers``: small is deep-narrow, large is shallow-wide."""
        return aspect(self.shape)

    def to_dict(self) -> dict:
        """Plain data for JSON: the shape's fields, then counts, error, aspect and role."""
        return {**dataclasses.asdict(self.shape), "n_params": self.n_params,
                "target": self.target, "error": self.error, "aspect": self.aspect,
                "role": self.role}


def aspect(shape: Shape) -> float:
    """The aspect measure used for diversity: width per layer, ``d_model / n_layers``."""
    return shape.d_model / shape.n_layers


# ----------------------------------------------------------------------------- targets
def targets(budget: int, k: int, scheme: str = "harmonic") -> list[int]:
    """Parameter targets for ``k`` students from a ``budget``.

    ``"harmonic"`` (the paper's scheme): student *i* (0-based) gets ``round(budget / (i + 2))``,
    i.e. N/2, N/3, …, N/(K+1); note these sum to more than N for K ≥ 2. ``"equal"``: each gets
    ``round(budget / k)``.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise MinidmlError(f"--budget {budget!r}: must be a positive whole number")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MinidmlError(f"--students {k!r}: must be a positive whole number")
    if scheme == "harmonic":
        return [max(1, round(budget / (i + 2))) for i in range(k)]
    if scheme == "equal":
        return [max(1, round(budget / k))] * k
    raise MinidmlError(f"scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")


def _fractions(k: int, scheme: str) -> list[float]:
    targets(1, k, scheme)  # validates k and scheme
    return [1 / (i + 2) for i in range(k)] if scheme == "harmonic" else [1 / k] * k


# ----------------------------------------------------------------------------- the grid
def heads_for(d_model: int, head_dims: Sequence[int] = DEFAULT_HEAD_DIMS) -> int | None:
    """Attention heads for a width: the largest allowed head size that divides ``d_model`` and
    leaves at least two heads, else the largest that divides it (one head); None if none does."""
    fits = sorted((h for h in head_dims if d_model % h == 0), reverse=True)
    if not fits:
        return None
    return d_model // next((h for h in fits if d_model // h >= 2), fits[0])


@dataclass(frozen=True)
class _Grid:
    """Every allowed shape, sorted by parameter count (ties: layers, width, MLP ratio order)."""

    counts: tuple[int, ...]
    shapes: tuple[Shape, ...]
    times: tuple[float, ...]  # predicted training time per token (minidml.throughput)
    ratio_rank: dict  # mlp_ratio -> its index in the caller's order (tie-breaking)


def _int_tuple(values: Iterable[int], name: str, lo: int, hi: int, even: bool = False) -> tuple:
    out = tuple(sorted(set(values)))
    if not out:
        raise MinidmlError(f"search {name}: empty")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi or (even and v % 2):
            raise MinidmlError(f"search {name}: {v!r} must be {'an even' if even else 'an'} "
                               f"integer in {lo}..{hi}")
    return out


@functools.lru_cache(maxsize=32)
def _grid(vocab_size: int, layers: tuple[int, ...], widths: tuple[int, ...],
          head_dims: tuple[int, ...], mlp_ratios: tuple[float, ...]) -> _Grid:
    rows = []
    for r_rank, ratio in enumerate(mlp_ratios):
        for width in widths:
            heads = heads_for(width, head_dims)
            if heads is None:
                continue
            for n_layers in layers:
                cfg = StudentConfig(vocab_size=vocab_size, n_layers=n_layers, d_model=width,
                                    n_heads=heads, mlp_ratio=ratio)
                rows.append((cfg.n_params, n_layers, width, r_rank, cfg.shape,
                             flop_seconds_per_token(cfg)))
    if not rows:
        raise MinidmlError(f"search: no width in {widths[0]}..{widths[-1]} is divisible by a "
                           f"head size in {head_dims}; change the widths or head sizes")
    rows.sort(key=lambda row: row[:4])
    return _Grid(tuple(r[0] for r in rows), tuple(r[4] for r in rows), tuple(r[5] for r in rows),
                 {ratio: i for i, ratio in enumerate(mlp_ratios)})


def _grid_for(vocab_size, layers, widths, head_dims, mlp_ratios) -> _Grid:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise MinidmlError(f"--vocab-size {vocab_size!r}: must be a positive whole number")
    try:
        ratios = tuple(dict.fromkeys(float(r) for r in mlp_ratios))
    except (TypeError, ValueError):
        ratios = ()
    if not ratios or not all(math.isfinite(r) and 0 < r <= 16 for r in ratios):
        raise MinidmlError(f"search mlp_ratios {mlp_ratios!r}: need numbers in (0, 16]")
    return _grid(vocab_size, _int_tuple(layers, "layers", 1, 1024),
                 _int_tuple(widths, "widths", 2, 65536),
                 _int_tuple(head_dims, "head_dims", 2, 1024, even=True), ratios)


# ----------------------------------------------------------------------------- search
def search(targets: Sequence[int], vocab_size: int, *, tolerance: float = DEFAULT_TOLERANCE,
           layers: Iterable[int] = DEFAULT_LAYERS, widths: Iterable[int] = DEFAULT_WIDTHS,
           head_dims: Sequence[int] = DEFAULT_HEAD_DIMS,
           mlp_ratios: Sequence[float] = DEFAULT_MLP_RATIOS,
           aspect_range: tuple[float, float] | None = DEFAULT_ASPECT_RANGE,
           speed_slack: float | None = DEFAULT_SPEED_SLACK,
           strict: bool = False, option: str = "--budget") -> list[Candidate]:
    """One diverse student shape per target (a parameter count), in the order given
    (``option``: what gave the targets, named by an error about their size).

    **The grid.** ``n_layers`` in ``layers`` (default 1..32); ``d_model`` in ``widths``
    (default 64, 96, then the multiples of 64 from 128 to 2048); heads from :func:`heads_for`
    (head size 64 where that leaves at least two heads, else 32; widths that no head size
    divides are skipped); SwiGLU MLP ratio in
    ``mlp_ratios`` (default 8/3). A shape's count is ``StudentConfig(...).n_params`` with
    ``vocab_size`` (the tied embedding is ``vocab_size × d_model``; the context does not matter).
    No model is built.

    **What "diverse" means.** The *aspect* of a shape is its width per layer,
    ``d_model / n_layers``. Even-numbered students (0, 2, 4, …) are *deep-narrow* (they want a
    small aspect) and odd-numbered ones (1, 3, 5, …) *shallow-wide* (a large aspect); with the
    harmonic targets, the roles alternate down the sizes. The search picks the assignment of
    grid shapes to all students together (an exact minimum-cost assignment, not a greedy pass)
    that, in order of priority:

    1. gives no two students the same (n_layers, d_model) pair;
    2. puts every student within ``tolerance`` of its target (where the grid cannot, as few
       students as possible, as near as possible);
    3. keeps aspects inside ``aspect_range`` (default 8..256, which rules out extremes such as
       16 layers of width 128, aspect 8 being the edge, or 1 layer of width 512, aspect 512)
       wherever the first two allow;
    4. keeps every student fast: its predicted training time per token
       (:func:`minidml.throughput.flop_seconds_per_token`, from the step efficiency measured
       by width and depth) at most ``speed_slack`` (default 1.25) times that of the fastest
       shape within tolerance of its target, wherever the first three allow (graded beyond:
       the slower, the dearer); ``speed_slack=None`` leaves speed out;
    5. spreads the roles apart: it maximises Σ log(aspect) over shallow-wide students minus
       Σ log(aspect) over deep-narrow ones, so each deep-narrow student is as deep and narrow,
       and each shallow-wide one as shallow and wide, as its target allows (ties go to the
       earlier student, then to the earlier MLP ratio in ``mlp_ratios``, then the smaller error).

    So neighbours alternate, ``aspect[0] < aspect[1] > aspect[2] < aspect[3] …``, whenever the
    targets and the speed rule leave room; at the smallest targets, where the embedding leaves
    only a few shapes, and where only a shallow-wide shape is fast enough, the result can be an
    exception, and its :attr:`Candidate.aspect` says so. A
    student that cannot be within tolerance gets the nearest free shape and its
    :attr:`Candidate.error` says by how much; ``strict=True`` raises instead.

    Deterministic: no randomness, and every tie is broken by a fixed rule. Raises
    :class:`MinidmlError`, naming ``--budget``, when a target lies beyond the smallest or largest
    shape of the grid by more than ``tolerance``.
    """
    wanted = list(targets)
    if not wanted:
        raise MinidmlError("search: need at least one target")
    for t in wanted:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise MinidmlError(f"search target {t!r}: must be a positive whole number")
    if not (isinstance(tolerance, int | float) and 0 <= tolerance < 1):
        raise MinidmlError(f"search tolerance {tolerance!r}: must be in [0, 1)")
    if aspect_range is not None:
        lo_aspect, hi_aspect = aspect_range
        if not 0 <= lo_aspect <= hi_aspect or hi_aspect <= 0:
            raise MinidmlError(f"search aspect_range {aspect_range!r}: need 0 <= low <= high")
    if speed_slack is not None and not (isinstance(speed_slack, int | float)
                                        and 1 <= speed_slack < math.inf):
        raise MinidmlError(f"search speed_slack {speed_slack!r}: need a number >= 1 or None")
    grid = _grid_for(vocab_size, layers, widths, head_dims, mlp_ratios)
    smallest, largest = grid.counts[0], grid.counts[-1]
    for i, t in enumerate(wanted):
        if t * (1 + tolerance) < smallest:
            s = grid.shapes[0]
            raise MinidmlError(
                f"{option} too small: student {i} would get {t:,} parameters but the smallest "
                f"student with vocabulary {vocab_size} ({s.n_layers} "
                f"layer{'s' * (s.n_layers > 1)}, width {s.d_model}) has {smallest:,}; "
                "give each student at least "
                f"{format_count(round_up(smallest, 3))}"
                + (" with a larger --budget" if option == "--budget" else ""))
        if t * (1 - tolerance) > largest:
            s = grid.shapes[-1]
            raise MinidmlError(
                f"{option} too large: student {i} would get {t:,} parameters but the largest "
                f"student in the grid ({s.n_layers} layers, width {s.d_model}) has {largest:,}; "
                f"give each student at most {format_count(largest)}")

    k = len(wanted)
    options = [_options(grid, t, i, k, tolerance, aspect_range, speed_slack)
               for i, t in enumerate(wanted)]
    columns = sorted({pair for opts in options for pair in opts})
    if len(columns) < k:
        raise MinidmlError(f"search: {k} students but only {len(columns)} distinct (layers, "
                           "width) shapes in the grid; allow more layers or widths")
    worst = max(cost for opts in options for cost, _ in opts.values())
    missing = (worst + 1) * (k + 1)  # dearer than any assignment that uses listed options only
    matrix = [[opts[pair][0] if pair in opts else missing for pair in columns]
              for opts in options]
    chosen: list[Candidate] = []
    for i, col in enumerate(assign(matrix)):
        j = options[i][columns[col]][1]
        cand = Candidate(grid.shapes[j], grid.counts[j], wanted[i], _role(i))
        if strict and abs(cand.n_params - cand.target) > tolerance * cand.target:
            raise MinidmlError(
                f"search: no shape within {tolerance:.1%} of student {i}'s target "
                f"{cand.target:,} (nearest free: {cand.n_params:,}); widen the grid, raise the "
                "tolerance or change --budget")
        chosen.append(cand)
    return chosen


def _role(i: int) -> str:
    return DEEP_NARROW if i % 2 == 0 else SHALLOW_WIDE


_LOG_SPAN = 12.0  # |log aspect| < 12 for any grid we allow (aspect in [1/1024, 65536])
_BASE = 10**12  # one "digit" of the lexicographic cost: each level, summed over students, is less


def _cost(grid: _Grid, j: int, target: int, i: int, k: int, tolerance: float,
          aspect_range: tuple[float, float] | None, time_limit: float | None) -> int:
    """Cost of giving grid shape ``j`` to student ``i`` of ``k``: one integer that orders,
    most important first (each level a "digit" in base ``_BASE``, so sums over students compare
    level by level):

    1. outside the tolerance: 0 or 1;
    2. if outside, the relative error in per mille;
    3. outside ``aspect_range``: by how much, in thousandths of a log unit;
    4. predicted time per token beyond ``time_limit``: by how much, in thousandths of a log
       unit;
    5. the role: ``+log aspect`` for deep-narrow, ``-log aspect`` for shallow-wide (in 10⁻⁶,
       shifted to be positive);
    6. the same weighted by ``k - i`` (in 10⁻³), so ties go to the earlier student;
    7. the MLP ratio's position in ``mlp_ratios``;
    8. the relative error (in 10⁻⁶).
    """
    s = grid.shapes[j]
    err = abs(grid.counts[j] - target) / target
    miss = err > tolerance
    per_mille = min(math.ceil(err * 1000), 10**6) if miss else 0
    log_a = math.log(aspect(s))
    outside = 0.0
    if aspect_range is not None:
        lo, hi = aspect_range
        outside = max(0.0, math.log(lo) - log_a if lo > 0 else 0.0, log_a - math.log(hi))
    slow = 0.0 if time_limit is None else max(0.0, math.log(grid.times[j] / time_limit))
    sign = -1.0 if i % 2 == 0 else 1.0  # deep-narrow wants small aspect: cost +log a
    role = _LOG_SPAN - sign * log_a  # in (0, 2·_LOG_SPAN)
    levels = (int(miss), per_mille, round(outside * 1000), math.ceil(slow * 1000 - 1e-9),
              round(role * 10**6),
              (k - i) * round(role * 1000), grid.ratio_rank[s.mlp_ratio],
              round(min(err, 1.0) * 10**6))
    cost = 0
    for level in levels:
        cost = cost * _BASE + level
    return cost


def _options(grid: _Grid, target: int, i: int, k: int, tolerance: float,
             aspect_range: tuple[float, float] | None, speed_slack: float | None
             ) -> dict[tuple[int, int], tuple[int, int]]:
    """Student ``i``'s ``k`` cheapest (layers, width) pairs: pair -> (cost, grid index).

    An optimal assignment of ``k`` students to distinct pairs never needs a pair outside a
    student's ``k`` cheapest (one of those is always free to swap to), so these suffice. The
    shapes within tolerance come first; if they give fewer than ``k`` pairs, the nearest shapes
    outside it are added, walking outward from the target. The speed limit is
    ``speed_slack`` times the time per token of the fastest shape within tolerance and the
    aspect range (within tolerance alone if none is in the range; no limit when no shape is
    within tolerance).
    """
    best: dict[tuple[int, int], tuple[int, int]] = {}
    counts = grid.counts
    lo = bisect.bisect_left(counts, math.floor(target * (1 - tolerance)) - 1)
    hi = bisect.bisect_right(counts, math.ceil(target * (1 + tolerance)) + 1)
    near = [j for j in range(lo, hi) if abs(counts[j] - target) <= tolerance * target]
    if aspect_range is not None:  # the fastest that the aspect range allows, if any
        near = [j for j in near if aspect_range[0] <= aspect(grid.shapes[j]) <= aspect_range[1]
                ] or near
    limit = speed_slack * min(grid.times[j] for j in near) if speed_slack and near else None

    def consider(j: int) -> None:
        s = grid.shapes[j]
        pair = (s.n_layers, s.d_model)
        cost = _cost(grid, j, target, i, k, tolerance, aspect_range, limit)
        if pair not in best or cost < best[pair][0]:
            best[pair] = (cost, j)

    for j in range(lo, hi):
        consider(j)
    below, above = lo - 1, hi
    last_gap = None
    while below >= 0 or above < len(counts):  # outward, nearest first
        gap_below = target - counts[below] if below >= 0 else None
        gap_above = counts[above] - target if above < len(counts) else None
        if gap_above is None or (gap_below is not None and gap_below <= gap_above):
            # gap_below is set: with nothing left above, the loop's condition leaves below
            j, gap, below = below, cast(int, gap_below), below - 1
        else:
            j, gap, above = above, gap_above, above + 1
        if len(best) >= k and math.ceil(gap / target * 1000) > math.ceil(
                (last_gap or 0) / target * 1000):
            break
        consider(j)
        last_gap = gap
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]))
    return dict(ranked[:k])


# ----------------------------------------------------------------------------- budget
class _GridKw(TypedDict):
    """The grid's keyword arguments of :func:`min_budget` and :func:`search`, as tuples."""

    layers: tuple[int, ...]
    widths: tuple[int, ...]
    head_dims: tuple[int, ...]
    mlp_ratios: tuple[float, ...]


def min_budget(k: int, vocab_size: int, scheme: str = "harmonic", *,
               tolerance: float = DEFAULT_TOLERANCE, layers: Iterable[int] = DEFAULT_LAYERS,
               widths: Iterable[int] = DEFAULT_WIDTHS,
               head_dims: Sequence[int] = DEFAULT_HEAD_DIMS,
               mlp_ratios: Sequence[float] = DEFAULT_MLP_RATIOS) -> int:
    """The smallest budget whose every target is at least the smallest shape of the grid,
    rounded up to two significant digits (so it reads well in a message: ``5.6M``)."""
    grid = _grid_for(vocab_size, layers, widths, head_dims, mlp_ratios)
    return round_up(math.ceil(grid.counts[0] / min(_fractions(k, scheme))))


def plan(budget: int, k: int, vocab_size: int, *, scheme: str = "harmonic",
         tolerance: float = DEFAULT_TOLERANCE, layers: Iterable[int] = DEFAULT_LAYERS,
         widths: Iterable[int] = DEFAULT_WIDTHS, head_dims: Sequence[int] = DEFAULT_HEAD_DIMS,
         mlp_ratios: Sequence[float] = DEFAULT_MLP_RATIOS,
         aspect_range: tuple[float, float] | None = DEFAULT_ASPECT_RANGE,
         speed_slack: float | None = DEFAULT_SPEED_SLACK,
         strict: bool = False) -> list[Candidate]:
    """:func:`search` over :func:`targets` ``(budget, k, scheme)``; what ``--budget`` does.

    A budget too small for the smallest shape raises :class:`MinidmlError` naming ``--budget``
    and the minimum budget (:func:`min_budget`) for this K, scheme and vocabulary.
    """
    goals = targets(budget, k, scheme)
    grid_kw = _GridKw(layers=tuple(layers), widths=tuple(widths), head_dims=tuple(head_dims),
                      mlp_ratios=tuple(mlp_ratios))  # iterators would be used up by the first look
    smallest = _grid_for(vocab_size, **grid_kw).counts[0]
    if min(goals) * (1 + tolerance) < smallest:
        need = min_budget(k, vocab_size, scheme, tolerance=tolerance, **grid_kw)
        raise MinidmlError(
            f"--budget {format_count(budget)}: too small for {k} student{'s' * (k > 1)} "
            f"({scheme} shares) with vocabulary {vocab_size}: the smallest student would get "
            f"{min(goals):,} parameters but the smallest shape has {smallest:,}; use "
            f"--budget {format_count(need)} or more")
    return search(goals, vocab_size, tolerance=tolerance, aspect_range=aspect_range,
                  speed_slack=speed_slack, strict=strict, **grid_kw)


# ----------------------------------------------------------------------------- output
def format_table(cands: Sequence[Candidate], tokens_per_s: Sequence[float] | None = None
                 ) -> str:
    """A plain-text table: student, layers, width, heads, mlp, params, target, error, kind,
    and, given ``tokens_per_s`` (one per student, e.g. from
    :func:`minidml.throughput.tokens_per_second`), the predicted training tokens/s."""
    header: tuple[str, ...] = ("student", "layers", "width", "heads", "mlp", "params", "target",
                               "error")
    header += ("tok/s",) * (tokens_per_s is not None) + ("kind",)
    rows = [header] + [
        (str(i), str(c.shape.n_layers), str(c.shape.d_model), str(c.shape.n_heads),
         f"{c.shape.mlp_ratio:.2f}", f"{c.n_params:,}", f"{c.target:,}", f"{c.error:+.2%}",
         *((f"{tokens_per_s[i]:,.0f}",) if tokens_per_s is not None else ()), c.role)
        for i, c in enumerate(cands)]
    widths = [max(len(r[col]) for r in rows) for col in range(len(header))]
    left = {len(header) - 1}  # the kind column reads better left-aligned
    lines = ["  ".join(cell.ljust(w) if col in left else cell.rjust(w)
                       for col, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- assignment
# Minimum-cost assignment of rows to distinct columns: the Hungarian algorithm (Kuhn and
# Munkres, in the O(n²m) form with potentials), exact on integer costs; the search gives each
# target its own shape at the least total cost with it.
def assign(cost: list[list[int]]) -> list[int]:
    """Minimum-cost assignment of rows to distinct columns (Hungarian algorithm, rows <= columns);
    returns each row's column. Exact on integers; deterministic."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u: list[float] = [0] * (n + 1)  # float as delta and minv are (they start at inf)
    v: list[float] = [0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: row (1-based) holding column j
    for row in range(1, n + 1):
        owner[0], j0 = row, 0
        minv, done = [inf] * (m + 1), [False] * (m + 1)
        while True:
            done[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not done[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if done[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    result = [0] * n
    for j in range(1, m + 1):
        if owner[j]:
            result[owner[j] - 1] = j - 1
    return result
