"""Student architecture search: targets, tolerance, diversity, limits and exactness."""

from __future__ import annotations

import functools
import json

import pytest

from minidml import search as S
from minidml.errors import MinidmlError
from minidml.model import Student, StudentConfig
from minidml.throughput import flop_seconds_per_token

M = 1_000_000
TYPICAL = [(v, b, k) for v in (16384, 8192) for b in (5 * M, 20 * M, 100 * M) for k in range(2, 9)]


def _plan_or_none(vocab: int, budget: int, k: int, scheme: str = "harmonic"):
    """The plan, or None where the budget is below the minimum (checked to raise properly)."""
    if budget < S.min_budget(k, vocab, scheme):
        with pytest.raises(MinidmlError, match="--budget"):
            S.plan(budget, k, vocab, scheme=scheme)
        return None
    return S.plan(budget, k, vocab, scheme=scheme)


@functools.lru_cache(maxsize=4)
def _independent_grid(vocab: int) -> dict[tuple[int, int], int]:
    """(layers, width) -> parameters for the default grid, counted here without search.py."""
    return {(n, w): StudentConfig(vocab_size=vocab, n_layers=n, d_model=w,
                                  n_heads=w // 32).n_params
            for n in range(1, 33) for w in [64, 96, *range(128, 2049, 64)]}


def _all_within_possible(targets: list[int], vocab: int, tol: float = 0.02) -> bool:
    """Whether distinct grid shapes within ``tol`` of every target exist (Kuhn's matching)."""
    grid = _independent_grid(vocab)
    options = [[pair for pair, n in grid.items() if abs(n - t) <= tol * t] for t in targets]
    owner: dict[tuple[int, int], int] = {}

    def augment(i: int, seen: set) -> bool:
        for pair in options[i]:
            if pair not in seen:
                seen.add(pair)
                if pair not in owner or augment(owner[pair], seen):
                    owner[pair] = i
                    return True
        return False

    return all(augment(i, set()) for i in range(len(targets)))


def _zigzag(aspects: list[float]) -> bool:
    return all(aspects[i] < aspects[i + 1] if i % 2 == 0 else aspects[i] > aspects[i + 1]
               for i in range(len(aspects) - 1))


# ----------------------------------------------------------------------------- targets
def test_targets_harmonic_and_equal():
    assert S.targets(20 * M, 4) == [10 * M, 6_666_667, 5 * M, 4 * M]
    assert S.targets(20 * M, 4, "harmonic") == [round(20 * M / (i + 2)) for i in range(4)]
    assert S.targets(20 * M, 4, "equal") == [5 * M] * 4
    assert S.targets(20 * M, 1) == [10 * M]
    assert S.targets(21 * M, 3, "equal") == [7 * M] * 3


@pytest.mark.parametrize("args", [(20 * M, 0), (0, 4), (20 * M, 4, "zipf"), (2.5, 2)])
def test_targets_rejects_bad_input(args):
    with pytest.raises(MinidmlError):
        S.targets(*args)


# ----------------------------------------------------------------------------- search
@pytest.mark.parametrize("vocab, budget, k", TYPICAL)
def test_typical_budgets_hit_targets_with_distinct_shapes(vocab, budget, k):
    cands = _plan_or_none(vocab, budget, k)
    if cands is None:
        return
    goals = S.targets(budget, k)
    assert [c.target for c in cands] == goals
    pairs = [(c.shape.n_layers, c.shape.d_model) for c in cands]
    assert len(set(pairs)) == k, pairs
    possible = _all_within_possible(goals, vocab)
    if budget >= 20 * M:
        assert possible  # so the check below is not vacuous where it matters
    within = [abs(c.error) <= 0.02 for c in cands]
    assert all(within) == possible, [f"{c.error:+.2%}" for c in cands]
    for c in cands:
        assert c.n_params == StudentConfig.from_shape(c.shape, vocab, 256).n_params
        assert c.error == (c.n_params - c.target) / c.target
        assert 1 <= c.shape.n_layers <= 32 and 64 <= c.shape.d_model <= 2048
        assert c.shape.d_model % 32 == 0 and c.shape.mlp_ratio == 8 / 3
        assert c.shape.d_model % c.shape.n_heads == 0
        assert c.shape.d_model // c.shape.n_heads in (32, 64)


def test_almost_every_typical_case_is_within_tolerance():
    """The grid is dense enough: out of the typical cases that fit, at most a couple at the
    small-budget edge (8192 × 5M, K = 6 or 7) cannot put every student within 2%."""
    misses = []
    for vocab, budget, k in TYPICAL:
        if budget >= S.min_budget(k, vocab) and max(
                abs(c.error) for c in S.plan(budget, k, vocab)) > 0.02:
            misses.append((vocab, budget, k))
    assert set(misses) <= {(8192, 5 * M, 6), (8192, 5 * M, 7)}, misses


@pytest.mark.parametrize("scheme", ["harmonic", "equal"])
def test_shapes_alternate_deep_narrow_and_shallow_wide(scheme):
    """Without the speed rule, where the budget is not at its minimum edge (>= 2 ×
    min_budget), aspects zigzag: aspect[0] < aspect[1] > aspect[2] < ..., and roles alternate
    by index. (Harmonic targets of five or more students lie too close together for the
    grid's widths, multiples of 64 above 128, to keep the alternation everywhere.)"""
    checked = 0
    for vocab, budget, k in TYPICAL:
        if budget < 2 * S.min_budget(k, vocab, scheme) or (scheme == "harmonic" and k > 4):
            continue
        cands = S.plan(budget, k, vocab, scheme=scheme, speed_slack=None)
        aspects = [c.aspect for c in cands]
        assert aspects == [c.shape.d_model / c.shape.n_layers for c in cands]
        assert _zigzag(aspects), (vocab, budget, k, [f"{a:.1f}" for a in aspects])
        assert [c.role for c in cands] == [S.DEEP_NARROW, S.SHALLOW_WIDE] * (k // 2) + (
            [S.DEEP_NARROW] if k % 2 else [])
        checked += 1
    assert checked >= 12


def test_roles_are_extremes_and_spread():
    """20M, K = 4, vocab 16384, without the speed rule: the deep-narrow students are the
    deepest within 2% of their targets (with aspect >= 8) and the shallow-wide ones the
    shallowest-widest (aspect <= 256)."""
    cands = S.plan(20 * M, 4, 16384, speed_slack=None)
    grid = _independent_grid(16384)
    for c in cands:
        pool = [w / n for (n, w), p in grid.items()
                if abs(p - c.target) <= 0.02 * c.target and 8 <= w / n <= 256]
        best = min(pool) if c.role == S.DEEP_NARROW else max(pool)
        assert c.aspect == best
    deep = [c.aspect for c in cands if c.role == S.DEEP_NARROW]
    wide = [c.aspect for c in cands if c.role == S.SHALLOW_WIDE]
    assert max(deep) * 2 < min(wide)


def test_aspect_range_is_respected_where_possible():
    cands = S.plan(100 * M, 4, 16384, aspect_range=(16, 128), speed_slack=None)
    assert all(16 <= c.aspect <= 128 for c in cands)
    assert all(abs(c.error) <= 0.02 for c in cands)
    free = S.plan(100 * M, 4, 16384, aspect_range=None, speed_slack=None)
    assert min(c.aspect for c in free) <= min(c.aspect for c in cands)
    assert max(c.aspect for c in free) > 128


def test_deterministic():
    first = S.plan(20 * M, 8, 16384)
    assert S.plan(20 * M, 8, 16384) == first
    S._grid.cache_clear()
    assert S.plan(20 * M, 8, 16384) == first
    reordered = S.plan(20 * M, 8, 16384, layers=reversed(range(1, 33)),
                       widths=sorted(S.DEFAULT_WIDTHS, reverse=True), head_dims=(64, 32))
    assert reordered == first


def test_no_model_is_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("search must not build a model")

    monkeypatch.setattr(Student, "__init__", refuse)
    S._grid.cache_clear()
    assert len(S.plan(20 * M, 4, 16384)) == 4


@pytest.mark.parametrize("vocab, budget, k", [(8192, 5 * M, 3), (16384, 20 * M, 4),
                                              (16384, 5 * M, 2)])
def test_n_params_matches_a_built_student(vocab, budget, k):
    for c in S.plan(budget, k, vocab):
        model = Student(StudentConfig.from_shape(c.shape, vocab, context=8))
        assert c.n_params == sum(p.numel() for p in model.parameters())


def test_budget_too_small_names_budget_and_a_minimum():
    with pytest.raises(MinidmlError) as info:
        S.plan(4 * M, 4, 16384)
    msg = str(info.value)
    assert msg.startswith("--budget 4M") and "\n" not in msg
    assert "--budget 5.6M or more" in msg
    assert S.min_budget(4, 16384) == 5_600_000
    assert len(S.plan(S.min_budget(4, 16384), 4, 16384)) == 4
    for k in (1, 3, 8):
        for scheme in S.SCHEMES:
            assert len(S.plan(S.min_budget(k, 8192, scheme), k, 8192, scheme=scheme)) == k
    with pytest.raises(MinidmlError, match=r"--budget.*1\.11M") as info:
        S.search([500_000], 16384)
    assert "\n" not in str(info.value)


def test_budget_too_large_raises():
    with pytest.raises(MinidmlError, match="--budget too large"):
        S.search([5_000_000_000], 16384)
    with pytest.raises(MinidmlError, match="--budget too large"):
        S.plan(100 * M, 2, 16384, layers=range(1, 5), widths=range(64, 257, 32))


def test_explicit_targets_out_of_the_grid_name_targets(capsys):
    """`minidml search --targets`: an error about a target's size names --targets, and asks
    for what that option can give."""
    from _helpers import assert_one_line_error, run_cli

    code, _, err = run_cli("search", "--targets", "1000,2M", capsys=capsys)
    assert_one_line_error(code, err, "--targets too small", "give each student at least")
    assert "--budget" not in err
    code, _, err = run_cli("search", "--targets", "900G", capsys=capsys)
    assert_one_line_error(code, err, "--targets too large", "give each student at most")
    assert "--budget" not in err


def test_explicit_targets():
    goals = [12 * M, 3 * M, 7 * M]
    cands = S.search(goals, 16384)
    assert [c.target for c in cands] == goals
    assert all(abs(c.error) <= 0.02 for c in cands)
    assert len({(c.shape.n_layers, c.shape.d_model) for c in cands}) == 3
    assert [c.role for c in cands] == [S.DEEP_NARROW, S.SHALLOW_WIDE, S.DEEP_NARROW]


def test_unreachable_tolerance_reports_error_or_raises_when_strict():
    goals = [1_200_000] * 8  # vocab 16384: only a handful of shapes are this small
    cands = S.search(goals, 16384)
    assert len({(c.shape.n_layers, c.shape.d_model) for c in cands}) == 8
    assert any(abs(c.error) > 0.02 for c in cands)
    assert sum(abs(c.error) <= 0.02 for c in cands) >= 1
    with pytest.raises(MinidmlError, match="no shape within 2.0%"):
        S.search(goals, 16384, strict=True)


def test_custom_grid_limits_and_heads():
    cands = S.plan(20 * M, 4, 8192, layers=range(2, 13), widths=range(128, 1025, 64),
                   head_dims=(16, 32, 64, 128), mlp_ratios=(2.0, 8 / 3, 3.0, 4.0))
    for c in cands:
        assert 2 <= c.shape.n_layers <= 12 and c.shape.d_model % 64 == 0
        assert c.shape.n_heads == S.heads_for(c.shape.d_model, (16, 32, 64, 128)) >= 2
        assert c.shape.d_model // c.shape.n_heads in (64, 128)
        assert c.shape.mlp_ratio in (2.0, 8 / 3, 3.0, 4.0)
        assert abs(c.error) <= 0.02


def test_heads_for():
    assert S.heads_for(64) == 2  # head size 32: two heads rather than one of 64
    assert S.heads_for(96) == 3
    assert S.heads_for(128) == 2
    assert S.heads_for(288) == 9
    assert S.heads_for(2048) == 32
    assert S.heads_for(80) is None
    assert S.heads_for(64, (64,)) == 1


@pytest.mark.parametrize("kwargs", [dict(head_dims=(33,)), dict(layers=[]), dict(layers=[0]),
                                    dict(mlp_ratios=(0.0,)), dict(tolerance=1.5),
                                    dict(aspect_range=(10, 5)), dict(widths=[80, 112]),
                                    dict(mlp_ratios=("x",)), dict(layers=[True])])
def test_bad_grid_arguments_raise(kwargs):
    with pytest.raises(MinidmlError):
        S.search([5 * M], 16384, **kwargs)


def test_candidate_to_dict_round_trips_the_shape():
    c = S.plan(20 * M, 2, 16384)[1]
    d = c.to_dict()
    assert S.Shape(d["n_layers"], d["d_model"], d["n_heads"], d["mlp_ratio"]) == c.shape
    assert (d["n_params"], d["target"], d["error"], d["role"]) == (
        c.n_params, c.target, c.error, S.SHALLOW_WIDE)


def test_format_table():
    cands = S.plan(20 * M, 4, 16384)
    lines = S.format_table(cands).splitlines()
    assert lines[0].split() == ["student", "layers", "width", "heads", "mlp", "params",
                                "target", "error", "kind"]
    assert len(lines) == 2 + len(cands)
    for i, (line, c) in enumerate(zip(lines[2:], cands, strict=True)):
        cells = line.split()
        assert cells[:4] == [str(i), str(c.shape.n_layers), str(c.shape.d_model),
                             str(c.shape.n_heads)]
        assert cells[5:9] == [f"{c.n_params:,}", f"{c.target:,}", f"{c.error:+.2%}", c.role]


# ----------------------------------------------------------------------------- speed
def _time(c: S.Candidate, vocab: int) -> float:
    return flop_seconds_per_token(StudentConfig.from_shape(c.shape, vocab, 128))


def test_every_student_is_within_the_speed_slack_of_its_fastest_shape():
    """Wherever a shape within 2% and the aspect range exists, each student's predicted time
    per token is at most 1.25 × the fastest such shape's, with distinct (layers, width)."""
    checked = 0
    for vocab, budget, k in TYPICAL:
        if budget < S.min_budget(k, vocab):
            continue
        cands = S.plan(budget, k, vocab)
        assert len({(c.shape.n_layers, c.shape.d_model) for c in cands}) == k
        grid = _independent_grid(vocab)
        for c in cands:
            fastest = [flop_seconds_per_token(StudentConfig(
                vocab_size=vocab, n_layers=n, d_model=w, n_heads=w // 32, context=128))
                for (n, w), p in grid.items() if abs(p - c.target) <= 0.02 * c.target
                and 8 <= w / n <= 256]
            if fastest and abs(c.error) <= 0.02:
                assert _time(c, vocab) <= 1.25 * min(fastest) * (1 + 1e-9), (vocab, budget, k, c)
                checked += 1
    assert checked >= 100


def test_the_speed_rule_makes_the_compare_students_faster_and_keeps_them_diverse():
    """compare's 4 students at 4M and vocabulary 8192: the searched set trains faster (by the
    model) than the set without the speed rule, every width is a multiple of 64 or 96, and
    each head is 32 or 64 wide."""
    fast = S.plan(4 * M, 4, 8192)
    free = S.plan(4 * M, 4, 8192, speed_slack=None)
    assert sum(_time(c, 8192) for c in fast) < 0.95 * sum(_time(c, 8192) for c in free)
    assert len({(c.shape.n_layers, c.shape.d_model) for c in fast}) == 4
    assert all(abs(c.error) <= 0.02 for c in fast)
    for c in fast:
        assert c.shape.d_model % 64 == 0 or c.shape.d_model == 96
        assert c.shape.d_model // c.shape.n_heads in (32, 64)


def test_a_bad_speed_slack_is_refused():
    for bad in (0.5, float("inf"), "fast"):
        with pytest.raises(MinidmlError, match="speed_slack"):
            S.plan(20 * M, 4, 16384, speed_slack=bad)


def test_the_search_command_predicts_tokens_per_second(capsys):
    from minidml.cli.commands import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(["search", "--budget", "4M", "--vocab-size", "8192", *args])
            raise SystemExit(0)
        out = capsys.readouterr()
        return exc.value.code or 0, out.out, out.err

    code, out, _ = run()
    lines = out.splitlines()
    assert code == 0 and "tok/s" in lines[0].split()
    assert len(lines) == 2 + 4 + 1 and lines[-1].startswith("tok/s: predicted for cpu")
    code, out, _ = run("--json", "--context", "64")
    rows = json.loads(out)
    assert [r["n_layers"] for r in rows] == [c.shape.n_layers for c in S.plan(4 * M, 4, 8192)]
    rates = [r["predicted_tokens_per_s"] for r in rows]
    assert all(r > 0 for r in rates)
    cfgs = [StudentConfig(vocab_size=8192, n_layers=r["n_layers"], d_model=r["d_model"],
                          n_heads=r["n_heads"]) for r in rows]
    # the same peak for all: rates are inversely proportional to the predicted times
    ratio = [rate * flop_seconds_per_token(c, 64) for rate, c in zip(rates, cfgs, strict=True)]
    assert max(ratio) == pytest.approx(min(ratio))
    for bad in ("bogus", "3"):
        code, _, err = run("--device", bad)
        assert code == 1 and err.strip().splitlines() == [
            f"error: --device {bad}: not a device; use auto, cpu, cuda, cuda:N or mps"]
