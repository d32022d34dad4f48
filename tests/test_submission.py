"""A BabyLM 2026 submission from minidml: ``minidml eval … --babylm-results DIR`` writes
predictions the official scripts read and score as minidml scores them, and ``minidml babylm
collate`` writes the official collation's file.

A one-student run is trained here on real BabyLM text with a checkpoint at 1,000 words seen
(revision ``chck_1k``). minidml writes, with ``--babylm-results``:

- at ``chck_1k`` (``--step``), the fast sets: BLiMP, the supplement, EWoK, both wug tests and
  reading, all at their official sizes;
- at ``main`` (the final checkpoint), the full wug tests and reading;
- in a second folder, every full zero-shot task on the first items of each file (a data root
  like ``test_official.py``'s), since the full sets take minutes to score.

The unmodified official code then runs from the reference copy (in one interpreter, as
``test_official.py`` runs it, read only): ``collate_preds.py`` (plain, and ``--fast --track
strict-small``) and ``calculate_results_from_pred.py`` (full and ``--fast``) as commands, and
its ``_calculate_*`` functions on the second folder. Proven: every score the official code
computes from minidml's predictions is the one minidml reported for the task (each subtask's
accuracy, ρ and reading's gains to 1e-9, the printed averages to their two decimals), for
every zero-shot task the official collation reads; ``minidml babylm collate`` writes the
official file byte for byte, and with ``--fast`` the same JSON (its computed scores within
1e-9), and prints the official report's scores; the counts minidml checks each file against
are the official ones.

Stand-ins, made here because the official collation wants every file of a submission at its
official size: the final model's full BLiMP, supplement, EWoK and entity-tracking predictions
(taking minidml minutes: random choices among each item's real options), the fast
entity-tracking predictions (random, a different seed per revision), the AoA file (minidml
makes it with ``--suite aoa --babylm-results`` from the official word file, which has no
public copy; ``tests/test_aoa.py`` proves it) and the fine-tuning files (minidml's glue
writes them, proven on wsc with the subset, since fine-tuning every task takes long), and the
19 revisions of a strict-small run (copies of ``chck_1k``). Data with no public copy
(``babylm-eval-2026/README.md``): wug past tense (the first 50 rows of the adjective test
stand in), COMPS (generated rows in its format), the fast entity-tracking set (the full
``regular.jsonl``, which has the fast set's counts) and the AoA test's ``cdi_human.csv``
(without it the official report stops at AoA, after every other task).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minidml.errors import MinidmlError
from minidml.evaluation import submission
from minidml.evaluation.submission import COLLATED, FAST, FULL, GLUE_TASKS, MAIN

from _helpers import assert_one_line_error, cli, official_pipeline, real_text_corpus, run_cli

MODEL = "sub-model"
REVISION = "chck_1k"
FULL_2026 = "babylm-eval-2026/full_eval"
FAST_2026 = "babylm-eval-2026/fast_eval"
STUDENT = "student-0"
FAST_SUITES = ("blimp-fast", "supplement-fast", "ewok-fast", "wug-adj-fast", "wug-past-fast",
               "reading-fast")
# the official report's two decimals: a score may round either way within this of minidml's
PRINTED = 0.0051
EXACT = 1e-9

DRIVER = r"""
import json, os, runpy, shutil, sys, time, traceback
# the official scripts' libraries, loaded while minidml evaluates; then the jobs, once written
import pandas, scipy.stats, statsmodels.formula.api, transformers.modeling_outputs
def wait(path):
    while not os.path.exists(path):
        time.sleep(0.05)
wait(sys.argv[1])
for job in json.load(open(sys.argv[1])):
    print("#### official:", job["name"], flush=True)
    if job.get("after"):
        wait(job["after"])
    sys.argv = [job["target"], *job["argv"]]
    try:
        if job["kind"] == "module":
            runpy.run_module(job["target"], run_name="__main__", alter_sys=True)
        elif job["kind"] == "script":  # as `python SCRIPT` runs it: its folder first on the path
            sys.path.insert(0, os.path.dirname(os.path.abspath(job["target"])))
            runpy.run_path(job["target"], run_name="__main__")
        else:
            exec(job["target"], {"__name__": "job"})
        print("#### done", flush=True)
    except BaseException as e:
        print("#### failed:", type(e).__name__, e, flush=True)
        traceback.print_exc(file=sys.stdout)
    for op, src, dst in job.get("then", []):  # put an output aside (move) or where read (copy)
        (shutil.move if op == "move" else shutil.copyfile)(src, dst)
"""

# the official scoring functions on the second folder, and the official collation's counts
FUNCTIONS = r"""
import json, math, sys
from pathlib import Path
sys.path.insert(0, "evaluation_pipeline")
import calculate_results_from_pred as calc
import evaluation_pipeline.collate_preds as coll
job = json.load(open(JOB))
res, data = Path(job["results"]), Path(job["data"])
def load(rel):
    return json.load((res / rel / "predictions.json").open())
out = {
    "blimp": calc._calculate_blimp_results(load("blimp/blimp_filtered"), data / "blimp_filtered"),
    "blimp-supplement": calc._calculate_blimp_results(load("blimp/supplement_filtered"),
                                                      data / "supplement_filtered"),
    "ewok": calc._calculate_ewok_results(load("ewok/ewok_filtered"), data / "ewok_filtered"),
    "entity-tracking": calc._calculate_entity_tracking_results(
        load("entity_tracking/entity_tracking"), data / "entity_tracking"),
    "wug-adj": calc._calculate_wug_results(load("wug_adj/wug_adj_nominalization"),
                                           data / "wug_adj_nominalization"),
    "wug-past": calc._calculate_wug_results(load("wug_past/wug_past_tense"),
                                            data / "wug_past_tense"),
    "comps": calc._calculate_comps_results(load("comps/comps"), data / "comps"),
    "reading": calc._calculate_reading_results(load("reading"),
                                               data / "reading" / "reading_data.csv"),
    "per-subtask": {
        "blimp": coll._calculate_target_results(load("blimp/blimp_filtered"), "blimp",
                                                data / "blimp_filtered"),
        "blimp-supplement": coll._calculate_target_results(
            load("blimp/supplement_filtered"), "blimp", data / "supplement_filtered"),
        "ewok": coll._calculate_target_results(load("ewok/ewok_filtered"), "ewok",
                                               data / "ewok_filtered")},
    "glue": calc._calculate_glue_results(
        coll._load_results(Path(job["finetune"]) / "wsc" / "predictions.json"),
        Path(job["glue"])),
    "sizes": {"full": coll.FULL_SIZES, "fast": coll.FAST_SIZES, "aoa": coll.AOA_SIZE,
              "strict-small": coll.STRICT_SMALL_FAST_REVISIONS,
              "strict": coll.OTHER_FAST_REVISIONS},
}
json.dump(out, open(job["out"], "w"))
"""


# ----------------------------------------------------------------------------- helpers
def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def write_rows(path: Path, items) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


def comps_rows(n: int, seed: int) -> list[dict]:
    """Rows in COMPS's format (its data has no public copy)."""
    rng = random.Random(seed)
    nouns = ["robin", "stone", "dog", "cup", "whale", "chair", "bee", "spoon"]
    props = ["can fly", "has fur", "lives in water", "can sting", "is hard", "can bark"]
    out = []
    for _ in range(n):
        a, b = rng.sample(nouns, 2)
        out.append({"prefix_acceptable": f"A {a}", "prefix_unacceptable": f"A {b}",
                    "property_phrase": rng.choice(props)})
    return out


def stand_in(folder: Path, answer: str, rng: random.Random, files=None) -> dict:
    """Predictions in the official format for every item of the data in ``folder``, each a
    random one of the item's real options."""
    out: dict[str, dict] = {}
    for f in files or sorted(folder.glob("*.jsonl")):
        for r in rows(f):
            if answer == "option":
                key, options = f"{f.stem}_{r['numops']}_ops", r["options"]
            elif answer == "Target1":
                key, options = f.stem, [" " + r["Target1"], " " + r["Target2"]]
            elif answer == "comps":
                key = {"comps_base": "base", "comps_wugs": "wugs",
                       "comps_wugs_dist-before": "wugs_dist_before",
                       "comps_wugs_dist-in-between": "wugs_dist_in_between"}[f.stem]
                options = [f"{r['prefix_acceptable']} {r['property_phrase']}",
                           f"{r['prefix_unacceptable']} {r['property_phrase']}"]
            else:
                key, options = f.stem, [r["sentence_good"], r["sentence_bad"]]
            items = out.setdefault(key, {"predictions": []})["predictions"]
            items.append({"id": f"{key}_{len(items)}", "pred": rng.choice(options)})
    return out


def printed(text: str) -> dict[str, float]:
    """``NAME\\tscore`` lines of an official report."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([A-Za-z ()]+?)\s+(-?\d+\.\d\d|nan)", line.strip())
        if m:
            found[m.group(1).strip()] = float(m.group(2))
    return found


def section(log: str, name: str) -> str:
    """The output of one job of the driver."""
    start = log.index(f"#### official: {name}\n")
    end = log.find("#### official:", start + 1)
    return log[start:end if end >= 0 else None]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def official_code(data_dir) -> Path:
    return official_pipeline(data_dir, "evaluation_pipeline/collate_preds.py")


@pytest.fixture(scope="module")
def data_roots(data_dir, tmp_path_factory) -> dict[str, Path]:
    """``data``: the data root in minidml's layout, with the stand-ins for the data that has
    no public copy; ``official``: the same as the official ``evaluation_data`` folder;
    ``subset``/``subset_official``: the first items of every full set, in both layouts."""
    tmp = tmp_path_factory.mktemp("submission-data")
    data, official = tmp / "data", tmp / "evaluation_data"
    link(data_dir / "babylm-eval", data / "babylm-eval")
    for name in ("entity_tracking", "wug_adj_nominalization", "reading"):
        link(data_dir / FULL_2026 / name, data / FULL_2026 / name)
    wug = rows(data_dir / FULL_2026 / "wug_adj_nominalization/wug_adj_nominalization.jsonl")
    for half in (FULL_2026, FAST_2026):  # stand-ins: no public copy
        write_rows(data / half / "wug_past_tense/wug_past_tense.jsonl", wug[:50])
    sizes = submission.UNPUBLISHED["comps"]
    for stem, key in (("comps_base", "base"), ("comps_wugs", "wugs"),
                      ("comps_wugs_dist-before", "wugs_dist_before"),
                      ("comps_wugs_dist-in-between", "wugs_dist_in_between")):
        write_rows(data / FULL_2026 / "comps" / f"{stem}.jsonl", comps_rows(sizes[key], 7))
    for name in ("blimp_fast", "supplement_fast", "ewok_fast", "wug_adj_nominalization",
                 "reading"):
        link(data_dir / FAST_2026 / name, data / FAST_2026 / name)
    link(data_dir / FULL_2026 / "entity_tracking/regular.jsonl",
         data / FAST_2026 / "entity_tracking_fast/regular.jsonl")
    for name in ("blimp_filtered", "supplement_filtered", "ewok_filtered", "glue_filtered"):
        link(data / "babylm-eval" / name, official / "full_eval" / name)
    for name in ("entity_tracking", "wug_adj_nominalization", "wug_past_tense", "comps",
                 "reading"):
        link(data / FULL_2026 / name, official / "full_eval" / name)
    link(data / FAST_2026, official / "fast_eval")

    subset, subset_official = tmp / "subset", tmp / "subset-official"
    keep = {"babylm-eval/blimp_filtered": ("blimp_filtered", 3),
            "babylm-eval/supplement_filtered": ("supplement_filtered", 30),
            "babylm-eval/ewok_filtered": ("ewok_filtered", 12),
            f"{FULL_2026}/wug_adj_nominalization": ("wug_adj_nominalization", 120),
            f"{FULL_2026}/wug_past_tense": ("wug_past_tense", 50),
            f"{FULL_2026}/comps": ("comps", 15)}
    for rel, (name, n) in keep.items():
        for f in sorted((data / rel).glob("*.jsonl")):
            with f.open(encoding="utf-8") as lines:
                (subset / rel).mkdir(parents=True, exist_ok=True)
                (subset / rel / f.name).write_text("".join(itertools.islice(lines, n)),
                                                   encoding="utf-8")
        link(subset / rel, subset_official / "full_eval" / name)
    for f in sorted((data / FULL_2026 / "entity_tracking").glob("*.jsonl")):
        per: dict[int, int] = {}
        kept = []
        for r in rows(f):  # the first 3 items of each number of operations
            per[r["numops"]] = per.get(r["numops"], 0) + 1
            if per[r["numops"]] <= 3:
                kept.append(r)
        write_rows(subset / FULL_2026 / "entity_tracking" / f.name, kept)
    link(subset / FULL_2026 / "entity_tracking", subset_official / "full_eval/entity_tracking")
    csv = (data / FULL_2026 / "reading/reading_data.csv").read_text(encoding="utf-8")
    (subset / FULL_2026 / "reading").mkdir(parents=True)
    (subset / FULL_2026 / "reading/reading_data.csv").write_text(
        "".join(csv.splitlines(keepends=True)[:301]), encoding="utf-8")
    link(subset / FULL_2026 / "reading", subset_official / "full_eval/reading")
    link(data / "babylm-eval/glue_filtered", subset / "babylm-eval/glue_filtered")
    link(data / "babylm-eval/glue_filtered_2025_extra",
         subset / "babylm-eval/glue_filtered_2025_extra")
    link(data / "babylm-eval/glue_filtered", subset_official / "full_eval/glue_filtered")
    return {"data": data, "official": official, "subset": subset,
            "subset_official": subset_official}


@pytest.fixture(scope="module")
def student(data_dir, tmp_path_factory):
    """A one-student run on real text, with a checkpoint at 1,000 words seen (``chck_1k``)."""

    import minidml
    from minidml import Shape, TrainConfig

    root = tmp_path_factory.mktemp("submission-run")
    corpus = real_text_corpus(data_dir, root / "corpus.txt")
    cfg = TrainConfig(students=(Shape(1, 32, 2),), mode="single", vocab_size=1200, lr=3e-3,
                      context=64, batch_size=4, warmup_steps=2, eval_every=8, eval_tokens=512,
                      steps=10, checkpoint_words=(1000,))
    return minidml.train(corpus, root / MODEL, cfg)


def one_blas_thread():
    """numpy's BLAS on one thread, where threadpoolctl is installed: the reading fits are
    small, and a BLAS thread waiting for a busy core makes each of them many times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


@pytest.fixture(scope="module")
def made(require_extra, student, data_roots, official_code, tmp_path_factory):
    """minidml's predictions and results, the stand-ins, both collations and the official
    scripts' outputs."""
    require_extra("babylm", "pandas", "statsmodels", "scipy")
    with one_blas_thread():
        return _made(student, data_roots, official_code, tmp_path_factory)


def _made(student, data_roots, official_code, tmp_path_factory):
    from minidml.rundir import checkpoints, revisions
    from minidml_plugins.harness import offline_env

    tmp = tmp_path_factory.mktemp("submission")
    data, results, subset_results = data_roots["data"], tmp / "results", tmp / "subset-results"
    env = {**offline_env(tmp / "hf-home"), "PYTHONDONTWRITEBYTECODE": "1",
           **dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")}
    log = (tmp / "official.log").open("w")
    jobs_file = tmp / "jobs.json"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(jobs_file)], cwd=official_code,
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        return _make(student, data_roots, tmp, data, results, subset_results, jobs_file, proc,
                     checkpoints, revisions)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def _make(student, data_roots, tmp, data, results, subset_results, jobs_file, proc,
          checkpoints, revisions):
    (step,) = [int(c.name.split("-")[1]) for c in checkpoints(student.path) if revisions(c)]
    runs = {  # the fast sets at main fill the full wug and reading files too (the same data)
        "main": [*[a for s in FAST_SUITES + ("wug-adj",) for a in ("--suite", s)],
                 "--data-dir", data, "--babylm-results", results],
        "revision": ["--step", step, "--suite", "wug-adj-fast", "--data-dir", data,
                     "--babylm-results", results],
        "subset": [*[a for s in ("blimp", "blimp-supplement", "ewok", "entity-tracking",
                                 "wug-adj", "wug-past", "comps", "reading", "glue")
                     for a in ("--suite", s)], "--glue-set", "2026", "--glue-tasks", "wsc",
                   "--data-dir", data_roots["subset"], "--babylm-results", subset_results],
    }
    reported, said = {}, {}

    def evaluate(name: str) -> None:
        code, out, err = cli("eval", student.path, *runs[name], "--output", tmp / f"{name}.json",
                             "-q")
        assert code == 0, err
        reported[name] = json.loads((tmp / f"{name}.json").read_text())
        said[name] = out

    evaluate("main")
    evaluate("revision")

    # the stand-ins, and the 19 revisions of a strict-small submission (main's fast sets)
    rng = random.Random(0)
    base = results / MODEL
    zero = base / MAIN / "zero_shot" / "causal"
    write_json(zero / "blimp/blimp_filtered/predictions.json",
               stand_in(data / "babylm-eval/blimp_filtered", "sentence_good", rng))
    write_json(zero / "blimp/supplement_filtered/predictions.json",
               stand_in(data / "babylm-eval/supplement_filtered", "sentence_good", rng))
    write_json(zero / "ewok/ewok_filtered/predictions.json",
               stand_in(data / "babylm-eval/ewok_filtered", "Target1", rng))
    write_json(zero / "entity_tracking/entity_tracking/predictions.json",
               stand_in(data / FULL_2026 / "entity_tracking", "option", rng))
    write_json(zero / "comps/comps/predictions.json",
               stand_in(data / FULL_2026 / "comps", "comps", rng))
    revisions_ = [f"chck_{i}M" for i in (*range(1, 10), *range(10, 101, 10))]
    write_json(zero / "AoA_word/surprisal.json",
               {"results": [{"step": r} for r in revisions_ for _ in range(8005)]})
    for task in GLUE_TASKS:
        n = len(rows(data / f"babylm-eval/glue_filtered/{task}.valid.jsonl"))
        write_json(base / MAIN / "finetune" / task / "predictions.json", {task: {"predictions": [
            {"id": f"{task}_{i}", "pred": rng.randrange(3 if task == "mnli" else 2)}
            for i in range(n)]}})
    regular = data / FAST_2026 / "entity_tracking_fast" / "regular.jsonl"
    for k, revision in enumerate(revisions_):
        for t in FAST:
            path = t.path(results, MODEL, revision)
            path.parent.mkdir(parents=True, exist_ok=True)
            if t.suite == "entity-tracking-fast":
                write_json(path, stand_in(regular.parent, "option", random.Random(k), [regular]))
            else:
                os.link(t.path(results, MODEL, MAIN), path)
    # what calculate_results_from_pred.py --fast reads, which no official script writes
    write_json(base / revisions_[0] / "all_fast_preds_causal.json", {
        t.key: json.loads(t.path(results, MODEL, revisions_[0]).read_text()) for t in FAST})

    # the official scripts, on a copy (they write where minidml's collation writes)
    theirs = tmp / "official-results"
    shutil.copytree(results, theirs, copy_function=os.link)
    collated = str(theirs / MODEL / COLLATED)
    common = ["--model_path_or_name", MODEL, "--backend", "causal", "--results_dir",
              str(theirs)]
    calc = "evaluation_pipeline/calculate_results_from_pred.py"
    functions_job = tmp / "functions-job.json"
    jobs = [
        {"name": "collate-fast", "kind": "module", "target": "evaluation_pipeline.collate_preds",
         "argv": [*common, "--track", "strict-small", "--fast", "--fast_eval_dir",
                  str(data / FAST_2026)],
         "then": [["move", collated, str(tmp / "official-fast.json")],
                  # calculate_results_from_pred.py reads it as all_full_preds_causal.json
                  ["copy", str(tmp / "official-fast.json"),
                   str(theirs / MODEL / MAIN / "all_full_preds_causal.json")]]},
        {"name": "calculate-fast", "kind": "script", "target": calc,
         "argv": [*common, "--evaluation_data_dir", str(data_roots["official"]), "--fast",
                  "--revision_name", revisions_[0]]},
        {"name": "calculate", "kind": "script", "target": calc,
         "argv": [*common, "--evaluation_data_dir", str(data_roots["official"])]},
        {"name": "functions", "kind": "code", "after": str(functions_job),
         "target": f"JOB = {str(functions_job)!r}\n" + FUNCTIONS, "argv": []},
    ]
    write_json(tmp / "jobs.tmp", jobs)
    os.replace(tmp / "jobs.tmp", jobs_file)  # the driver starts on it

    # meanwhile: the full sets' first items, and minidml's collations
    evaluate("subset")
    write_json(tmp / "functions.tmp", {
        "results": str(subset_results / MODEL / MAIN / "zero_shot" / "causal"),
        "data": str(data_roots["subset_official"] / "full_eval"),
        "finetune": str(subset_results / MODEL / MAIN / "finetune"),
        "glue": str(data_roots["subset_official"] / "full_eval" / "glue_filtered"),
        "out": str(tmp / "functions.json")})
    os.replace(tmp / "functions.tmp", functions_job)
    ours = {}
    for name, flag in (("plain", []), ("fast", ["--fast"])):
        code, out, err = cli("babylm", "collate", results, "--model", MODEL, "--track",
                             "strict-small", *flag, "--data-dir", data)
        assert code == 0, err
        ours[name] = (tmp / f"minidml-{name}.json", out)
        shutil.move(base / COLLATED, ours[name][0])
    code = proc.wait(timeout=600)
    text = (tmp / "official.log").read_text()
    assert code == 0, text[-4000:]
    return {"tmp": tmp, "results": results, "subset_results": subset_results, "log": text,
            "reported": reported, "said": said, "ours": ours, "revisions": revisions_}


# ----------------------------------------------------------------------------- the proof
@pytest.mark.slow
def test_minidml_files_predictions_where_the_official_collation_reads_them(made):
    results = made["results"]
    # no --step: the final model, main; --step N: the checkpoint's revision (its words.json)
    for t in FAST:
        if t.suite != "entity-tracking-fast":
            assert t.path(results, MODEL, MAIN).is_file(), t
    assert f"6 files under {results / MODEL} (main)" in made["said"]["main"]
    wug = submission.TARGETS["wug-adj-fast"].path(results, MODEL, REVISION)
    assert f"1 file under {results / MODEL} ({REVISION})" in made["said"]["revision"]
    assert wug.is_file() and len(list((results / MODEL / REVISION).rglob("*.json"))) == 1
    blimp = json.loads(FULL[0].path(made["subset_results"], MODEL, MAIN).read_text())
    assert [p["id"] for p in blimp["adjunct_island"]["predictions"]] == [
        "adjunct_island_0", "adjunct_island_1", "adjunct_island_2"]


@pytest.mark.slow
def test_the_official_code_scores_minidmls_predictions_as_minidml_does(made):
    """Every full zero-shot task, on the first items of each file: each subtask's accuracy,
    each task's score."""
    theirs = json.loads((made["tmp"] / "functions.json").read_text())
    per = made["reported"]["subset"]["results"][STUDENT]
    groups = made["reported"]["subset"]["groups"][STUDENT]
    for suite, accs in theirs["per-subtask"].items():
        assert accs.keys() == {n.split("/", 1)[1] for n in per if n.startswith(suite + "/")}
        for sub, acc in accs.items():
            assert acc == pytest.approx(per[f"{suite}/{sub}"]["acc"], abs=1e-12), (suite, sub)
    for suite in ("blimp", "blimp-supplement", "ewok", "entity-tracking", "comps"):
        assert theirs[suite] == pytest.approx(100 * groups[suite]["score"], abs=EXACT), suite
    for suite, task in (("wug-adj", "wug_adj"), ("wug-past", "wug_past")):
        assert theirs[suite] == pytest.approx(100 * per[f"{suite}/{task}"]["rho"], abs=EXACT)
    spr, eye = theirs["reading"]
    assert spr == pytest.approx(100 * per["reading/self_paced_reading"]["rel_delta_r2"],
                                abs=1e-6)
    assert eye == pytest.approx(100 * per["reading/eye_tracking"]["rel_delta_r2"], abs=1e-6)
    # fine-tuning (wsc, by the official recipe): the official GLUE score of minidml's file
    assert theirs["glue"] == pytest.approx(100 * per["glue/wsc"]["acc"], abs=EXACT)
    assert made["reported"]["subset"]["suites"]["glue"]["settings"] == {
        "glue_set": "2026", "overrides": []}


@pytest.mark.slow
def test_the_official_collation_scores_the_fast_sets_as_minidml_does(made):
    official = json.loads((made["tmp"] / "official-fast.json").read_text())["fast_eval_results"]
    per = made["reported"]["main"]["results"][STUDENT]
    groups = made["reported"]["main"]["groups"][STUDENT]
    assert all(len(v) == len(made["revisions"]) for v in official.values())
    for k in range(len(made["revisions"])):  # each revision holds main's fast sets
        for key, suite in (("blimp", "blimp-fast"), ("blimp_supplement", "supplement-fast"),
                           ("ewok", "ewok-fast")):
            got = official[key][k]
            assert got.keys() == {n.split("/", 1)[1] for n in per if n.startswith(suite + "/")}
            for sub, acc in got.items():
                assert acc == pytest.approx(per[f"{suite}/{sub}"]["acc"], abs=1e-12), sub
        for key, suite in (("wug_adj", "wug-adj-fast"), ("wug_past", "wug-past-fast")):
            assert official[key][k] == {key: pytest.approx(per[f"{suite}/{key}"]["rho"],
                                                           abs=1e-12)}
        reading = official["reading"][k]
        assert reading["spr"] == pytest.approx(
            per["reading-fast/self_paced_reading"]["rel_delta_r2"], abs=EXACT)
        assert reading["rt"] == pytest.approx(
            per["reading-fast/eye_tracking"]["rel_delta_r2"], abs=EXACT)
    # calculate_results_from_pred.py --fast prints each task's score (2 decimals)
    shown = printed(section(made["log"], "calculate-fast"))
    for label, suite in (("BLIMP", "blimp-fast"), ("SUPPLEMENT", "supplement-fast"),
                         ("EWOK", "ewok-fast")):
        assert shown[label] == pytest.approx(100 * groups[suite]["score"], abs=PRINTED)
    assert shown["WUG ADJ"] == pytest.approx(100 * per["wug-adj-fast/wug_adj"]["rho"],
                                             abs=PRINTED)
    assert shown["WUG PAST"] == pytest.approx(100 * per["wug-past-fast/wug_past"]["rho"],
                                              abs=PRINTED)
    assert shown["READING (SPR)"] == pytest.approx(
        100 * per["reading-fast/self_paced_reading"]["rel_delta_r2"], abs=PRINTED)
    assert shown["READING (ET)"] == pytest.approx(
        100 * per["reading-fast/eye_tracking"]["rel_delta_r2"], abs=PRINTED)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # NaN
        return True
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_minidml_collate_writes_the_official_collated_file(made):
    tmp = made["tmp"]
    # byte for byte, but for the fast sets' scores: the official --fast file is the plain one
    # with them added last
    plain = made["ours"]["plain"][0].read_bytes()
    official = (tmp / "official-fast.json").read_bytes()
    assert plain.endswith(b"}}") and official.startswith(plain[:-1] + b', "fast_eval_results": ')
    mine = json.loads(made["ours"]["fast"][0].read_text())
    assert made["ours"]["fast"][0].read_bytes().startswith(plain[:-1])
    theirs = json.loads(official)
    fast_mine, fast_theirs = mine.pop("fast_eval_results"), theirs.pop("fast_eval_results")
    assert json.dumps(mine) == json.dumps(theirs)
    assert list(fast_mine) == list(fast_theirs)
    for key, per_revision in fast_theirs.items():
        assert len(fast_mine[key]) == len(per_revision)
        for a, b in zip(fast_mine[key], per_revision, strict=True):
            assert list(a) == list(b), key
            assert all(_close(a[s], b[s]) for s in b), (key, a, b)
    # the stand-in entity-tracking predictions differ per revision: the lists are in order
    assert len({json.dumps(r) for r in fast_theirs["entity_tracking"]}) > 1


@pytest.mark.slow
def test_a_model_trained_on_fewer_words_is_collated_through_its_last_revision(
        made, data_roots, tmp_path, capsys):
    """The rules require the checkpoints up to the one trained ("if you only train for 20M
    words … 1M, 2M, …, 10M, 20M"): --through collates those, the official file as the
    official script gives it for them (its fast lists' first entries), the AoA file covering
    just them; without it the first missing revision's line says how."""
    results = tmp_path / "results"
    shutil.copytree(made["results"], results, copy_function=os.link)
    base = results / MODEL
    (base / COLLATED).unlink(missing_ok=True)
    kept = made["revisions"][:2]
    for revision in made["revisions"][2:]:
        shutil.rmtree(base / revision)
    aoa = base / MAIN / "zero_shot" / "causal" / "AoA_word" / "surprisal.json"
    rows_ = [r for r in json.loads(aoa.read_text())["results"] if r["step"] in kept]
    aoa.unlink()
    write_json(aoa, {"results": rows_})
    data = ["--data-dir", data_roots["data"]]
    code, _, err = run_cli("babylm", "collate", results, "--model", MODEL, "--track",
                           "strict-small", "--fast", *data, capsys=capsys)
    assert_one_line_error(code, err, made["revisions"][2], "--through its last revision")
    code, _, err = run_cli("babylm", "collate", results, "--model", MODEL, "--track",
                           "strict-small", "--fast", "--through", "chck_25M", *data,
                           capsys=capsys)
    assert_one_line_error(code, err, "--through chck_25M", "chck_20M")
    assert not (base / COLLATED).exists()
    code, out, err = run_cli("babylm", "collate", results, "--model", MODEL, "--track",
                             "strict-small", "--fast", "--through", kept[-1], *data,
                             capsys=capsys)
    assert code == 0, err
    mine = json.loads((base / COLLATED).read_text())
    theirs = json.loads((made["tmp"] / "official-fast.json").read_text())
    assert mine.pop("aoa") == {"results": rows_}
    theirs.pop("aoa")
    fast_mine, fast_theirs = mine.pop("fast_eval_results"), theirs.pop("fast_eval_results")
    assert json.dumps(mine) == json.dumps(theirs)
    assert list(fast_mine) == list(fast_theirs)
    for key, per_revision in fast_theirs.items():
        assert len(fast_mine[key]) == len(kept)
        for a, b in zip(fast_mine[key], per_revision[:len(kept)], strict=True):
            assert list(a) == list(b) and all(_close(a[k], b[k]) for k in b), key
    assert all(r in out for r in kept) and made["revisions"][2] not in out


@pytest.mark.slow
def test_minidml_collate_prints_the_official_reports_scores(made):
    log = section(made["log"], "calculate")
    # the official report goes as far as AoA, whose data (cdi_human.csv) is not public
    assert "#### failed: FileNotFoundError" in log and "cdi_human.csv" in log, log[-2000:]
    theirs = printed(log)
    mine = printed(made["ours"]["plain"][1])
    labels = ("BLIMP", "SUPPLEMENT", "EWOK", "ENTITY TRACKING", "WUG ADJ", "WUG PAST", "COMPS",
              "READING (SPR)", "READING (ET)", "GLUE")
    assert set(labels) <= theirs.keys()
    for label in labels:  # both rounded to two decimals
        assert mine[label] == pytest.approx(theirs[label], abs=2 * PRINTED), label
    # the final model's own predictions: the scores minidml reported for them
    per = made["reported"]["main"]["results"][STUDENT]
    assert theirs["WUG ADJ"] == pytest.approx(100 * per["wug-adj/wug_adj"]["rho"], abs=PRINTED)
    # (the fast wug past tense and reading sets are the full ones)
    assert theirs["WUG PAST"] == pytest.approx(100 * per["wug-past-fast/wug_past"]["rho"],
                                               abs=PRINTED)
    assert theirs["READING (SPR)"] == pytest.approx(
        100 * per["reading-fast/self_paced_reading"]["rel_delta_r2"], abs=PRINTED)
    assert theirs["READING (ET)"] == pytest.approx(
        100 * per["reading-fast/eye_tracking"]["rel_delta_r2"], abs=PRINTED)
    assert "fast sets" in made["ours"]["fast"][1] and "chck_100M" in made["ours"]["fast"][1]


@pytest.mark.slow
def test_minidml_checks_the_official_counts(made, data_roots):
    sizes = json.loads((made["tmp"] / "functions.json").read_text())["sizes"]
    for t in (*FULL, *FAST):
        want = (sizes["fast"] if t.fast else sizes["full"]).get(t.key)
        if want is None:
            continue
        got = submission.expected_sizes(t.suite, data_roots["data"])
        if isinstance(want, dict) or isinstance(got, int):
            assert got == want, t.suite
        else:  # one count for each subtask of the fast set
            assert set(got.values()) == {want}, t.suite
    assert sizes["aoa"] == submission.AOA_WORDS
    assert sizes["strict-small"] == submission.track_revisions("strict-small")
    assert sizes["strict"] == submission.track_revisions("strict")
    assert submission.track_revisions("interaction") == sizes["strict"]


# ----------------------------------------------------------------------------- bad input
def _results_folder(root: Path) -> Path:
    (root / "m" / MAIN).mkdir(parents=True)
    return root


def test_collate_names_a_missing_task_and_writes_nothing(tmp_path, capsys, data_dir):
    results = _results_folder(tmp_path / "r")
    code, out, err = run_cli("babylm", "collate", results, "--model", "m", capsys=capsys)
    assert_one_line_error(code, err, "blimp/blimp_filtered/predictions.json: missing",
                          "--suite blimp --babylm-results")
    assert not (results / "m" / COLLATED).exists()
    code, out, err = run_cli("babylm", "collate", results, "--model", "other", capsys=capsys)
    assert_one_line_error(code, err, str(results / "other"), "--model")


def test_collate_refuses_an_unknown_track_and_an_existing_output(tmp_path, capsys):
    results = _results_folder(tmp_path / "r")
    code, _, err = run_cli("babylm", "collate", results, "--model", "m", "--track",
                           "multimodal", capsys=capsys)
    assert_one_line_error(code, err, "--track multimodal", "strict-small")
    (results / "m" / COLLATED).write_text("kept")
    code, _, err = run_cli("babylm", "collate", results, "--model", "m", capsys=capsys)
    assert_one_line_error(code, err, COLLATED, "already exists", "--force")
    assert (results / "m" / COLLATED).read_text() == "kept"


def test_collate_refuses_a_file_of_the_wrong_size(tmp_path, capsys, data_dir):
    results = _results_folder(tmp_path / "r")
    for t in FULL:
        write_json(t.path(results, "m", MAIN), {})
    write_json(results / "m" / MAIN / "zero_shot/causal/AoA_word/surprisal.json", {})
    for task in GLUE_TASKS:
        write_json(results / "m" / MAIN / "finetune" / task / "predictions.json", {})
    blimp = FULL[0].path(results, "m", MAIN)
    write_json(blimp, {"adjunct_island": {"predictions": [{"id": "adjunct_island_0",
                                                           "pred": "x"}]}})
    code, _, err = run_cli("babylm", "collate", results, "--model", "m", "--data-dir",
                           data_dir, capsys=capsys)
    assert_one_line_error(code, err, str(blimp), "'adjunct_island' has 1 predictions",
                          "--limit")
    assert not (results / "m" / COLLATED).exists()


def test_collate_refuses_a_prediction_that_is_not_a_number_where_scores_read_one(tmp_path):
    """A wug item's prob and a reading item's pred and prev_pred are read as numbers (NaN is
    one: the official reading file's first words have no previous word's)."""
    path = tmp_path / "predictions.json"
    check = submission._check_predictions
    wug = ("pred", "prob")
    check(path, {"wug_adj": {"predictions": [{"id": 0, "pred": "a", "prob": 0.5}]}}, 1, wug)
    for bad in (None, "0.5", True):
        with pytest.raises(MinidmlError, match=r"prediction 0 of 'wug_adj' has prob .*, not a "
                                               r"number; evaluate the task again"):
            check(path, {"wug_adj": {"predictions": [{"id": 0, "pred": "a", "prob": bad}]}},
                  1, wug)
    reading = ("pred", "prev_pred")
    ok = {"reading": {"predictions": [{"id": 0, "pred": 1.5, "prev_pred": math.nan}]}}
    check(path, ok, 1, reading)
    with pytest.raises(MinidmlError, match="has prev_pred null, not a number"):
        check(path, {"reading": {"predictions": [{"id": 0, "pred": 1.5, "prev_pred": None}]}},
              1, reading)


def test_eval_checks_where_predictions_go_before_any_work(tiny_run, tmp_path, capsys):
    from minidml.rundir import checkpoint_steps

    out = tmp_path / "results"
    step = checkpoint_steps(tiny_run.path)[-1]
    cases = [
        (["--suite", "blimp", "--protocol", "lm-eval"], ["--protocol lm-eval"]),
        (["--suite", "agreement"], ["--babylm-results", "babylm-2026"]),
        (["--suite", "glue"], ["--glue-set 2026"]),
        (["--suite", "glue", "--glue-set", "2026", "--epochs", "1"], ["epochs", "drop"]),
        (["--suite", "blimp", "--student", "all"], ["--student all", "one model"]),
        (["--suite", "blimp", "--step", step, "--student", "0"],
         [f"--step {step}", "no revision"]),
    ]
    for args, needles in cases:
        code, _, err = run_cli("eval", tiny_run.path, *args, "--babylm-results", out,
                               capsys=capsys)
        assert_one_line_error(code, err, *needles)
        assert not out.exists()


def test_champion_files_the_final_checkpoints_champion_at_every_revision(
        grammar_corpus, data_dir, tmp_path, capsys, monkeypatch):
    """`minidml export --revisions` uploads one student at every revision, the final
    checkpoint's champion: `--student champion --babylm-results` files that student's
    predictions at every revision too, though an earlier checkpoint's own champion differ."""
    import minidml
    from minidml import Shape, TrainConfig
    from minidml.rundir import Run

    cfg = TrainConfig(students=(Shape(1, 32, 2), Shape(1, 48, 2)), context=32, batch_size=8,
                      vocab_size=400, warmup_steps=2, eval_every=5, eval_tokens=1024,
                      steps=12, checkpoint_words=(300,))
    run = minidml.train(grammar_corpus, tmp_path / "two", cfg)
    final = run.step
    monkeypatch.setattr(Run, "champion", property(lambda r: 1 if r.step == final else 0))
    filed, said = {}, {}
    for student in ("champion", "1"):
        out = tmp_path / f"results-{student}"
        code, _, err = run_cli("eval", run.path, "--step", "all", "--suite", "blimp-fast",
                               "--limit", "4", "--student", student, "--data-dir", data_dir,
                               "--babylm-results", out, "-q", capsys=capsys)
        assert code == 0, err
        filed[student] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.json")}
        said[student] = err
    assert len({p.parts[1] for p in filed["1"]}) == 2  # chck_300 and main
    assert filed["champion"] == filed["1"]
    assert "--student champion: student 1, the final checkpoint's" in said["champion"]


def test_an_exported_revision_is_filed_under_its_name(tmp_path):
    out = tmp_path / "my-model"
    for name in ("chck_1M", MAIN):
        write_json(out / name / "config.json", {"architectures": ["LlamaForCausalLM"]})
    write_json(out / "revisions.json", {"revisions": {"chck_1M": {"step": 3}, MAIN: {}}})
    assert submission.revision_plan(out / "chck_1M", [None], hf=True) == (
        "my-model", [["chck_1M"]])
    assert submission.revision_plan(out / MAIN, [None], hf=True) == ("my-model", [[MAIN]])
    other = tmp_path / "elsewhere"
    write_json(other / "config.json", {"architectures": ["LlamaForCausalLM"]})
    assert submission.revision_plan(other, [None], hf=True) == ("elsewhere", [[MAIN]])


def test_each_item_holds_the_choice_the_official_pipeline_reports():
    from minidml.evaluation.suite import Choices, Pair, Sample

    T = submission.TARGETS
    pair = Pair("good.", "bad.", "Ann is kind.")
    ewok = [Sample("social-relations", 0, pair, {STUDENT: (-5.0, -3.0)}),
            Sample("social-relations", 1, pair, {STUDENT: (-3.0, -3.0)})]
    assert submission.predictions(T["ewok"], ewok, STUDENT) == {"social-relations": {
        "predictions": [{"id": "social-relations_0", "pred": " bad."},
                        {"id": "social-relations_1", "pred": " good."}]}}  # ties: the first
    comps = [Sample("base", 0, Choices(("can fly",) * 2, ("A robin ", "A stone "), ""),
                    {STUDENT: (-9.0, -1.0)})]
    assert submission.predictions(T["comps"], comps, STUDENT)["base"]["predictions"] == [
        {"id": "base_0", "pred": "A stone can fly"}]
    et = [Sample("regular_0_ops", 0, Choices(("the apple.", "nothing."), ("Box 1 contains ",) * 2,
                                             ""), {STUDENT: (-1.0, -2.0)})]
    assert submission.predictions(T["entity-tracking"], et, STUDENT)["regular_0_ops"] == {
        "predictions": [{"id": "regular_0_ops_0", "pred": "the apple."}]}
    wug = [Sample("wug_adj", 0, Pair("A -ity.", "A -ness."), {STUDENT: (-2.0, -1.0)})]
    (item,) = submission.predictions(T["wug-adj"], wug, STUDENT)["wug_adj"]["predictions"]
    assert item["pred"] == "A -ness." and item["prob"] == pytest.approx(0.2689414, abs=1e-6)
