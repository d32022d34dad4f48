"""The official BabyLM 2026 strict pipeline agrees with minidml's ``babylm-2026`` scoring,
item by item.

A student trained here on real BabyLM text (1,200 pieces, so that many words take several and
the supplement's line breaks are byte pieces) is exported to the Hugging Face format and
scored twice on the same items: by minidml's suites under ``--protocol babylm-2026``, and by
the unmodified official code (``babylm-eval-strict`` in ``shared/reference/``, beside the
data), run as a command from its own folder. The items are the first lines of every file of
each task (the first items of each number of operations for entity tracking) and the first
rows of the reading data, copied into a temporary data root that mirrors minidml's layout, so
both pipelines read the same files.

Proven, for every suite in :data:`CASES`: the official ``predictions.json`` holds exactly the
items minidml scored, in the same order and under the same names; each item's chosen
completion is the one minidml ranks first (an item whose best two scores lie within
:data:`NEAR` of each other may go either way and is counted, not failed); every task's
accuracy is the one the official report prints, and equals, exactly, the accuracy the
official predictions give; the suite's headline score is the official average (entity
tracking's: the mean of its three files' means). For the wug test, every item's normalised
probability of the first sentence agrees within :data:`PROB_TOL`, minidml's Spearman ρ is
scipy's (ties included), and it equals the official ρ within :data:`RHO_TOL`: the official
probabilities are float32 and tie or swap where they crowd together, so its own ρ moves with
its batch size. For the reading evaluation, every row's surprisal (the official
``prediction.jsonl``) agrees with minidml's, minidml's regressions on the official surprisals
reproduce the official fits, and both scores agree within 1e-6 (×100, the official report's
scale, which it rounds to two decimals; the exact values come from its fits).

The test can fail: a deliberately wrong rule (the official one with the completion's last
token left out) disagrees with the official choices. lm-evaluation-harness's rule would be
no such control: with minidml's word-boundary tokenizer it scores the same tokens as the
official rule on all of these items.

The official code runs unmodified, read only, in one interpreter that runs each of its
modules as ``python -m`` does, with the Hugging Face libraries offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from minidml.evaluation.protocols import Request, ScoringProtocol, get_protocol
from minidml.evaluation.runner import evaluate
from minidml.evaluation.suite import as_choices, group_score, spearman
from minidml_plugins.harness import offline_env

from _helpers import real_text_student

pytestmark = pytest.mark.slow

NEAR = 1e-4  # scores this close are float noise apart: either choice is the official one
STUDENT = "student-0"
# The official wug probabilities are float32 softmaxes of float32 sums, which its batching
# (right padding) moves by a few 1e-6; where many lie close to 1 they tie or swap, so its own
# --batch_size 1 and 64 give ρ 8e-5 apart on this model. minidml scores each text's tokens
# as the batch-1 run does: its ρ equals that run's within 1e-6, the default run's within
# RHO_TOL.
PROB_TOL = 2e-5
RHO_TOL = 2e-3
RHO_BATCH1_TOL = 1e-6
READING_TOL = 1e-6  # on the official ×100 scale
SURPRISAL_TOL = 1e-4
READING_ROWS = 300
READING_CSV = "babylm-eval-2026/full_eval/reading/reading_data.csv"


@dataclass(frozen=True)
class Case:
    """A minidml suite, the official task that scores the same files, the folder they are in
    (under the data root), and how many of each file's first items to keep (of each value of
    ``per`` where it is given)."""

    suite: str
    task: str
    folder: str
    keep: int
    per: str | None = None


FAST = "babylm-eval-2026/fast_eval"
FULL = "babylm-eval-2026/full_eval"
CASES = (
    Case("blimp", "blimp", "babylm-eval/blimp_filtered", 3),
    Case("blimp-supplement", "blimp", "babylm-eval/supplement_filtered", 40),
    Case("ewok", "ewok", "babylm-eval/ewok_filtered", 20),
    Case("blimp-fast", "blimp", f"{FAST}/blimp_fast", 3),
    Case("supplement-fast", "blimp", f"{FAST}/supplement_fast", 40),
    Case("ewok-fast", "ewok", f"{FAST}/ewok_fast", 20),
    Case("entity-tracking", "entity_tracking", f"{FULL}/entity_tracking", 4, per="numops"),
    Case("wug-adj", "wug_adj", f"{FULL}/wug_adj_nominalization", 120),
    Case("wug-adj-fast", "wug_adj", f"{FAST}/wug_adj_nominalization", 60),
)

# runs each official module as `python -m` runs it, all in one interpreter (transformers is
# imported once rather than once per task)
DRIVER = """
import json, runpy, sys
for module, argv in json.load(open(sys.argv[1])):
    print("#### official:", module, *argv, flush=True)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def official_code(data_dir) -> Path:
    """The official pipeline's folder: ``reference/babylm-eval-strict`` beside the data."""
    path = data_dir.parent / "reference" / "babylm-eval-strict"
    if not (path / "evaluation_pipeline" / "sentence_zero_shot" / "run.py").is_file():
        if os.environ.get("MINIDML_DATA_DIR"):
            pytest.fail(f"the official BabyLM pipeline is not at {path}", pytrace=False)
        pytest.skip(f"the official BabyLM pipeline is not at {path}")
    return path


@pytest.fixture(scope="module")
def student(require_extra, data_dir, tmp_path_factory):
    """A one-student run trained briefly on real text, with a 1,200-piece vocabulary and a
    256-token context, and its Hugging Face export."""
    require_extra("hf", "transformers")
    require_extra("babylm", "pandas", "statsmodels", "scipy", "datasets")
    return real_text_student(data_dir, tmp_path_factory.mktemp("official"), export="model",
                             context=256, batch_size=4, warmup_steps=3, eval_every=16,
                             eval_tokens=1024, steps=16)


def _keep(lines: list[str], keep: int, per: str | None) -> list[str]:
    if per is None:
        return lines[:keep]
    seen: dict[object, int] = defaultdict(int)
    out = []
    for line in lines:
        value = json.loads(line)[per]
        if seen[value] < keep:
            seen[value] += 1
            out.append(line)
    return out


@pytest.fixture(scope="module")
def data_root(data_dir, tmp_path_factory) -> Path:
    """A data root in minidml's layout holding the first items of every file of every case,
    and the first rows of the reading data."""
    root = tmp_path_factory.mktemp("official-data")
    for case in CASES:
        files = sorted((data_dir / case.folder).glob("*.jsonl"))
        assert files, data_dir / case.folder
        (root / case.folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
            (root / case.folder / f.name).write_text("".join(_keep(lines, case.keep, case.per)),
                                                     encoding="utf-8")
    rows = (data_dir / READING_CSV).read_text(encoding="utf-8").splitlines(keepends=True)
    (root / READING_CSV).parent.mkdir(parents=True)
    (root / READING_CSV).write_text("".join(rows[:READING_ROWS + 1]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def both(student, data_root, official_code, tmp_path_factory):
    """(the official outputs' folder, minidml's results): the official pipeline runs as a
    command while minidml scores the same items."""
    run, model = student
    tmp = tmp_path_factory.mktemp("official-out")
    jobs = [["evaluation_pipeline.sentence_zero_shot.run",
             ["--model_path_or_name", str(model), "--backend", "causal", "--task", case.task,
              "--data_path", str(data_root / case.folder), "--save_predictions",
              "--output_dir", str(tmp / case.suite)]] for case in CASES]
    jobs += [["evaluation_pipeline.sentence_zero_shot.run",
              ["--model_path_or_name", str(model), "--backend", "causal", "--task", case.task,
               "--data_path", str(data_root / case.folder), "--save_predictions",
               "--batch_size", "1", "--output_dir", str(tmp / f"{case.suite}-batch1")]]
             for case in CASES if case.task.startswith("wug")]
    jobs.append(["evaluation_pipeline.reading.run",
                 ["--data_path", str(data_root / READING_CSV), "--model_path_or_name",
                  str(model), "--backend", "causal", "--output_dir", str(tmp / "reading")]])
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = {**offline_env(tmp / "hf-home"), "PYTHONDONTWRITEBYTECODE": "1"}
    log = (tmp / "official.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp / "jobs.json")],
                            cwd=official_code, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    try:
        ours = evaluate(run, [c.suite for c in CASES] + ["reading"], student="0",
                        data_dir=data_root, protocol="babylm-2026")
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    outputs = [official_dir(tmp, case, model) / name for case in CASES
               for name in ("predictions.json", "best_temperature_report.txt")]
    outputs.append(official_reading(tmp, model) / "prediction.jsonl")
    missing = [str(p) for p in outputs if not p.is_file()]
    assert code == 0 and not missing, (missing, (tmp / "official.log").read_text()[-4000:])
    assert ours.ok, [(o.spec.name, o.error) for o in ours.outcomes if o.status != "ok"]
    return tmp, {o.spec.name: o.result for o in ours.outcomes}


# ----------------------------------------------------------------------------- reading back
def official_dir(out: Path, case: Case, model: Path) -> Path:
    return (out / case.suite / model.stem / "main" / "zero_shot" / "causal" / case.task
            / Path(case.folder).stem)


def read_report(path: Path) -> tuple[dict[str, float], float]:
    """The per-UID scores and the average of a ``best_temperature_report.txt``."""
    sections: dict[str, dict[str, float]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:], {})
        elif current is not None and ": " in line:
            key, value = line.rsplit(": ", 1)
            current[key] = float(value)
        elif current is not None and re.fullmatch(r"-?[\d.]+|nan", line.strip()):
            current[""] = float(line)
    uid = next(v for k, v in sections.items() if k.startswith("UID "))
    average = next(v for k, v in sections.items() if k.startswith("AVERAGE "))
    return uid, average[""]


def completions(item) -> list[str]:
    """The strings the official pipeline reports as an item's predictions: each choice's
    completion (the text, after its join where it follows a context)."""
    c = as_choices(item)
    return [c.join + t if c.contexts and c.contexts[i] else t for i, t in enumerate(c.texts)]


def first_best(scores) -> int:
    """The index of the first highest score (torch.max's choice among equals)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def first_probability(scores) -> float:
    """The softmax's probability of the first of two scores, in float32 as the pipeline (and
    minidml's wug suites) take it."""
    return float(torch.softmax(torch.tensor(scores, dtype=torch.float32), 0)[0])


def near_tie(scores, a: int, b: int) -> bool:
    return abs(scores[a] - scores[b]) < NEAR


def by_task(result) -> dict[str, list]:
    tasks: dict[str, list] = defaultdict(list)
    for s in result.samples:
        tasks[s.task].append(s)
    return {t: sorted(v, key=lambda s: s.index) for t, v in tasks.items()}


# ----------------------------------------------------------------------------- zero-shot
def compare_items(case: Case, result, predictions: dict) -> tuple[dict, dict, int]:
    """Checks every item's official choice against minidml's. Returns, per UID, the official
    number of correct items and of items, and the number of near-ties."""
    ours = by_task(result)
    assert sorted(predictions) == sorted(ours), case.suite
    correct, total, near = {}, {}, 0
    for uid, samples in ours.items():
        theirs = predictions[uid]["predictions"]
        assert len(theirs) == len(samples), (case.suite, uid)
        hits = 0
        for k, (pred, sample) in enumerate(zip(theirs, samples, strict=True)):
            assert pred["id"] == f"{uid}_{k}" and sample.index == k, (uid, k, pred["id"])
            texts = completions(sample.pair)
            scores = sample.scores[STUDENT]
            mine = first_best(scores)
            assert pred["pred"] in texts, (uid, k, pred["pred"])
            chosen = texts.index(pred["pred"])
            if chosen != mine:
                assert near_tie(scores, chosen, mine), (
                    f"{case.suite}/{uid}_{k}: the official pipeline chose {pred['pred']!r}, "
                    f"minidml {texts[mine]!r}; minidml's scores {scores}")
                near += 1
            hits += chosen == 0
            if "prob" in pred:  # the wug test: the softmax's first probability
                p = first_probability(scores)
                assert pred["prob"] == pytest.approx(p, abs=PROB_TOL), (uid, k, pred["prob"], p)
        correct[uid], total[uid] = hits, len(samples)
    return correct, total, near


@pytest.mark.parametrize("case", CASES, ids=[c.suite for c in CASES])
def test_the_official_pipeline_makes_minidmls_choices(case, both, student, data_root):
    out, results = both
    _, model = student
    folder = official_dir(out, case, model)
    predictions = json.loads((folder / "predictions.json").read_text())
    uid_report, average_report = read_report(folder / "best_temperature_report.txt")
    result = results[case.suite]
    per = result.tasks[STUDENT]
    correct, total, near = compare_items(case, result, predictions)
    assert near <= 2, f"{case.suite}: {near} near-ties"
    headline = group_score(per, result.groups[case.suite], result.groups)["score"]

    if case.task.startswith("wug"):
        from scipy.stats import spearmanr

        (uid,) = predictions
        (data,) = (data_root / case.folder).glob("*.jsonl")
        ratios = [float(json.loads(line)["ratio"]) for line in data.read_text().splitlines()]
        probs = [p["prob"] for p in predictions[uid]["predictions"]]
        rho = float(spearmanr(probs, ratios)[0])
        assert average_report == pytest.approx(rho, abs=0.0051)
        # minidml's ρ is scipy's, ties included (the official float32 probabilities tie)
        assert spearman(probs, ratios) == pytest.approx(rho, abs=1e-12)
        mine = [first_probability(s.scores[STUDENT]) for s in by_task(result)[uid]]
        assert per[uid].metrics["rho"] == pytest.approx(spearmanr(mine, ratios)[0], abs=1e-12)
        assert per[uid].metrics["rho"] == pytest.approx(rho, abs=RHO_TOL), (rho, per[uid])
        one = official_dir(out, replace(case, suite=f"{case.suite}-batch1"), model)
        probs_one = [p["prob"] for p in json.loads(
            (one / "predictions.json").read_text())[uid]["predictions"]]
        rho_one = float(spearmanr(probs_one, ratios)[0])
        assert per[uid].metrics["rho"] == pytest.approx(rho_one, abs=RHO_BATCH1_TOL), (
            rho_one, per[uid])
        assert headline == per[uid].metrics["rho"]
        return

    accs = {}
    for uid in total:
        official = 100.0 * correct[uid] / total[uid]
        assert uid_report[uid] == pytest.approx(official, abs=0.0051), uid
        if not near:
            assert 100.0 * per[uid].metrics["acc"] == pytest.approx(official, abs=1e-9), uid
        accs[uid] = official
    if case.task == "entity_tracking":  # the mean of the three files' means
        means = []
        for split in ("regular", "ambiref", "move_contents"):
            members = [v for k, v in accs.items() if k.startswith(split)]
            means.append(sum(members) / len(members))
            assert uid_report[split] == pytest.approx(means[-1], abs=0.0051), split
            if not near:
                mine = group_score(per, result.groups[split], result.groups)["score"]
                assert 100.0 * mine == pytest.approx(means[-1], abs=1e-9), split
        average = sum(means) / len(means)
    else:
        average = sum(accs.values()) / len(accs)
    assert average_report == pytest.approx(average, abs=0.0051)
    if not near:
        assert 100.0 * headline == pytest.approx(average, abs=1e-9), case.suite


# ----------------------------------------------------------------------------- reading
def official_reading(out: Path, model: Path) -> Path:
    return out / "reading" / model.stem / "main" / "zero_shot" / "causal" / "reading"


def official_reading_scores(folder: Path) -> tuple[float, float]:
    """(eye tracking, self-paced reading) ×100 to full precision, from the official fits."""
    def gains(name: str) -> dict[str, float]:
        out = {}
        for line in (folder / name).read_text().splitlines():
            fit = json.loads(line)
            base = fit["R2"] - fit["Change in R2 from baseline"]
            out[fit["Predicted variable"]] = 100 * fit["Change in R2 from baseline"] / (1 - base)
        return out

    plain, spill = gains("predictive_power.jsonl"), gains("predictive_power_spillover.jsonl")
    eye = [v for k, v in plain.items() if "RT" in k]
    return sum(eye) / len(eye), spill["self_paced_reading_time"]


def test_the_official_reading_evaluation_gives_minidmls_scores(both, student, data_root):
    import numpy as np

    from minidml.evaluation.scoring import Scorer
    from minidml_plugins import reading

    out, results = both
    run, model = student
    folder = official_reading(out, model)
    rows = [json.loads(line) for line in (folder / "prediction.jsonl").read_text().splitlines()]
    table = reading.read_table(data_root / READING_CSV)
    assert [r["Word"] for r in rows] == table.words and len(rows) == READING_ROWS

    # every row's surprisal, and its previous word's
    scorer = Scorer(run.students, run.tokenizer, run.omega, labels=[STUDENT])
    pred, prev = reading.table_surprisals(scorer, table)[STUDENT]
    theirs = np.array([r["Logprob"] for r in rows], dtype=np.float64)
    theirs_prev = np.array([r["Prev_Logprob"] for r in rows], dtype=np.float64)
    assert np.array_equal(np.isnan(prev), np.isnan(theirs_prev))
    assert np.allclose(pred, theirs, rtol=0, atol=SURPRISAL_TOL), np.abs(pred - theirs).max()
    has = ~np.isnan(prev)
    assert np.allclose(prev[has], theirs_prev[has], rtol=0, atol=SURPRISAL_TOL)

    # minidml's regressions on the official surprisals are the official fits
    eye, spr = official_reading_scores(folder)
    fits = reading.regressions(table.numbers, theirs, theirs_prev)
    assert 100 * fits.eye_tracking == pytest.approx(eye, abs=1e-9)
    assert 100 * fits.self_paced_reading == pytest.approx(spr, abs=1e-9)
    report = (folder / "report.txt").read_text()
    assert f"EYE TRACKING SCORE: {eye:.2f}" in report
    assert f"SELF-PACED READING SCORE: {spr:.2f}" in report

    # and minidml's own scores are the official ones
    per = results["reading"].tasks[STUDENT]
    assert 100 * per["eye_tracking"].score == pytest.approx(eye, abs=READING_TOL)
    assert 100 * per["self_paced_reading"].score == pytest.approx(spr, abs=READING_TOL)


# ----------------------------------------------------------------------------- a wrong rule
class _LastTokenUnscored(ScoringProtocol):
    """The official rule with an off-by-one: the completion's last token is left out."""

    def _requests(self, tokenizer, texts, contexts, joins):
        right = get_protocol("babylm-2026").requests(tokenizer, texts, contexts, joins)
        return [Request(r.ids, r.skip, max(r.skip, r.stop - 1)) for r in right]


def disagreements(result, predictions: dict) -> int:
    """Items whose official choice is not minidml's first, near-ties aside."""
    n = 0
    for uid, samples in by_task(result).items():
        for pred, sample in zip(predictions[uid]["predictions"], samples, strict=True):
            texts, scores = completions(sample.pair), sample.scores[STUDENT]
            chosen, mine = texts.index(pred["pred"]), first_best(scores)
            n += chosen != mine and not near_tie(scores, chosen, mine)
    return n


def test_a_wrong_rule_disagrees_with_the_official_pipeline(both, student, data_root):
    out, _ = both
    run, model = student
    # under the official rule's name, so that the suites defined only under it run too
    wrong = evaluate(run, [c.suite for c in CASES], student="0", data_dir=data_root,
                     protocol=_LastTokenUnscored("babylm-2026", "wrong", truncate=False))
    assert wrong.ok
    found = {}
    for case, outcome in zip(CASES, wrong.outcomes, strict=True):
        predictions = json.loads((official_dir(out, case, model) / "predictions.json").read_text())
        found[case.suite] = disagreements(outcome.result, predictions)
    assert sum(found.values()) >= 10, found
