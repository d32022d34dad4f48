"""lm-evaluation-harness itself agrees with minidml's suites, example by example.

A student trained here on real BabyLM text is exported and scored twice: by minidml's
``blimp``, ``blimp-supplement`` and ``ewok`` suites, and by ``lm_eval`` (the ``harness``
extra, run as a command) on task files (:mod:`minidml_plugins.harness`) that point at the same
data files with the BabyLM 2024 pipeline's templates, minidml under ``--protocol lm-eval``.
Every example's two log-likelihoods must be equal within 1e-4, and every task's accuracy
equal (both count a tie as the first, correct choice). Nothing reaches the network: the task
files read local JSON files and the Hugging Face libraries run offline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minidml.evaluation.protocols import PROTOCOLS
from minidml.evaluation.runner import evaluate
from minidml_plugins import harness

from _helpers import real_text_student

TOL = 1e-4
LIMIT = 12  # examples per task
# BLiMP paradigms where the leading space changed the accuracy most, and a spread of others
BLIMP = ("existential_there_quantifiers_2", "only_npi_licensor_present",
         "superlative_quantifiers_2", "adjunct_island", "anaphor_gender_agreement",
         "determiner_noun_agreement_2", "irregular_past_participle_verbs",
         "regular_plural_subject_verb_agreement_1", "wh_questions_object_gap",
         "sentential_negation_npi_scope")
SUPPLEMENT = ("hypernym", "qa_congruence_easy", "qa_congruence_tricky",
              "subject_aux_inversion", "turn_taking")
EWOK = ("agent-properties", "material-dynamics", "physical-relations", "social-properties",
        "spatial-relations", "quantitative-properties")
TASKS = {"blimp": BLIMP, "blimp-supplement": SUPPLEMENT, "ewok": EWOK}


@pytest.fixture(scope="module")
def extras(require_extra):
    require_extra("hf", "transformers")
    require_extra("harness", "lm_eval", "accelerate")


@pytest.fixture(scope="module")
def student(extras, data_dir, tmp_path_factory):
    """A one-student run trained briefly on real text (so its vocabulary has the pieces of
    running English, ``▁The`` beside ``The``), and its Hugging Face export."""
    return real_text_student(data_dir, tmp_path_factory.mktemp("harness"), context=96,
                             batch_size=16, warmup_steps=5, eval_every=40, eval_tokens=2048,
                             steps=40)


def run_lm_eval(model: Path, tmp: Path, data_dir: Path) -> dict[tuple[str, str], list]:
    """{(suite, task): the harness's samples in doc order}, from ``lm_eval --log_samples``."""
    names = harness.write_tasks(tmp / "tasks", data_dir, TASKS, TASKS)
    cmd = harness.lm_eval_command(model, tmp / "tasks", names, tmp / "results", limit=LIMIT,
                                  python=sys.executable)
    done = subprocess.run(cmd, env=harness.offline_env(tmp / "hf-home"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = harness.read_samples(tmp / "results", names)
    assert set(found) == set(names.values())
    return found


def test_lm_eval_and_minidml_give_the_same_loglikelihoods(student, data_dir, tmp_path):
    run, model = student
    theirs = run_lm_eval(model, tmp_path, data_dir)
    ours = evaluate(run, list(TASKS), student="0", data_dir=data_dir, limit=LIMIT,
                    protocol="lm-eval")
    assert ours.ok, [o.error for o in ours.outcomes]
    samples = {}
    for outcome in ours.outcomes:
        for s in outcome.result.samples:
            samples.setdefault((outcome.spec.name, s.task), []).append(s)
    worst, pairs = 0.0, 0
    for key, rows in theirs.items():
        mine = samples[key]
        assert [r["doc_id"] for r in rows] == [s.index for s in mine] == list(range(LIMIT))
        correct_theirs = correct_ours = 0
        for r, s in zip(rows, mine, strict=True):
            ll = r["loglikelihoods"]
            good, bad = s.scores["student-0"]
            worst = max(worst, abs(ll[0] - good), abs(ll[1] - bad))
            if abs(good - bad) > 2 * TOL:  # the same decision, unless it is a near-tie
                assert (ll[0] > ll[1]) == (good > bad), (key, r["doc_id"], ll, good, bad)
            correct_theirs += r["acc"]
            correct_ours += good >= bad
        result = next(o.result for o in ours.outcomes if o.spec.name == key[0])
        task = result.tasks["student-0"][key[1]]
        assert task.metrics["acc"] * LIMIT == pytest.approx(correct_ours)
        assert correct_theirs == correct_ours, key
        pairs += len(rows)
    assert worst < TOL, worst
    assert pairs == LIMIT * sum(map(len, TASKS.values()))


def test_the_first_word_is_scored_as_running_text(student):
    """What the harness's leading space changes: ``▁The``, the piece of running text, not
    a line-initial ``The`` starts a BLiMP sentence."""
    run, _ = student
    tok = run.tokenizer
    ids, skip, _ = PROTOCOLS["lm-eval"].requests(tok, ["The cat was there."])[0]
    assert tok.id_to_piece(ids[skip]) == "\u2581The"
    # with the word boundary, the 2026 rule scores the same pieces
    assert PROTOCOLS["babylm-2026"].requests(tok, ["The cat was there."])[0].ids == ids
