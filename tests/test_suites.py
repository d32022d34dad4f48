"""The built-in suites on real data, and the agreement suite on a model that learned."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest
import torch

from minidml import Student
from minidml.errors import MinidmlError
from minidml.evaluation.plugins import make_manager, suites
from minidml.evaluation.runner import evaluate, labels_for
from minidml.evaluation.suite import group_score
from minidml.rundir import Run


@pytest.fixture(scope="module")
def builtin():
    return suites(make_manager(entry_points=False))


def mean(outcome, label, group=None):
    res = outcome.result
    return group_score(res.tasks[label], res.groups[group or outcome.spec.name])["score"]


@pytest.mark.slow
def test_the_demo_run_learns_agreement_and_an_untrained_one_is_at_chance(tmp_path, builtin):
    """The demo exactly as `make demo` trains it; its students and ensemble must get the
    grammar's agreement right, while the same students untrained are near chance."""
    from minidml.demo.run import run_demo

    threads = torch.get_num_threads()
    # a real training run: two threads, unless other test workers share the cores
    torch.set_num_threads(2 if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") == "1" else 1)
    try:
        run = run_demo(tmp_path / "demo")
    finally:
        torch.set_num_threads(threads)
    trained = evaluate(run, ["agreement"], available=builtin).outcomes[0]
    assert trained.status == "ok"
    for label in ("student-0", "student-1", "ensemble"):
        assert mean(trained, label) >= 0.90, (label, mean(trained, label))
    torch.manual_seed(0)
    fresh = [Student(s.config) for s in run.students]
    untrained = Run(run.path, run.config, run.tokenizer, fresh, run.omega, 0)
    chance = evaluate(untrained, ["agreement"], available=builtin).outcomes[0]
    for label in ("student-0", "student-1", "ensemble"):
        assert 0.40 <= mean(chance, label) <= 0.60, (label, mean(chance, label))


@pytest.mark.parametrize("suite, folder, n_tasks, total", [
    ("blimp", "babylm-eval/blimp_filtered", 67, 59_875),
    ("blimp-full", "blimp", 67, 67_000),
])
def test_blimp_reads_every_paradigm_and_groups_fields_and_phenomena(
        tiny_run, data_dir, builtin, suite, folder, n_tasks, total):
    from minidml_plugins.blimp import paradigm_pairs

    out = evaluate(tiny_run, [suite], data_dir=data_dir, limit=4, available=builtin).outcomes[0]
    assert out.status == "ok", out.error
    res = out.result
    assert len(res.tasks["ensemble"]) == n_tasks
    assert all(t.n == 4 for t in res.tasks["student-0"].values())
    groups = res.groups
    assert len(groups[suite]) == n_tasks
    fields = {g for g in groups if g.startswith("field=")}
    assert {"field=syntax", "field=morphology", "field=semantics"} <= fields
    assert len([g for g in groups if g.startswith("phenomenon=")]) == 13
    assert sum(len(groups[g]) for g in fields) == n_tasks  # every paradigm in one field
    assert out.data_sha256 and len(out.data_sha256) == 64

    class Ctx:  # reading alone: every pair of the folder is there
        suite = "blimp"

        def path(self, rel):
            return data_dir / rel

    tasks, _ = paradigm_pairs(Ctx(), folder)
    assert sum(len(p) for p in tasks.values()) == total


def test_supplement_scores_dialogues_whole(tiny_run, data_dir, builtin):
    out = evaluate(tiny_run, ["blimp-supplement"], data_dir=data_dir, limit=6,
                   available=builtin).outcomes[0]
    assert out.status == "ok", out.error
    assert set(out.result.tasks["student-1"]) == {
        "hypernym", "qa_congruence_easy", "qa_congruence_tricky", "subject_aux_inversion",
        "turn_taking"}
    from minidml.evaluation.scoring import Scorer

    s = Scorer(tiny_run.students, tiny_run.tokenizer)
    two_lines = s.score(["David: Should you quit?\nSarah: No, I shouldn't."])
    first_line = s.score(["David: Should you quit?"])
    assert float(two_lines["student-0"]) < float(first_line["student-0"])  # more is scored


def test_ewok_scores_targets_after_their_context(tiny_run, data_dir, builtin):
    out = evaluate(tiny_run, ["ewok"], data_dir=data_dir, limit=5,
                   available=builtin).outcomes[0]
    assert out.status == "ok", out.error
    assert len(out.result.tasks["ensemble"]) == 11
    assert all(t.n == 5 for t in out.result.tasks["ensemble"].values())


def test_malformed_suite_data_fails_that_suite_with_file_and_line(tiny_run, data_dir,
                                                                   tmp_path, builtin):
    root = tmp_path / "data"
    src = data_dir / "babylm-eval" / "supplement_filtered"
    dest = root / "babylm-eval" / "supplement_filtered"
    shutil.copytree(src, dest)
    with (dest / "hypernym.jsonl").open("a") as f:
        f.write('{"sentence_good": "broken\n')
    res = evaluate(tiny_run, ["blimp-supplement", "agreement"], data_dir=root, limit=3,
                   available=builtin)
    bad, good = res.outcomes
    assert bad.status == "failed" and "hypernym.jsonl:843: not valid JSON" in bad.error
    assert good.status == "ok" and not res.ok


def test_glue_through_the_command_line_on_one_capped_task(tiny_run, data_dir, tmp_path):
    from minidml.cli.commands import main

    out = tmp_path / "glue.json"
    main(["eval", str(tiny_run.path), "--suite", "glue", "--glue-tasks", "rte",
          "--max-train-examples", "32", "--epochs", "1", "--limit", "16", "--data-dir",
          str(data_dir), "--output", str(out), "-q"])
    results = json.loads(out.read_text())
    assert results["suites"]["glue"]["status"] == "ok"
    for label in ("student-0", "student-1", "ensemble"):
        assert set(results["results"][label]) == {"glue/rte"}
        assert results["results"][label]["glue/rte"]["n"] == 16


def test_the_champion_is_the_student_with_the_lowest_validation_loss(tiny_run, data_dir,
                                                                      builtin):
    losses = tiny_run.last_eval["val_loss"]
    best = min(range(len(losses)), key=losses.__getitem__)
    res = evaluate(tiny_run, ["ewok"], student="champion", data_dir=data_dir, limit=2,
                   available=builtin)
    assert set(res.outcomes[0].result.tasks) == {f"student-{best}"}
    # another student's loss made the lowest: the champion follows it
    other = 1 - best
    lower = [min(losses) - 1.0 if i == other else v for i, v in enumerate(losses)]
    swapped = dataclasses.replace(tiny_run, last_eval={**tiny_run.last_eval, "val_loss": lower})
    assert swapped.champion == other
    res = evaluate(swapped, ["ewok"], student="champion", data_dir=data_dir, limit=2,
                   available=builtin)
    assert set(res.outcomes[0].result.tasks) == {f"student-{other}"}
    # a loss that is NaN or no number at all (a hand-edited metrics.jsonl) never wins
    for odd in (float("nan"), None, "low", True):
        marked = [odd if i == best else v for i, v in enumerate(losses)]
        run = dataclasses.replace(tiny_run, last_eval={**tiny_run.last_eval, "val_loss": marked})
        assert run.champion == other, odd


def test_several_models_are_named_with_a_comma_each_once_in_order():
    assert labels_for("champion,ensemble", 3, champion=1) == ["student-1", "ensemble"]
    assert labels_for("2, 0,champion", 3, champion=0) == ["student-2", "student-0"]
    assert labels_for("all,ensemble", 2) == ["student-0", "student-1", "ensemble"]
    with pytest.raises(MinidmlError, match="--student ensemble: this run has one student"):
        labels_for("champion,ensemble", 1)
    with pytest.raises(MinidmlError, match="--student 3: choose all"):
        labels_for("0,3", 3)
