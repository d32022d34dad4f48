"""Paired differences between compare's arms: per seed, and per example (bootstrap, McNemar)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from minidml.experiments import paired

SUITES = ["blimp", "ewok"]


def arm(name, seed, val_loss, scores, *, ensemble=None, base_arm=None):
    models = [{"label": "student-0", "champion": True, "val_loss": val_loss,
               "scores": {s: {"score": v, "stderr": 0.01} for s, v in scores.items()}},
              {"label": "student-1", "champion": False, "val_loss": val_loss + 1.0,
               "scores": {s: {"score": 0.5, "stderr": 0.01} for s in scores}}]
    if ensemble is not None:
        models.append({"label": "ensemble", "champion": False, "val_loss": ensemble,
                       "scores": {s: {"score": v, "stderr": 0.01} for s, v in scores.items()}})
    out = {"arm": name, "seed": seed, "dir": f"seed-{seed}/{name}", "models": models}
    if base_arm:
        out["base_arm"] = base_arm
    return out


def synthetic_report(effect_loss=-0.05, effect_score=0.03, seeds=5):
    """single, dml (identical to single, seed by seed) and wml (better by a known amount,
    plus seed noise); a variant of wml identical to it."""
    rng = np.random.default_rng(1)
    arms = []
    for s in range(seeds):
        base_loss, base = 4.0 + rng.normal(0, 0.1), {k: 0.6 + rng.normal(0, 0.02)
                                                     for k in SUITES}
        arms.append(arm("single", s, base_loss, base))
        arms.append(arm("dml", s, base_loss, base, ensemble=base_loss - 0.1))
        noise = rng.normal(0, 0.005)
        better = {k: v + effect_score + rng.normal(0, 0.004) for k, v in base.items()}
        arms.append(arm("wml", s, base_loss + effect_loss + noise, better,
                        ensemble=base_loss - 0.1 + effect_loss))
        arms.append(arm("wml alpha=0.25", s, base_loss + effect_loss + noise, better,
                        ensemble=base_loss - 0.1 + effect_loss, base_arm="wml"))
    return {"suites": SUITES, "arms": arms}


def test_a_known_better_arm_gets_the_right_sign_and_an_interval_that_covers_it():
    rows = {(r["a"], r["b"], r["model"]): r for r in
            paired.seed_differences(synthetic_report())}
    assert ("wml", "kd", "champion") not in rows  # kd did not run
    win = rows[("wml", "single", "champion")]
    assert win["seeds"] == [0, 1, 2, 3, 4] and len(win["val_loss"]["per_seed"]) == 5
    loss = win["val_loss"]
    t = paired.t_critical(4)
    assert loss["mean"] < 0 and loss["significant"]
    assert abs(loss["mean"] - -0.05) <= t * loss["stderr"]
    for suite in SUITES:
        cell = win[suite]
        assert cell["mean"] > 0 and cell["significant"]
        assert abs(cell["mean"] - 0.03) <= t * cell["stderr"]
    ens = rows[("wml", "dml", "ensemble")]  # both have ensembles
    assert ens["val_loss"]["mean"] == pytest.approx(-0.05)
    assert ("wml", "single", "ensemble") not in rows  # single has none


def test_identical_arms_differ_by_zero():
    rows = {(r["a"], r["b"], r["model"]): r for r in
            paired.seed_differences(synthetic_report())}
    same = rows[("dml", "single", "champion")]
    assert same["val_loss"]["mean"] == 0 and same["val_loss"]["stderr"] == 0
    assert not same["val_loss"]["significant"]
    assert all(same[s]["mean"] == 0 for s in SUITES)
    variant = rows[("wml alpha=0.25", "wml", "champion")]
    assert variant["val_loss"]["mean"] == 0 and variant["blimp"]["mean"] == 0


def test_students_of_the_same_shape_are_compared_like_for_like():
    """wml's champion is its small student, kd's its large one: the large students are
    compared too (a known difference); a label whose shape differs, and a student that is
    both arms' champion in every seed, get no row of their own."""
    big, small = {"n_layers": 10, "d_model": 128}, {"n_layers": 2, "d_model": 192}

    def student(label, shape, loss, champion):
        return {"label": label, "shape": shape, "val_loss": loss, "champion": champion,
                "scores": {}}

    arms = []
    for s in range(3):
        base = 4.0 + 0.1 * s
        arms += [
            {"arm": "kd", "seed": s, "models": [student("student-0", big, base, True)]},
            {"arm": "single", "seed": s, "models": [student("student-0", big, base + 0.1, True)]},
            {"arm": "wml", "seed": s, "models": [
                student("student-0", big, base + 0.06 + 0.001 * s, False),
                student("student-1", small, base - 0.01, True),
                student("ensemble", None, base - 0.02, False)]},
            {"arm": "dml", "seed": s, "models": [
                student("student-0", small, base, True),  # another shape under this label
                student("student-1", small, base, False)]}]
    rows = {(r["a"], r["b"], r["model"]): r["val_loss"]
            for r in paired.seed_differences({"suites": [], "arms": arms})}
    assert rows[("wml", "kd", "student-0")]["mean"] == pytest.approx(0.061)
    assert rows[("wml", "kd", "champion")]["mean"] == pytest.approx(-0.01)
    assert rows[("wml", "single", "student-0")]["mean"] == pytest.approx(-0.039)
    assert ("kd", "single", "student-0") not in rows  # both champions: the champion's row
    assert ("wml", "dml", "student-0") not in rows  # not the same shape
    assert rows[("wml", "dml", "student-1")]["mean"] == pytest.approx(-0.01)
    lines = paired.format_tables({"suites": [], "arms": arms,
                                  "paired": paired.seed_differences({"suites": [], "arms": arms})})
    assert any(x.startswith("| wml − kd | student-0 | 3 | +0.061") for x in lines)


def test_one_seed_has_a_difference_but_no_standard_error():
    rows = paired.seed_differences(synthetic_report(seeds=1))
    r = next(r for r in rows if (r["a"], r["b"]) == ("wml", "single"))
    assert r["val_loss"]["stderr"] is None and r["val_loss"]["significant"] is None
    lines = paired.format_tables({**synthetic_report(seeds=1), "paired": rows})
    line = next(x for x in lines if x.startswith("| wml − single | champion | 1 |"))
    assert "±" not in line and f"{r['val_loss']['mean']:+.3f}" in line


def test_a_difference_without_spread_over_seeds_is_not_tested():
    """The same difference in every seed has a standard error of 0: the t-test is undefined
    (no ✓), however large the mean; a small spread is tested as usual."""
    same = paired.summary([0.5, 0.5, 0.5])
    assert same["stderr"] == 0 and same["significant"] is None
    assert paired.summary([0.5, 0.51, 0.49])["significant"] is True
    assert paired.summary([0.5, -0.5, 0.1])["significant"] is False


def test_mcnemar_exact_p_values():
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([False] * 10 + [False] * 5)
    r = paired.mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert paired.mcnemar(a, a)["p_value"] == 1.0
    # 3 against 7 of 10 discordant: 2·P(X ≤ 3), X ~ Bin(10, 1/2)
    x = np.array([True] * 3 + [False] * 7)
    r = paired.mcnemar(x, ~x)
    assert r["p_value"] == pytest.approx(2 * sum(math.comb(10, i) for i in range(4)) / 1024)


def test_the_bootstrap_interval_has_the_analytic_width_and_covers_the_truth():
    rng = np.random.default_rng(0)
    n = 4000
    latent = rng.random(n)
    a, b = latent < 0.70, latent < 0.62  # a is right wherever b is, and on 8% more
    d = a.astype(float) - b.astype(float)
    got = paired.bootstrap_difference([(d, 1.0)], n_boot=4000)
    assert got["difference"] == pytest.approx(d.mean())
    se = d.std(ddof=1) / math.sqrt(n)
    assert (got["high"] - got["low"]) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.1)
    assert got["low"] < 0.08 < got["high"]
    same = paired.bootstrap_difference([(np.zeros(n), 1.0)])
    assert same["difference"] == same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError, match="different lengths"):
        paired.mcnemar(a, b[:-1])


def test_t_critical_values():
    assert paired.t_critical(1) == 12.706 and paired.t_critical(4) == 2.776
    assert paired.t_critical(11) == 2.228  # between keys: the smaller df's, conservative
    assert paired.t_critical(1000) == 1.96
    with pytest.raises(ValueError):
        paired.t_critical(0)


def write_samples(path, tasks, verdicts):
    """A samples file whose student-0 scores pair k of each task right iff verdicts[task][k]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for suite, task in tasks:
            for k, ok in enumerate(verdicts[task]):
                good, bad = (-2.0, -2.0) if ok else (-3.0, -2.0)  # a tie is right
                f.write(json.dumps({"suite": suite, "task": task, "index": k,
                                    "loglikelihoods": {"student-0": [good, bad],
                                                       "ensemble": [-1.0, -3.0]}}) + "\n")


def test_per_example_intervals_from_samples_files(tmp_path):
    report = synthetic_report(seeds=2)
    tasks = [("blimp", "t1"), ("blimp", "t2"), ("ewok", "e1")]
    rng = np.random.default_rng(3)
    for s in range(2):
        latent = {t: rng.random(600) for _, t in tasks}
        for name, p in (("single", 0.60), ("dml", 0.60), ("wml", 0.72),
                        ("wml alpha=0.25", 0.72)):
            write_samples(tmp_path / f"seed-{s}" / name / paired.SAMPLES_FILE, tasks,
                          {t: latent[t] < p for _, t in tasks})
    read = paired.read_correct(tmp_path / "seed-0" / "wml" / paired.SAMPLES_FILE, ["blimp"])
    assert set(read) == {("blimp", "t1"), ("blimp", "t2")}
    assert all(read[("blimp", "t1")]["ensemble"].values())
    assert sorted(read[("blimp", "t1")]["student-0"]) == list(range(600))
    rows = {(r["a"], r["b"], r["suite"]): r for r in
            paired.example_differences(report, tmp_path, n_boot=2000)}
    win = rows[("wml", "single", "blimp")]
    assert win["seeds"] == [0, 1]
    assert 0 < win["bootstrap"]["low"] < 0.12 < win["bootstrap"]["high"]
    assert len(win["mcnemar"]) == 2  # one test per seed
    assert all(m["b_only"] == 0 and m["p_value"] < 1e-10 for m in win["mcnemar"])
    same = rows[("dml", "single", "ewok")]
    assert same["bootstrap"]["difference"] == 0
    assert all(m["p_value"] == 1.0 for m in same["mcnemar"])
    # items are matched by their index, not their position: a file in another order agrees
    path = tmp_path / "seed-1" / "wml" / paired.SAMPLES_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(reversed(lines)))
    again = {(r["a"], r["b"], r["suite"]): r for r in
             paired.example_differences(report, tmp_path, n_boot=2000)}
    assert again[("wml", "single", "blimp")] == win
    # the compact verdicts file stands for the samples: the same verdicts, the same tests
    for run in tmp_path.glob("seed-*/*"):
        samples = paired.read_correct(run / paired.SAMPLES_FILE)
        paired.write_verdicts(run / paired.VERDICTS_FILE, samples)
        assert paired.read_verdicts(run / paired.VERDICTS_FILE) == samples
        assert paired.read_verdicts(run / paired.VERDICTS_FILE, ["ewok"]) == {
            k: v for k, v in samples.items() if k[0] == "ewok"}
        assert (run / paired.VERDICTS_FILE).stat().st_size * 20 < (
            run / paired.SAMPLES_FILE).stat().st_size
        (run / paired.SAMPLES_FILE).unlink()
    compact = {(r["a"], r["b"], r["suite"]): r for r in
               paired.example_differences(report, tmp_path, n_boot=2000)}
    assert compact == again
    # items with gaps between their indices keep them
    gaps = {("blimp", "t"): {"m": {0: True, 1: False, 5: True, 9: False, 10: True}}}
    paired.write_verdicts(tmp_path / "gaps.json", gaps)
    assert paired.read_verdicts(tmp_path / "gaps.json") == gaps
    # items of several choices count as the suites count them; tasks scored otherwise
    # than by accuracy (wug's correlation) are not compared item by item
    run = tmp_path / "choices"
    run.mkdir()
    lines = [{"suite": "entity-tracking", "task": "e", "index": 0,
              "loglikelihoods": {"m": [-1.0, -2.0, -1.0]}},
             {"suite": "entity-tracking", "task": "e", "index": 1,
              "loglikelihoods": {"m": [-2.0, -3.0, -1.5]}},
             {"suite": "wug-adj", "task": "wug_adj", "index": 0,
              "loglikelihoods": {"m": [-1.0, -2.0]}}]
    (run / paired.SAMPLES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert paired.run_verdicts(run) == {("entity-tracking", "e"): {"m": {0: True, 1: False}},
                                        ("wug-adj", "wug_adj"): {"m": {0: True}}}
    (run / "eval.json").write_text(json.dumps({"results": {"m": {
        "entity-tracking/e": {"acc": 0.5, "primary": "acc"},
        "wug-adj/wug_adj": {"rho": 0.1, "primary": "rho"}}}}))
    assert set(paired.run_verdicts(run)) == {("entity-tracking", "e")}
    assert paired.run_verdicts(tmp_path / "nothing") is None
    # an arm evaluated without samples or verdicts is left out
    (tmp_path / "seed-1" / "dml" / paired.VERDICTS_FILE).unlink()
    rows = paired.example_differences(report, tmp_path, n_boot=100)
    assert not any("dml" in (r["a"], r["b"]) for r in rows)
    assert any((r["a"], r["b"]) == ("wml", "single") for r in rows)


def test_verdicts_of_an_evaluation_in_memory_match_its_files(tmp_path):
    """What compare writes from the results in memory is what the files give: the tasks
    scored by accuracy, each item by its index, ties and choices counted as the suites
    count them."""
    from types import SimpleNamespace

    from minidml.evaluation.plugins import SuiteSpec
    from minidml.evaluation.runner import EvalResults, SuiteOutcome
    from minidml.evaluation.suite import Choices, Pair, Sample, SuiteResult, TaskResult

    def outcome(name, task, primary, samples):
        tasks = {lb: {task: TaskResult(task, {primary: 0.5}, len(samples), primary)}
                 for lb in ("student-0", "ensemble")}
        return SuiteOutcome(SuiteSpec(name, object, ""), "ok",
                            SuiteResult(tasks, {name: (task,)}, samples=samples))

    three = Choices(("a", "b", "c"))

    def sample(task, index, item, mine, ensemble):
        return Sample(task, index, item, {"student-0": mine, "ensemble": ensemble})

    results = EvalResults(
        SimpleNamespace(path=tmp_path, step=7, students=[], omega=[]),
        ["student-0", "ensemble"],
        [outcome("entity-tracking", "e", "acc", [
            sample("e", 0, three, (-1.0, -2.0, -1.0), (-3.0, -2.0, -4.0)),
            sample("e", 2, three, (-2.0, -3.0, -1.5), (-1.0, -1.5, -2.0))]),
         outcome("blimp", "t", "acc", [sample("t", 0, Pair("g", "b"), (-1.0, -1.0), (-2.0, -1.0))]),
         outcome("wug-adj", "wug_adj", "rho", [
             sample("wug_adj", 0, Pair("x", "y"), (-1.0, -2.0), (-1.0, -2.0))]),
         SuiteOutcome(SuiteSpec("glue", object, ""), "unavailable")],
        "2026-01-01")
    got = paired.results_verdicts(results)
    assert got == {("entity-tracking", "e"): {"student-0": {0: True, 2: False},
                                              "ensemble": {0: False, 2: True}},
                   ("blimp", "t"): {"student-0": {0: True}, "ensemble": {0: False}}}
    results.write(tmp_path / "eval.json")
    results.write_samples(tmp_path / paired.SAMPLES_FILE)
    assert paired.run_verdicts(tmp_path) == got
