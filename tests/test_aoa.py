"""The ``aoa`` suite (BabyLM 2026 age of acquisition) against the official code itself.

A one-student run is trained here on real BabyLM text with checkpoints at 250, 500, 750 and
1,000 words seen (revisions ``chck_250`` … ``chck_1k``), exported with ``minidml export
--revisions``, and scored on a small ``cdi_childes.json`` written here in the official format
(its data has no public copy): a word of one character (left out), one without contexts, one
spelled with a non-ASCII character, contexts with spaces around them. The unmodified official
code (``evaluation_pipeline.AoA_word``, from the reference copy, offline, in one interpreter
started from its folder) extracts the surprisals of every revision's export, and its
``AoAEvaluator`` scores files with a ``cdi_human.csv`` also written here.

Proven: every (revision, word, context) surprisal of the file ``--babylm-results`` writes equals
the official extraction's within 1e-4 (float32), with every other field and the order the same,
and both files are the same JSON, indented alike; the curve fitness minidml reports is the
official one, and on a made-up file of sigmoid learning curves over the 19 strict-small
revisions, where most words have both AoAs, every word's model and children's AoA and the curve
fitness are the official ones to :data:`FIT_TOL` (both sides fit with scipy's ``curve_fit``,
called alike); ``minidml babylm collate`` accepts the file (once it covers the track's
revisions) and prints the official score. A missing word file, a Hugging Face directory, a run
without revisions, bad data and a missing scipy (with the children's file) are one-line errors.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidml.errors import MinidmlError
from minidml.evaluation import submission
from minidml.evaluation.submission import COLLATED, FULL, GLUE_TASKS, MAIN
from minidml_plugins import aoa

from _helpers import assert_one_line_error, cli, official_pipeline, real_text_corpus, run_cli

MODEL = "aoa-model"
AOA_DIR = "babylm-eval-2026/full_eval/aoa"
STUDENT = "student-0"
REVISIONS = ("chck_250", "chck_500", "chck_750", "chck_1k")
SURPRISAL_TOL = 1e-4  # float32 sums of float32 log-probabilities
FIT_TOL = 1e-12  # the same curve_fit calls on the same numbers
CHILDES = {
    "dog": [{"context": "I saw a big", "word_in_context_stats": {"count": 3, "frequency": 0.5}},
            {"context": "  The  "}, {"context": "Where is the"}],
    "a": [{"context": "This is"}],  # one character: the official loader leaves it out
    "ball": [{"context": "He threw the"}, {"context": "Can you catch the"}],
    "mommy": [{"context": "I love my"}],
    "chocolate": [{"context": "She ate some"}, {"context": "We like"}],
    "café": [{"context": "Let's go to the"}],
    "empty": [],
    "water": [{"context": "Can I have some"}, {"context": "The fish live in"}],
    "no": [{"context": "She said"}],
}
AGES = [str(a) for a in range(16, 31)]


def human_rows(words: dict[str, tuple[float, float]]) -> list[list[str]]:
    """Rows of a ``cdi_human.csv``: per word (midpoint age, steepness) a logistic share of
    children who produce it, rounded as Wordbank's are."""
    rows = []
    for word, (mid, slope) in words.items():
        rows.append([word, "x", *(f"{0.95 / (1 + math.exp(-slope * (a - mid))):.4f}"
                                  for a in range(16, 31))])
    return rows


def write_human(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [["word", "category", *AGES], *rows]) + "\n",
                    encoding="utf-8")


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


# the official code, in one interpreter started in its folder: its AoA extraction on each
# revision's export, then its AoAEvaluator on the files the test gives it (once they exist)
DRIVER = r"""
import json, math, os, sys, time
from pathlib import Path
sys.path.insert(0, "evaluation_pipeline")  # as calculate_results_from_pred.py finds `utils`
from evaluation_pipeline.AoA_word.eval_util import JsonProcessor, StepConfig, load_eval
from evaluation_pipeline.AoA_word.evaluation_functions import StepSurprisalExtractor
import calculate_results_from_pred as calc
from utils import AoAEvaluator
job = json.load(open(sys.argv[1]))
words, contexts = load_eval(Path(job["words"]), 0)  # run.py's --min_context
merged = None
for name, count, path in job["revisions"]:
    config = StepConfig(track="strict-small")
    config.steps, config.word_counts = [name], [count]
    extractor = StepSurprisalExtractor(config=config, model_name=path, backend="causal",
                                       device="cpu")
    data = extractor.analyze_steps(contexts=contexts, target_words=words)
    merged = data if merged is None else {**merged, "results": merged["results"] + data["results"]}
JsonProcessor.save_json(merged, Path(job["extracted"]))
def fitness(data, human):
    fit = AoAEvaluator(human).compute_curve_fitness(data)
    return {k: fit.get(k) for k in ("curve_fitness", "n_words", "valid_words", "model_aoas",
                                    "child_aoas")}
out = {"extracted": fitness(merged, job["human"]),
       "synthetic": fitness(json.load(open(job["synthetic"])), job["synthetic_human"])}
while not os.path.exists(job["collated_aoa"]):  # written whole (renamed into place)
    time.sleep(0.05)
out["collated"] = calc._calculate_aoa_results(json.load(open(job["collated_aoa"])),
                                              Path(job["human"]))
json.dump(out, open(job["out"], "w"))
"""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def official_code(data_dir) -> Path:
    return official_pipeline(data_dir, "evaluation_pipeline/AoA_word/run.py")


@pytest.fixture(scope="module")
def student(data_dir, tmp_path_factory):
    """A one-student run on real text, with revisions at 250 … 1,000 words seen."""
    import minidml
    from minidml import Shape, TrainConfig

    root = tmp_path_factory.mktemp("aoa-run")
    corpus = real_text_corpus(data_dir, root / "corpus.txt")
    cfg = TrainConfig(students=(Shape(1, 32, 2),), mode="single", vocab_size=1200, lr=3e-3,
                      context=64, batch_size=4, warmup_steps=2, eval_every=8, eval_tokens=512,
                      steps=10, checkpoint_words=(250, 500, 750, 1000))
    return minidml.train(corpus, root / MODEL, cfg)


@pytest.fixture(scope="module")
def roots(data_dir, tmp_path_factory) -> dict[str, Path]:
    """``data``: a data root with the AoA files written here and the shared data the
    collation checks the other tasks against; ``bare``: the AoA word file alone."""
    tmp = tmp_path_factory.mktemp("aoa-data")
    data, bare = tmp / "data", tmp / "bare"
    for root in (data, bare):
        (root / AOA_DIR).mkdir(parents=True)
        (root / AOA_DIR / "cdi_childes.json").write_text(json.dumps(CHILDES, indent=1),
                                                         encoding="utf-8")
    write_human(data / AOA_DIR / "cdi_human.csv", [
        *human_rows({"dog": (19, 0.9), "ball": (20, 0.7), "mommy": (17, 1.2),
                     "chocolate": (26, 0.5), "water": (23, 0.6), "no": (21, 0.8),
                     "café": (28, 0.6), "cat": (20, 0.5)}),
        ["empty", "x", *([""] * 15)]])
    link(data_dir / "babylm-eval", data / "babylm-eval")
    for name in ("entity_tracking", "wug_adj_nominalization", "reading"):
        link(data_dir / "babylm-eval-2026/full_eval" / name,
             data / "babylm-eval-2026/full_eval" / name)
    return {"data": data, "bare": bare}


def synthetic(rng: np.random.Generator) -> tuple[dict, list[list[str]]]:
    """A ``surprisal.json`` of made-up learning curves over the 19 strict-small revisions
    (3 contexts each) and the matching ``cdi_human.csv`` rows, with the cases the official
    scorer skips: a flat curve, NaN and null surprisals, a ``main`` step, a word the children's
    file lacks, a child row with two values, a missing word cell."""
    revisions = submission.track_revisions("strict-small")
    results, human = [], []
    for k in range(16):
        word = f"word{k}"
        mid, slope = rng.uniform(6.3, 7.7), rng.uniform(2, 6)
        low, high = rng.uniform(3, 6), rng.uniform(11, 16)
        for name in revisions:
            x = math.log10(aoa.step_value(name) + 1)
            for c in range(3):
                s = high - (high - low) / (1 + math.exp(-slope * (x - mid)))
                results.append({"step": name, "target_word": word, "context_id": c,
                                "surprisal": s + rng.normal(0, 0.3) + 0.5 * c})
        child_mid = 16 + (mid - 6.3) / 1.4 * 14 + rng.normal(0, 2)
        human.append([word, "x", *(f"{0.98 / (1 + math.exp(-0.8 * (a - child_mid))):.4f}"
                                   for a in range(16, 31))])
    for name in revisions:  # the cases the official scorer skips or leaves without an AoA
        results.append({"step": name, "target_word": "flat", "surprisal": 9 + rng.normal()})
        results.append({"step": name, "target_word": "holes",
                        "surprisal": math.nan if name.endswith("0M") else 10 - len(name)})
        results.append({"step": name, "target_word": "nothing", "surprisal": None})
        results.append({"step": name, "target_word": "stranger", "surprisal": 5.0})
        results.append({"step": name, "target_word": "few", "surprisal": 8.0})
    results.append({"step": "main", "target_word": "word0", "surprisal": 1.0})
    human += [["flat", "x", *(f"{a / 31:.3f}" for a in range(16, 31))],
              ["holes", "x", *(f"{a / 31:.3f}" for a in range(16, 31))],
              ["few", "x", "0.1", "0.6", *([""] * 13)],
              ["NA", "x", *(["0.5"] * 15)]]
    return {"metadata": {}, "results": results}, human


@pytest.fixture(scope="module")
def made(require_extra, student, roots, official_code, tmp_path_factory):
    """minidml's AoA results and file, the official code's extraction and scores."""
    require_extra("hf", "transformers")
    require_extra("babylm", "pandas", "scipy", "statsmodels")
    require_extra("aoa", "scipy")
    from minidml_plugins.harness import offline_env

    tmp = tmp_path_factory.mktemp("aoa")
    code, _, err = cli("export", student.path, tmp / "hf", "--format", "hf", "--revisions")
    assert code == 0, err
    data, human = synthetic(np.random.default_rng(3))
    (tmp / "synthetic.json").write_text(json.dumps(data), encoding="utf-8")
    write_human(tmp / "synthetic_human.csv", human)
    results = tmp / "results"
    job = {"words": str(roots["data"] / AOA_DIR / "cdi_childes.json"),
           "human": str(roots["data"] / AOA_DIR / "cdi_human.csv"),
           "revisions": [[r, aoa.revision_words(r), str(tmp / "hf" / r)] for r in REVISIONS],
           "extracted": str(tmp / "official-surprisal.json"),
           "synthetic": str(tmp / "synthetic.json"),
           "synthetic_human": str(tmp / "synthetic_human.csv"),
           "collated_aoa": str(tmp / "collated-aoa.json"), "out": str(tmp / "official.json")}
    (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = {**offline_env(tmp / "hf-home"), "PYTHONDONTWRITEBYTECODE": "1",
           **dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")}
    log = (tmp / "official.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp / "job.json")],
                            cwd=official_code, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    try:
        code, out, err = cli("eval", student.path, "--suite", "aoa", "--student", "0",
                             "--data-dir", roots["data"], "--babylm-results", results,
                             "--output", tmp / "eval.json", "-q")
        assert code == 0, err
        ours = {"reported": json.loads((tmp / "eval.json").read_text()), "said": out,
                "synthetic": aoa.curve_fitness(((r["step"], r["target_word"], r["surprisal"])
                                                for r in data["results"]),
                                               aoa.read_human(tmp / "synthetic_human.csv"))}
        ours["collate"] = collation(results, roots, tmp)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp / "official.log").read_text()
    assert code == 0 and (tmp / "official.json").is_file(), text[-4000:]
    return {"tmp": tmp, "results": results, "ours": ours, "log": text,
            "official": json.loads((tmp / "official.json").read_text()),
            "extracted": tmp / "official-surprisal.json"}


# ----------------------------------------------------------------------------- collation
def stand_ins(results: Path, root: Path) -> None:
    """Every file but AoA's that the official collation reads, at the official sizes of the
    data under ``root`` (each prediction a placeholder: only AoA is scored here)."""
    for target in FULL:
        sizes = submission.expected_sizes(target.suite, root)
        if isinstance(sizes, int):
            key = "reading" if target.answer == "reading" else target.key
            sizes = {key: sizes}
        data = {}
        for key, n in sizes.items():
            items = []
            for k in range(n):
                item = {"id": f"{key}_{k}", "pred": ""}
                if target.answer == "wug":
                    item["prob"] = 0.5
                if target.answer == "reading":
                    item = {"id": k, "pred": float(k % 7), "prev_pred": float(k % 5)}
                items.append(item)
            data[key] = {"predictions": items}
        path = target.path(results, MODEL, MAIN)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    for task in GLUE_TASKS:
        n = sum(1 for line in (root / f"babylm-eval/glue_filtered/{task}.valid.jsonl")
                .read_text(encoding="utf-8").splitlines() if line.strip())
        path = submission.finetune_path(results, MODEL, MAIN, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({task: {"predictions": [
            {"id": f"{task}_{i}", "pred": 0} for i in range(n)]}}), encoding="utf-8")


# where each word's made-up learning curve drops (log10 of words seen), for the collation
DROPS = {"dog": 6.7, "ball": 6.9, "mommy": 6.6, "chocolate": 7.5, "water": 7.2, "no": 7.0,
         "café": 7.4}


def collation(results: Path, roots: dict[str, Path], tmp: Path) -> dict:
    """``minidml babylm collate`` on minidml's AoA file and stand-ins for the rest: refused
    while the file covers the run's own revisions, accepted once its rows stand for the 19
    strict-small revisions: each revision's rows are those of one of the run's four, spread
    over them in order, plus a made-up drop of 8 nats (a logistic in log10 of words seen, at
    the word's :data:`DROPS`) so that the fits find ages of acquisition."""
    root = roots["data"]
    path = submission.aoa_path(results, MODEL)
    written = path.read_bytes()
    stand_ins(results, root)
    refused = cli("babylm", "collate", results, "--model", MODEL, "--track", "strict-small",
                  "--data-dir", root)
    data = json.loads(written)
    per = {r: [x for x in data["results"] if x["step"] == r] for r in REVISIONS}
    track = submission.track_revisions("strict-small")
    spread = []
    for i, name in enumerate(track):
        words = aoa.step_value(name)
        for x in per[REVISIONS[i * len(REVISIONS) // len(track)]]:
            drop = 8 / (1 + math.exp(-4 * (math.log10(words + 1) - DROPS[x["target_word"]])))
            spread.append({**x, "step": name, "word_count": int(words),
                           "surprisal": x["surprisal"] + 8 - drop})
    path.write_text(json.dumps({**data, "results": spread}, indent=2), encoding="utf-8")
    (tmp / "collated-aoa.tmp").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp / "collated-aoa.tmp").replace(tmp / "collated-aoa.json")
    accepted = cli("babylm", "collate", results, "--model", MODEL, "--track", "strict-small",
                   "--data-dir", root)
    collated = json.loads((results / MODEL / COLLATED).read_text(encoding="utf-8"))
    path.unlink()
    missing = cli("babylm", "collate", results, "--model", MODEL, "--track", "strict-small",
                  "--data-dir", root, "--force")
    return {"written": written, "refused": refused, "accepted": accepted,
            "collated_aoa": collated["aoa"], "spread": spread, "missing": missing,
            "unscored": submission._aoa_score({"results": spread}, roots["bare"])}


# ----------------------------------------------------------------------------- the proof
@pytest.mark.slow
def test_every_surprisal_is_the_official_extractions(made):
    official = json.loads(made["extracted"].read_text(encoding="utf-8"))
    ours = json.loads(made["ours"]["collate"]["written"])
    # the same rows in the same order: the revisions in order of words seen, then the words
    # of the file (but "a"; "empty" has none), then their contexts as written
    assert len(ours["results"]) == len(official["results"]) == 4 * 12
    fields = ("step", "word_count", "target_word", "context_id", "context")
    for mine, theirs in zip(ours["results"], official["results"], strict=True):
        assert list(mine) == list(theirs)
        assert [mine[f] for f in fields] == [theirs[f] for f in fields]
        assert not math.isnan(theirs["surprisal"]), theirs
        assert mine["surprisal"] == pytest.approx(theirs["surprisal"], abs=SURPRISAL_TOL), theirs
    assert [r["step"] for r in ours["results"][::12]] == list(REVISIONS)
    assert {r["target_word"] for r in ours["results"]} == set(CHILDES) - {"a", "empty"}
    # the file itself: the official metadata, and JSON laid out as the official file
    assert list(ours["metadata"]) == list(official["metadata"])
    assert ours["metadata"] == {"model_name": MODEL, "use_bos_only": False, "total_steps": 4,
                                "completed_steps": 4}
    for data, raw in ((ours, made["ours"]["collate"]["written"]),
                      (official, made["extracted"].read_bytes())):
        assert json.dumps(data, indent=2).encode("ascii") == raw
    assert b"caf\\u00e9" in made["ours"]["collate"]["written"]


@pytest.mark.slow
def test_minidml_reports_the_official_curve_fitness(made):
    theirs = made["official"]["extracted"]
    mine = made["ours"]["reported"]["results"][STUDENT]["aoa/aoa"]
    assert mine["curve_fitness"] == pytest.approx(theirs["curve_fitness"], abs=FIT_TOL)
    assert mine["n_words"] == theirs["n_words"]
    assert mine["n"] == 8  # the words scored, "empty" included
    assert set(mine) >= {f"surprisal/{r}" for r in REVISIONS}
    settings = made["ours"]["reported"]["suites"]["aoa"]["settings"]
    assert settings["words"] == 8 and settings["min_context"] == 0
    assert settings["revisions"]["chck_1k"]["words"] == 1000


@pytest.mark.slow
def test_the_fits_are_the_official_fits(made):
    """Made-up curves where most words have both AoAs: each AoA and the score."""
    theirs = made["official"]["synthetic"]
    mine = made["ours"]["synthetic"]
    assert theirs["n_words"] >= 8, theirs  # the correlation means something
    assert mine.words == theirs["valid_words"]
    assert mine.model == pytest.approx(theirs["model_aoas"], abs=FIT_TOL)
    assert mine.children == pytest.approx(theirs["child_aoas"], abs=FIT_TOL)
    assert mine.curve_fitness == pytest.approx(theirs["curve_fitness"], abs=FIT_TOL)
    assert not {"flat", "holes", "nothing", "stranger", "few"} & set(mine.words)


@pytest.mark.slow
def test_collate_accepts_the_file_and_prints_the_official_score(made, roots):
    col = made["ours"]["collate"]
    code, _, err = col["refused"]  # the run's own revisions are not the track's
    assert_one_line_error(code, err, "AoA_word/surprisal.json", "no results of revision chck_1M")
    code, out, err = col["accepted"]
    assert code == 0, err
    official = made["official"]["collated"]
    line = next(x for x in out.splitlines() if x.strip().startswith("AoA"))
    assert float(line.split()[1]) == pytest.approx(official, abs=0.0051), line
    assert json.loads(json.dumps(col["spread"])) == col["collated_aoa"]["results"]
    scored = aoa.AoASuite().score_file({"results": col["spread"]}, roots["data"])
    assert scored["curve_fitness"] == pytest.approx(official, abs=FIT_TOL)
    assert scored["n_words"] >= 4 and abs(official) > 0.1  # a correlation of real AoAs
    # without the children's file: not scored, the reason naming where it belongs
    assert col["unscored"] == (None, f"no data at {roots['bare'] / AOA_DIR / 'cdi_human.csv'}")
    code, _, err = col["missing"]
    assert_one_line_error(code, err, "AoA_word/surprisal.json: missing",
                          "minidml eval RUN --suite aoa --babylm-results DIR")


# ----------------------------------------------------------------------------- bad input
def test_missing_word_file_is_one_line(tiny_run, tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    code, _, err = run_cli("eval", tiny_run.path, "--suite", "aoa", "--data-dir", empty,
                           capsys=capsys)
    assert_one_line_error(code, err, str(empty / AOA_DIR / "cdi_childes.json"),
                          "put the official file there")
    code, _, err = run_cli("data", "fetch", "aoa", "--data-dir", empty, capsys=capsys)
    assert_one_line_error(code, err, str(empty / AOA_DIR / "cdi_childes.json"),
                          "no public download")


def test_a_run_without_revisions_is_one_line(tiny_run, roots, capsys):
    code, _, err = run_cli("eval", tiny_run.path, "--suite", "aoa", "--data-dir", roots["bare"],
                           capsys=capsys)
    assert_one_line_error(code, err, str(tiny_run.path), "no checkpoint at words seen",
                          "--checkpoint-words")


@pytest.mark.slow
def test_a_hugging_face_model_is_one_line(made, roots):
    from minidml.evaluation.runner import evaluate
    from minidml.hf.models import load_hf

    model = made["tmp"] / "hf" / MAIN
    (outcome,) = evaluate(load_hf(model), ["aoa"], data_dir=roots["bare"]).outcomes
    assert outcome.status == "failed" and "\n" not in outcome.error
    assert str(model) in outcome.error and "Hugging Face" in outcome.error
    assert "evaluate the run directory" in outcome.error


def test_without_scipy_the_fit_is_one_line_and_the_surprisals_need_none(student, roots, capsys,
                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # import fails, as if not installed
    code, _, err = run_cli("eval", student.path, "--suite", "aoa", "--data-dir", roots["data"],
                           capsys=capsys)
    assert_one_line_error(code, err, "aoa: the curve fit needs scipy",
                          "pip install 'minidml[aoa]'")
    with pytest.raises(MinidmlError, match=r"needs scipy; pip install 'minidml\[aoa\]'"):
        aoa.AoASuite().score_file({"results": [
            {"step": r, "target_word": "dog", "surprisal": 5.0} for r in REVISIONS]},
            roots["data"])
    # without the children's file there is no fit: the surprisals are scored all the same
    code, out, err = run_cli("eval", student.path, "--suite", "aoa", "--data-dir",
                             roots["bare"], capsys=capsys)
    assert code == 0, err
    assert "no curve fitness" in out


def test_the_suite_imports_no_scipy():
    code = ("import sys, minidml.cli.commands, minidml_plugins.aoa; "
            "from minidml.evaluation.plugins import suites; suites(); "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'scipy']; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_word_file_is_read_as_the_official_loader_reads_it(tmp_path):
    path = tmp_path / "cdi_childes.json"
    path.write_text(json.dumps(CHILDES), encoding="utf-8")
    words = aoa.read_words(path)
    assert words.words == ["dog", "ball", "mommy", "chocolate", "café", "empty", "water", "no"]
    assert words.contexts[0] == ["I saw a big", "  The  ", "Where is the"]
    assert words.rows[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert len(words.rows) == 12 and words.in_file == 9
    assert aoa.read_words(path, min_context=2).words == ["dog", "ball", "chocolate", "water"]
    assert words.head(2).words == ["dog", "ball"]
    for text, needle in (("{", "not valid JSON"), ("[1]", "expected {word"),
                         ('{"dog": {"context": "x"}}', "no list of contexts"),
                         ('{"dog": [{"text": "x"}]}', "context 0 of 'dog'")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(MinidmlError, match=needle) as e:
            aoa.read_words(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_revision_names_and_the_official_step_numbers():
    from minidml.words import revision_name

    for words in (1_000, 250, 1_000_000, 10_000_000, 1_500):
        assert aoa.revision_words(revision_name(words)) == words
        assert aoa.step_value(revision_name(words)) == words
    assert aoa.step_value("chck_2B") == 2e9 and aoa.step_value(7) == 7.0
    assert aoa.step_value("main") is None and aoa.revision_words("main") is None


def test_the_childrens_file_errors_are_one_line(tmp_path):
    path = tmp_path / "cdi_human.csv"
    for text, needle in (("item,16\nx,0.5\n", "no column 'word'"),
                         ("word,category\nx,y\n", "any age column"),
                         ("word,16,17\ndog,0.5,lots\n", ":2: column '17' holds 'lots'")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(MinidmlError, match=needle) as e:
            aoa.read_human(path)
        assert "\n" not in str(e.value)
    path.write_text("word,17,16,99\ndog,0.2,NA,1\nNA,0.3,0.4,0.5\n", encoding="utf-8")
    human = aoa.read_human(path)
    assert human.ages.tolist() == [16, 17]  # in order of age, 99 not one
    assert human.words == ["dog", None]
    assert np.isnan(human.shares[0, 0]) and human.shares[0, 1] == 0.2
    assert human.child_aoa("cat") is None and "dog" in human


def test_a_step_evaluates_but_files_aoa_under_main_only(tmp_path):
    """``--step N`` files its suites under the checkpoint's revisions; AoA, which spans them
    all, only ever goes to main."""
    from types import SimpleNamespace

    from minidml.evaluation.plugins import SuiteSpec
    from minidml.evaluation.suite import SuiteResult

    spec = SuiteSpec("aoa", aoa.AoASuite, "", requires=(f"{AOA_DIR}/cdi_childes.json",))
    outcome = SimpleNamespace(spec=spec, status="ok", result=SuiteResult({}))
    results = SimpleNamespace(protocol="babylm-2026", outcomes=[outcome])
    done = submission.write_predictions(results, tmp_path, ["chck_1M"], model="m",
                                        label=STUDENT)
    assert not done.files and "filed under main" in done.skipped["aoa"]
    assert "--suite aoa --babylm-results" in submission._hint("aoa")
