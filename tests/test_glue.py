"""The glue suite: metrics, encoding, options, and fine-tuning runs that really learn; the
2026 set against the official pipeline's own defaults script, argparse defaults and head."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import random
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

import minidml_plugins.glue as glue
import minidml_plugins.glue_tasks as glue_tasks
from minidml import MinidmlError, Student, StudentConfig, Tokenizer, TrainConfig
from minidml.evaluation.plugins import make_manager, suites
from minidml.evaluation.scoring import Scorer
from minidml.evaluation.suite import EvalContext
from minidml.rundir import Run

from _helpers import official_pipeline

WORDS = ("the", "a", "dog", "cat", "bird", "sees", "likes", "runs", "near", "big", "small",
         "red", "old", "house", "tree", "park", "with", "and")
MARKERS = ("zebra", "lion")


def sentence(rng: random.Random, *extra: str) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
    for w in extra:
        words.insert(rng.randint(0, len(words)), w)
    return " ".join(words)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    rng = random.Random(0)
    lines = [sentence(rng, *rng.sample(MARKERS, rng.randint(0, 2))) for _ in range(400)]
    return Tokenizer.train(lines)


def make_run(tokenizer: Tokenizer, k: int = 1, omega: list[float] | None = None) -> Run:
    torch.manual_seed(0)
    students = [Student(StudentConfig(vocab_size=tokenizer.vocab_size, n_layers=1,
                                      d_model=32 + 16 * i, n_heads=2, context=64))
                for i in range(k)]
    w = torch.tensor(omega) if omega is not None else torch.full((k,), 1.0 / k)
    return Run(Path("run"), TrainConfig(), tokenizer, students, w, 0)


def make_ctx(run: Run, root: Path, labels: list[str] | None = None, limit: int | None = None,
             **options) -> EvalContext:
    labels = labels or [f"student-{i}" for i in range(len(run.students))]
    return EvalContext(run, Scorer(run.students, run.tokenizer, run.omega, labels=labels),
                       labels, root, limit=limit, options=options, suite="glue")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def zebra_rows(n: int, seed: int) -> list[dict]:
    """sst2 layout; label 1 iff the sentence contains "zebra" (balanced: chance is 0.5)."""
    rng = random.Random(seed)
    return [{"sentence": sentence(rng, *(["zebra"] if i % 2 else [])), "label": i % 2,
             "idx": i} for i in range(n)]


def nli_rows(n: int, seed: int) -> list[dict]:
    """mnli layout; label 0 if the hypothesis holds "zebra", 1 if "lion", else 2."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 3
        hyp = sentence(rng, *([MARKERS[y]] if y < 2 else []))
        rows.append({"premise": sentence(rng), "hypothesis": hyp, "label": y, "idx": i})
    return rows


@pytest.fixture
def zebra_root(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / glue_tasks.DIR / "sst2.train.jsonl", zebra_rows(512, 1))
    write_jsonl(tmp_path / glue_tasks.DIR / "sst2.valid.jsonl", zebra_rows(100, 2))
    return tmp_path


FAST = {"tasks": ["sst2"], "lr": 3e-3, "epochs": 4, "finetune_batch_size": 32}


# ----------------------------------------------------------------------------- metrics
def test_mcc_and_f1_hand_computed():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]  # tp 2, fp 1, fn 1, tn 2
    assert glue_tasks.mcc(pred, gold) == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    assert glue_tasks.f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    pred, gold = [1, 1, 1, 0], [1, 0, 0, 0]  # tp 1, fp 2, fn 0, tn 1
    assert glue_tasks.mcc(pred, gold) == pytest.approx((1 * 1 - 2 * 0) / math.sqrt(3 * 1 * 3 * 1))
    assert glue_tasks.f1(pred, gold) == pytest.approx(2 / 4)
    assert glue_tasks.mcc([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert glue_tasks.mcc([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    assert glue_tasks.f1([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)


def test_mcc_and_f1_degenerate_cases():
    assert glue_tasks.mcc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # all predictions one class
    assert glue_tasks.mcc([0, 0, 0, 0], [1, 0, 1, 0]) == 0.0
    assert glue_tasks.mcc([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0  # all labels one class
    assert glue_tasks.f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives at all
    assert glue_tasks.f1([0, 0, 0], [1, 1, 0]) == 0.0  # no predicted positives
    assert glue_tasks.f1([1, 1, 0], [0, 0, 0]) == 0.0  # no true positives


def test_mcc_is_the_correlation_of_binary_vectors():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pred, gold = torch.randint(2, (200,), generator=gen), torch.randint(2, (200,),
                                                                            generator=gen)
        r = torch.corrcoef(torch.stack([pred, gold]).double())[0, 1]
        assert glue_tasks.mcc(pred, gold) == pytest.approx(float(r), abs=1e-12)


def test_task_metrics_primary_and_bootstrap_stderr():
    pred = torch.tensor([1, 1, 0, 0, 1, 0] * 10)
    gold = torch.tensor([1, 0, 0, 1, 1, 0] * 10)
    m = glue_tasks.task_metrics(glue_tasks.TASKS["cola"], pred, gold)
    assert m["mcc"] == pytest.approx(1 / 3) and m["acc"] == pytest.approx(4 / 6)
    assert 0 < m["mcc_stderr"] < 0.3
    assert m == glue_tasks.task_metrics(glue_tasks.TASKS["cola"], pred, gold)  # seeded
    m = glue_tasks.task_metrics(glue_tasks.TASKS["qqp"], pred, gold)
    assert m["f1"] == pytest.approx(2 / 3) and 0 < m["f1_stderr"] < 0.3
    rte = glue_tasks.task_metrics(glue_tasks.TASKS["rte"], pred, gold)
    assert set(rte) == {"acc", "acc_stderr"}


# ----------------------------------------------------------------------------- encoding
def test_truncation_cuts_the_longer_segment_like_longest_first():
    def reference(a: int, b: int, budget: int) -> tuple[int, int]:
        while a + b > budget:
            if a >= b:
                a -= 1
            else:
                b -= 1
        return a, b

    for a in range(0, 30):
        for b in range(0, 30):
            for budget in (0, 1, 5, 10, 25):
                assert glue.truncated_lengths(a, b, budget) == reference(a, b, budget)


def test_encode_pair_layout_and_length():
    bos, eos = Tokenizer.bos_id, Tokenizer.eos_id
    assert glue.encode_pair([10, 11], [20], 16) == [bos, 10, 11, eos, 20, eos]
    assert glue.encode_pair([10, 11], None, 16) == [bos, 10, 11, eos]
    assert glue.encode_pair(list(range(10, 20)), None, 5) == [bos, 10, 11, 12, eos]
    long, short = list(range(100, 200)), [7, 8, 9]
    ids = glue.encode_pair(long, short, 12)
    assert len(ids) == 12 and ids[-4:] == [eos, 7, 8, 9, eos][-4:] and ids[:3] == [bos, 100, 101]
    assert glue.encode_pair(short, long, 12) == [bos, 7, 8, 9, eos, *range(100, 106), eos]


def test_encode_rows_respects_max_length(tokenizer):
    rng = random.Random(3)
    segs = [(" ".join(sentence(rng) for _ in range(20)), sentence(rng)) for _ in range(5)]
    enc = glue.encode_rows(tokenizer, segs, [0, 1, 0, 1, 0], 32)
    assert all(len(ids) == 32 for ids in enc.ids)
    assert all(ids[0] == Tokenizer.bos_id and ids[-1] == Tokenizer.eos_id for ids in enc.ids)
    assert enc.labels.tolist() == [0, 1, 0, 1, 0]


def test_task_formats():
    row = {"text": "Joe beat him.", "span1_text": "Joe", "span2_text": "him",
           "paragraph": "P.", "question": "Q?", "answer": "A."}
    assert glue_tasks.TASKS["wsc"].segments(row) == ("Joe beat him.", 'Does "him" refer to "Joe"?')
    assert glue_tasks.TASKS["multirc"].segments(row) == ("P.", "Q? A.")
    assert glue_tasks.TASKS["cola"].segments({"sentence": "S."}) == ("S.", None)
    assert [t.n_classes for t in glue_tasks.TASKS.values()].count(3) == 2  # mnli, mnli-mm
    assert {t: s.primary for t, s in glue_tasks.TASKS.items() if s.primary != "acc"} == {
        "cola": "mcc", "mrpc": "f1", "qqp": "f1"}


# ----------------------------------------------------------------------------- options
def test_settings_defaults_and_parsing():
    s = glue.Settings.from_options({})
    assert (s.epochs, s.lr, s.batch_size, s.patience, s.max_length, s.seed) == (
        10, 5e-5, 64, 3, 128, 0)
    assert s.tasks == tuple(glue_tasks.TASKS) and s.max_train_examples is None
    s = glue.Settings.from_options({"tasks": "rte, cola", "epochs": "2", "lr": "1e-3",
                                    "max_train_examples": 8, "other_suite_option": 1})
    assert s.tasks == ("cola", "rte") and s.epochs == 2 and s.lr == 1e-3
    assert s.max_train_examples == 8


@pytest.mark.parametrize("options, message", [
    ({"tasks": ["rte", "nope"]}, "unknown task(s) nope"),
    ({"tasks": []}, "no task given"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": "fast"}, "lr='fast'"),
    ({"patience": 1.5}, "patience=1.5"),
    ({"max_length": 2}, "max_length=2"),
])
def test_bad_options_are_one_line_errors(tokenizer, zebra_root, options, message):
    with pytest.raises(MinidmlError) as e:
        glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), zebra_root, **options))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_labels_are_one_line_errors(tokenizer, zebra_root):
    rows = zebra_rows(10, 5)
    rows[3]["label"] = 7
    write_jsonl(zebra_root / glue_tasks.DIR / "sst2.valid.jsonl", rows)
    with pytest.raises(MinidmlError, match=r"sst2\.valid\.jsonl: row 4: label 7"):
        glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), zebra_root, **FAST))


def test_registered_as_a_plugin():
    spec = suites(make_manager(builtins=("glue",), entry_points=False))["glue"]
    assert spec.requires == ("babylm-eval/glue_filtered",)
    assert spec.sources and all(f.path.startswith(("babylm-eval/glue_filtered/",
                                                   "babylm-eval/glue_filtered_2025_extra/"))
                                for f in spec.sources)
    assert isinstance(spec.factory(), glue.GlueSuite)


# ----------------------------------------------------------------------------- fine-tuning
def test_finetuned_student_learns_and_originals_stay_unchanged(tokenizer, zebra_root):
    run = make_run(tokenizer)
    before = {k: v.clone() for k, v in run.students[0].state_dict().items()}
    control = glue.GlueSuite().evaluate(make_ctx(run, zebra_root, **{**FAST, "lr": 1e-9,
                                                                     "epochs": 1}))
    assert control.tasks["student-0"]["sst2"].score < 0.8  # near chance (0.5) untrained
    result = glue.GlueSuite().evaluate(make_ctx(run, zebra_root, **FAST))
    r = result.tasks["student-0"]["sst2"]
    assert r.n == 100 and r.primary == "acc" and r.score >= 0.9
    assert result.groups == {"glue": ("sst2",)} and result.notes == []
    after = run.students[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in run.students[0].parameters())


def test_limit_caps_validation_and_same_seed_same_result(tokenizer, zebra_root):
    run = make_run(tokenizer)
    opts = {**FAST, "epochs": 1, "max_train_examples": 64}
    a = glue.GlueSuite().evaluate(make_ctx(run, zebra_root, limit=30, **opts))
    b = glue.GlueSuite().evaluate(make_ctx(run, zebra_root, limit=30, **opts))
    assert a.tasks["student-0"]["sst2"].n == 30
    assert a.tasks == b.tasks
    assert a.notes == ["training rows capped at 64 per task (max_train_examples)"]


def test_mnli_mm_uses_the_mnli_model(tokenizer, tmp_path, monkeypatch):
    write_jsonl(tmp_path / glue_tasks.EXTRA_DIR / "mnli.train.jsonl", nli_rows(450, 1))
    write_jsonl(tmp_path / glue_tasks.DIR / "mnli.valid.jsonl", nli_rows(60, 2))
    write_jsonl(tmp_path / glue_tasks.DIR / "mnli-mm.valid.jsonl", nli_rows(60, 3))
    calls = []
    real = glue.finetune

    def spy(student, spec, train, valid, companions, settings, **kw):
        calls.append((spec.name, sorted(companions), len(train)))
        return real(student, spec, train, valid, companions, settings, **kw)

    monkeypatch.setattr(glue, "finetune", spy)
    run = make_run(tokenizer)
    opts = {"lr": 3e-3, "epochs": 5, "finetune_batch_size": 32}
    result = glue.GlueSuite().evaluate(make_ctx(run, tmp_path, tasks=["mnli", "mnli-mm"],
                                                **opts))
    assert calls == [("mnli", ["mnli-mm"], 450)]  # one fine-tuning serves both
    per = result.tasks["student-0"]
    assert per["mnli"].score >= 0.9 and per["mnli-mm"].score >= 0.9
    assert per["mnli-mm"].n == 60 and result.groups == {"glue": ("mnli", "mnli-mm")}
    assert any("glue_filtered_2025_extra/mnli.train.jsonl" in n for n in result.notes)

    calls.clear()
    only = glue.GlueSuite().evaluate(make_ctx(run, tmp_path, tasks="mnli-mm", limit=20,
                                              **{**opts, "epochs": 1}))
    assert calls == [("mnli", ["mnli-mm"], 450)]
    assert list(only.tasks["student-0"]) == ["mnli-mm"]
    assert only.groups == {"glue": ("mnli-mm",)}


def test_missing_training_files_are_noted_not_scored(tokenizer, zebra_root):
    write_jsonl(zebra_root / glue_tasks.DIR / "boolq.valid.jsonl",
                [{"question": "q", "passage": "p", "idx": 0, "label": True}])
    write_jsonl(zebra_root / glue_tasks.DIR / "mnli-mm.valid.jsonl", nli_rows(5, 0))
    result = glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), zebra_root,
                                                **{**FAST, "tasks": "boolq,mnli-mm,sst2"}))
    assert result.notes == [
        "boolq: no training file (babylm-eval/glue_filtered/boolq.train.jsonl); unavailable",
        "mnli-mm: no training file for mnli (babylm-eval/glue_filtered/mnli.train.jsonl); "
        "unavailable"]
    assert list(result.tasks["student-0"]) == ["sst2"] and result.groups["glue"] == ("sst2",)
    # none of the tasks asked for: the suite fails with the reasons, writing no result
    with pytest.raises(MinidmlError, match=r"no task could be fine-tuned: boolq: no training "
                                           r"file .*; mnli-mm: no training file for mnli"):
        glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), zebra_root,
                                           **{**FAST, "tasks": "boolq,mnli-mm"}))


def test_ensemble_is_the_omega_mixture(tokenizer, zebra_root, monkeypatch):
    calls = []
    real = glue.finetune

    def spy(student, *args, **kw):
        calls.append(student)
        return real(student, *args, **kw)

    monkeypatch.setattr(glue, "finetune", spy)
    run = make_run(tokenizer, k=2, omega=[1.0, 0.0])
    opts = {**FAST, "epochs": 2, "max_train_examples": 128}
    result = glue.GlueSuite().evaluate(make_ctx(
        run, zebra_root, labels=["student-0", "student-1", "ensemble"], **opts))
    assert set(result.tasks) == {"student-0", "student-1", "ensemble"}
    # ω = (1, 0): the mixture is student 0's distribution
    assert result.tasks["ensemble"]["sst2"] == result.tasks["student-0"]["sst2"]
    assert len(calls) == 2

    calls.clear()
    run.omega = torch.tensor([0.5, 0.5])
    alone = glue.GlueSuite().evaluate(make_ctx(run, zebra_root, labels=["ensemble"], **opts))
    assert len(calls) == 2  # the ensemble needs every student fine-tuned
    assert set(alone.tasks) == {"ensemble"} and alone.tasks["ensemble"]["sst2"].n == 100
    p = [torch.tensor([[0.9, 0.1]]), torch.tensor([[0.3, 0.7]])]
    assert torch.allclose(glue.mixture(p, torch.tensor([1.0, 3.0])),
                          torch.tensor([[0.45, 0.55]]))


# ----------------------------------------------------------------------------- real data
def test_real_rte(tokenizer, data_dir):
    # max_length stays at 128 while the students' context is 64: encoding must cap it
    result = glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), data_dir, limit=32,
                                                tasks=["rte"], max_train_examples=64,
                                                epochs=1))
    r = result.tasks["student-0"]["rte"]
    assert r.n == 32 and 0 <= r.metrics["acc"] <= 1 and r.primary == "acc"
    assert result.groups == {"glue": ("rte",)}


def test_real_data_every_task(tokenizer, data_dir):
    result = glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), data_dir, limit=16,
                                                max_train_examples=32, epochs=1))
    per = result.tasks["student-0"]
    expected = ("cola", "mnli", "mnli-mm", "mrpc", "multirc", "qqp", "rte", "sst2", "wsc")
    assert result.groups == {"glue": expected} and tuple(per) == expected
    assert all(per[t].n == 16 and 0 <= per[t].metrics["acc"] <= 1 for t in expected)
    assert -1 <= per["cola"].score <= 1
    for task in ("boolq", "qnli"):
        assert task not in per
        assert (f"{task}: no training file (babylm-eval/glue_filtered/{task}.train.jsonl); "
                "unavailable") in result.notes


# ----------------------------------------------------------------------------- glue_set 2026
@pytest.fixture(scope="module")
def pipeline(data_dir) -> Path:
    """The official pipeline's folder: ``reference/babylm-eval-strict`` beside the data."""
    return official_pipeline(data_dir, "scripts/eval_finetuning.sh")


def argparse_defaults(run_py: Path) -> dict[str, Any]:
    """``{name: default}`` of every ``parser.add_argument("--name", default=...)`` in a file
    (read, not run)."""
    found = {}
    for node in ast.walk(ast.parse(run_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for kw in node.keywords:
                if kw.arg == "default":
                    found[node.args[0].value.lstrip("-")] = ast.literal_eval(kw.value)
    return found


def script_calls(script: Path) -> dict[str, dict[str, list[str]]]:
    """Per task, in the script's order, the flags of its ``finetune.run`` call, with the
    script's positional variables (``LR=${2:-3e-5}``) at their defaults."""
    text = script.read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(\w+)=\$\{\d+:-([^}\s]*)\}", text, re.M))
    calls: dict[str, dict[str, list[str]]] = {}
    pieces = text.split("python -m evaluation_pipeline.finetune.run")
    for before, after in zip(pieces, pieces[1:], strict=False):
        command = re.match(r"(?:[^\n]*\\\n)*[^\n]*", after).group(0).replace("\\\n", " ")
        flags: dict[str, list[str]] = {}
        for token in shlex.split(command):
            if token.startswith("--"):
                key = token[2:]
                flags[key] = []
            else:
                flags[key].append(defaults.get(token.lstrip("$"), token))
        loop = re.findall(r"for task in \{([\w,]+)\}", before)
        tasks = loop[-1].split(",") if flags["task"] == ["$task"] else flags["task"]
        calls.update({task: flags for task in tasks})
    return calls


METRIC = {"accuracy": "acc", "f1": "f1", "mcc": "mcc"}


def test_2026_settings_are_the_official_pipelines(pipeline):
    calls = script_calls(pipeline / "scripts" / "eval_finetuning.sh")
    args = argparse_defaults(pipeline / "evaluation_pipeline" / "finetune" / "run.py")
    s = glue.Settings.from_options({"glue_set": "2026"})
    assert s.glue_set == "2026" and s.tasks == tuple(calls)  # the same tasks, in its order
    assert s.tasks == ("boolq", "multirc", "rte", "wsc", "mrpc", "qqp", "mnli")
    for task, flags in calls.items():
        t, spec = s.for_task(task), s.spec(task)
        assert t.lr == float(*flags["learning_rate"]), task
        assert t.batch_size == int(*flags["batch_size"]), task
        assert t.epochs == int(*flags["num_epochs"]), task
        assert t.max_length == int(*flags["sequence_length"]), task
        assert t.seed == int(*flags["seed"]), task
        assert spec.n_classes == int(*flags["num_labels"]), task
        assert spec.primary == METRIC[flags["metric_for_valid"][0]], task
        reported = {"acc", spec.primary, *(s.binary_metrics if spec.n_classes == 2 else ())}
        assert reported == {METRIC[m] for m in flags["metrics"]}, task
        # no flag of the script changes what run.py's defaults below decide
        assert not {"causal", "take_final", "padding_side", "warmup_proportion",
                    "weight_decay", "classifier_dropout", "scheduler"} & set(flags)
    assert {s.for_task(t).batch_size for t in ("boolq", "multirc")} == {16}
    assert s.for_task("wsc").epochs == 30 and s.for_task("rte").epochs == 10
    assert (s.weight_decay, s.betas, s.eps) == (args["weight_decay"],
                                                (args["beta1"], args["beta2"]),
                                                args["optimizer_eps"])
    assert (args["optimizer"], args["amsgrad"], args["ema_decay"]) == ("adamw", False, 0.0)
    assert args["gradient_accumulation"] == 1
    assert (s.schedule, s.warmup, s.min_factor) == (args["scheduler"], args["warmup_proportion"],
                                                    args["min_factor"])
    assert (s.dropout, s.layer_norm_eps) == (args["classifier_dropout"],
                                             args["classifier_layer_norm_eps"])
    assert args["keep_best_model"] is True and args["higher_is_better"] is True
    assert s.patience is None and s.clip_norm is None and s.drop_last  # all epochs, no clip
    # what a causal decoder gets there: the first token, right padding (see the next tests)
    assert (args["causal"], args["take_final"], args["padding_side"]) == (False, False, "right")
    assert s.pooling == "last" and glue.Settings.from_options({}).glue_set == "2024"


def test_2026_head_is_the_official_classifier_head(pipeline):
    """The layers of ``ClassifierHead``'s ``nn.Sequential``, read from its source and built
    with the head's own weights, compute what :class:`glue.MLPHead` computes."""
    source = (pipeline / "evaluation_pipeline" / "finetune" / "classifier_model.py").read_text()
    seq = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
               and getattr(n.func, "attr", "") == "Sequential")
    layers = [(c.func.attr, {k.arg: ast.unparse(k.value) for k in c.keywords}) for c in seq.args]
    assert [name for name, _ in layers] == ["LayerNorm", "Linear", "GELU", "LayerNorm",
                                            "Dropout", "Linear"]
    s = glue.SETS["2026"]
    head = glue.MLPHead(24, 3, s.dropout, s.layer_norm_eps, torch.Generator().manual_seed(0))
    linears = iter([head.dense, head.out])
    built = []
    for name, kw in layers:
        if name == "LayerNorm":
            assert kw.get("elementwise_affine") == "False"
            built.append(torch.nn.LayerNorm(24, s.layer_norm_eps, elementwise_affine=False))
        elif name == "Linear":
            built.append(next(linears))
        else:
            built.append(getattr(torch.nn, name)(*([s.dropout] if name == "Dropout" else [])))
    reference = torch.nn.Sequential(*built).eval()
    x = torch.randn(5, 24, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.allclose(head.eval()(x), reference(x), atol=1e-6)
    assert not torch.equal(head.train()(x), head.eval()(x))  # dropout while training


def head_input(model: torch.nn.Module, head: torch.nn.Module, *inputs) -> torch.Tensor:
    """What ``model(*inputs)`` (in eval mode) feeds its ``head``."""
    seen = []
    handle = head.register_forward_pre_hook(lambda _, a: seen.append(a[0]))
    with torch.no_grad():
        model.eval()(*inputs)
    handle.remove()
    return seen[0]


def test_pooling_is_the_official_classifiers(pipeline, tokenizer, tmp_path, require_extra,
                                             monkeypatch):
    """On an exported student, the official classifier's unflagged default reads the first
    token (BOS: the same vector for every input), and ``--take_final --padding_side left``
    reads the last token of each input: minidml's ``pooling`` ``first`` and ``last``."""
    require_extra("hf", "transformers")
    from transformers import AutoTokenizer

    from minidml.hf.export import write_hf

    monkeypatch.syspath_prepend(str(pipeline))
    from evaluation_pipeline.finetune.classifier_model import ModelForSequenceClassification
    from evaluation_pipeline.finetune.dataset import Dataset

    student = make_run(tokenizer).students[0]
    out = write_hf(student, tokenizer, tmp_path / "hf")
    rng = random.Random(4)
    rows = [(sentence(rng), sentence(rng, "zebra")) for _ in range(6)]
    enc = glue.encode_rows(tokenizer, rows, [0] * len(rows), 64, "tokenizer")
    x, lengths, _ = glue._collate(enc, range(len(rows)), torch.device("cpu"))
    ours = {}
    for pooling in ("first", "last"):
        model = glue.Classifier(student, 2, torch.Generator().manual_seed(0),
                                glue.Settings(pooling=pooling))
        ours[pooling] = head_input(model, model.head, x, lengths)
    args = argparse_defaults(pipeline / "evaluation_pipeline" / "finetune" / "run.py")
    for take_final, side, pooling in ((False, "right", "first"), (True, "left", "last")):
        config = type("Args", (), {**args, "model_name_or_path": str(out), "num_labels": 2,
                                   "take_final": take_final})
        official = ModelForSequenceClassification(config)
        hf = AutoTokenizer.from_pretrained(out, padding_side=side)
        ids, mask, _ = Dataset.collate_function(hf, False, 64, [(r, 0) for r in rows])
        theirs = head_input(official, official.classifier, ids, mask)
        assert torch.allclose(theirs, ours[pooling], atol=1e-4), pooling
    assert torch.allclose(ours["first"], ours["first"][:1].expand_as(ours["first"]))


def test_2026_pairs_are_encoded_as_the_exported_tokenizer_encodes_them(tokenizer, tmp_path,
                                                                       require_extra):
    require_extra("hf", "transformers")
    from transformers import AutoTokenizer

    from minidml.hf.export import write_hf
    from minidml.hf.models import HFTokenizer

    hf = AutoTokenizer.from_pretrained(write_hf(make_run(tokenizer).students[0], tokenizer,
                                                tmp_path / "hf"))
    rng = random.Random(7)
    rows = [(" ".join(sentence(rng) for _ in range(rng.randint(1, 4))),
             " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))) for _ in range(60)]
    for max_length in (5, 8, 13, 24, 41, 64):
        theirs = hf([a for a, _ in rows], [b for _, b in rows], truncation=True,
                    max_length=max_length)["input_ids"]
        assert glue.encode_rows(tokenizer, rows, [0] * 60, max_length, "tokenizer").ids == theirs
        assert glue.encode_rows(HFTokenizer(hf), rows, [0] * 60, max_length,
                                "tokenizer").ids == theirs


def test_fast_truncation_rule():
    def reference(a: int, b: int, budget: int) -> tuple[int, int]:
        """The longer loses tokens (b on a tie) until the shorter would have to, then both
        get half, the longer the odd token."""
        if a + b <= budget:
            return a, b
        short = min(a, b)
        if 2 * short > budget:
            half = (budget // 2, budget - budget // 2)
            return half[::-1] if a > b else half
        return (budget - b, b) if a > b else (a, budget - a)

    for a in range(30):
        for b in range(30):
            for budget in (0, 1, 5, 10, 25):
                assert glue.fast_truncated_lengths(a, b, budget) == reference(a, b, budget)
    assert glue.encode_pair_2026([5, 6, 7], [8, 9], 10, bos=1) == [1, 5, 6, 7, 1, 8, 9]
    assert glue.encode_pair_2026([5, 6, 7], None, 3, bos=1) == [1, 5, 6]


@pytest.mark.parametrize("glue_set, n, batch, per_epoch", [("2026", 165, 8, 20),
                                                            ("2024", 165, 8, 21)])
def test_the_learning_rate_follows_the_schedule(tokenizer, monkeypatch, glue_set, n, batch,
                                                per_epoch):
    """Every optimizer step's learning rate: 2026 warms up linearly over int(6%) of the steps
    and falls along a cosine to 0.1 (the last partial batch of an epoch is dropped); 2024
    decays linearly to 0 (every batch)."""
    seen = []
    real = torch.optim.AdamW.step

    def step(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    settings = glue.Settings.from_options({"glue_set": glue_set, "finetune_batch_size": batch,
                                           "epochs": 3})
    segs, labels = [(sentence(random.Random(i)), None) for i in range(n)], [i % 2 for i in
                                                                           range(n)]
    enc = glue.encode_rows(tokenizer, segs, labels, 16, settings.layout)
    glue.finetune(make_run(tokenizer).students[0], glue_tasks.TASKS["sst2"], enc, enc, {},
                  settings)
    total = 3 * per_epoch
    lr = settings.lr
    if glue_set == "2026":
        warmup = int(0.06 * total)

        def expected(s: int) -> float:
            if s < warmup:
                return lr * s / warmup
            progress = (s - warmup) / (total - warmup)
            return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    else:
        def expected(s: int) -> float:
            return lr * (1 - s / total)
    assert len(seen) == total
    assert seen == pytest.approx([expected(s) for s in range(total)], rel=1e-12, abs=1e-18)
    factor = glue.lr_factor(glue.SETS["2026"], 100)
    assert [factor(s) for s in (0, 3, 6, 53, 100)] == pytest.approx([0, 0.5, 1, 0.55, 0.1])


def test_finetune_refuses_zero_epochs(tokenizer):
    """The epoch is chosen among those run, so a direct call with no epoch is refused, not
    answered with no predictions."""
    settings = dataclasses.replace(glue.Settings.from_options({"epochs": 1}), epochs=0)
    enc = glue.encode_rows(tokenizer, [(sentence(random.Random(0)), None)] * 4, [0, 1, 0, 1],
                           16, settings.layout)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        glue.finetune(make_run(tokenizer).students[0], glue_tasks.TASKS["sst2"], enc, enc,
                      {}, settings)


def write_2026_root(root: Path) -> None:
    """Eight rows of every 2026 task's files (boolq without a training file), mnli and qqp
    training in the 2025/2026 folder, and a 2024-style qqp.train that 2026 must not read."""
    rng = random.Random(9)
    fields = {"boolq": ("question", "passage"), "multirc": ("paragraph", "question", "answer"),
              "rte": ("sentence1", "sentence2"), "mrpc": ("sentence1", "sentence2"),
              "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
              "wsc": ("text", "span1_text", "span2_text")}
    for task, keys in fields.items():
        for split in ("train", "valid"):
            rows = [{**{k: sentence(rng) for k in keys}, "idx": i, "label": i % (
                3 if task == "mnli" else 2)} for i in range(8 if split == "valid" else 12)]
            where = glue_tasks.EXTRA_DIR if task in ("mnli", "qqp") and split == "train" \
                else glue_tasks.DIR
            if not (task == "boolq" and split == "train"):
                write_jsonl(root / where / f"{task}.{split}.jsonl", rows)
    write_jsonl(root / glue_tasks.DIR / "qqp.train.jsonl",
                [{"question1": "a", "question2": "b", "idx": 0, "label": 0}])


def plain_metrics(pred: list[int], gold: list[int]) -> dict[str, float]:
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold, strict=True))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold, strict=True))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold, strict=True))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold, strict=True))
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"acc": (tp + tn) / len(gold), "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "mcc": (tp * tn - fp * fn) / den if den else 0.0}


def test_2026_runs_its_tasks_with_their_settings_and_metrics(tokenizer, tmp_path, monkeypatch):
    """Each task's inputs, training file, epochs and batch size are the pipeline's; the
    two-class tasks report accuracy, F1 and MCC (mnli accuracy) exactly as a plain count of
    the predictions gives them; boolq, without a training file, is one line."""
    write_2026_root(tmp_path)
    calls, given = {}, {}

    def fake(student, spec, train, valid, companions, settings, **kw):
        calls[spec.name] = (settings.epochs, settings.batch_size, len(train), train.ids[0])
        gen = torch.Generator().manual_seed(len(calls))
        given[spec.name] = torch.rand(len(valid), spec.n_classes, generator=gen).softmax(-1)
        return {spec.name: given[spec.name]}

    monkeypatch.setattr(glue, "finetune", fake)
    run = make_run(tokenizer)
    result = glue.GlueSuite().evaluate(make_ctx(run, tmp_path, glue_set="2026"))
    assert result.notes == [
        "glue_set 2026: last-token pooling, sequences of at most 64 tokens (the recipe's 512, "
        "capped at the students' context)",
        "boolq: no training file (babylm-eval/glue_filtered/boolq.train.jsonl); unavailable"]
    expected = ("multirc", "rte", "wsc", "mrpc", "qqp", "mnli")
    assert result.groups == {"glue": expected} and tuple(result.tasks["student-0"]) == expected
    assert {t: c[:3] for t, c in calls.items()} == {
        "multirc": (10, 16, 12), "rte": (10, 32, 12), "wsc": (30, 32, 12),
        "mrpc": (10, 32, 12), "qqp": (10, 32, 12), "mnli": (10, 32, 12)}
    row = json.loads((tmp_path / glue_tasks.DIR / "wsc.train.jsonl").read_text().splitlines()[0])
    a, b = tokenizer.encode_batch([f'Does "{row["span2_text"]}" refer to "{row["span1_text"]}" '
                                   "in this passage?", row["text"]])
    assert calls["wsc"][3] == glue.encode_pair_2026(a, b, 64, tokenizer.bos_id)
    row = json.loads((tmp_path / glue_tasks.DIR / "multirc.train.jsonl").read_text()
                     .splitlines()[0])
    a, b = tokenizer.encode_batch([f"Question: {row['question']} Answer: {row['answer']}",
                                   row["paragraph"]])
    assert calls["multirc"][3] == glue.encode_pair_2026(a, b, 64, tokenizer.bos_id)
    for task in expected:
        r = result.tasks["student-0"][task]
        gold = [json.loads(line)["label"] for line in
                (tmp_path / glue_tasks.DIR / f"{task}.valid.jsonl").read_text().splitlines()]
        pred = given[task].argmax(-1).tolist()
        plain = plain_metrics(pred, gold)
        if task == "mnli":
            assert set(r.metrics) == {"acc", "acc_stderr"} and r.primary == "acc"
            assert r.metrics["acc"] == pytest.approx(plain["acc"])
            continue
        assert set(r.metrics) == {"acc", "acc_stderr", "f1", "f1_stderr", "mcc", "mcc_stderr"}
        assert r.primary == ("f1" if task in ("mrpc", "qqp") else "acc")
        for name in ("acc", "f1", "mcc"):
            assert r.metrics[name] == pytest.approx(plain[name], abs=1e-12), (task, name)
    assert len({round(r.metrics["mcc"], 9) for r in result.tasks["student-0"].values()
                if "mcc" in r.metrics}) > 1  # not all the same number


def test_2026_finetuned_student_learns(tokenizer, tmp_path):
    rng = random.Random(1)

    def rows(n: int, seed: int) -> list[dict]:
        rng.seed(seed)
        return [{"sentence1": sentence(rng), "sentence2": sentence(rng, *(["zebra"] if i % 2
                                                                          else [])),
                 "label": i % 2, "idx": i} for i in range(n)]

    write_jsonl(tmp_path / glue_tasks.DIR / "rte.train.jsonl", rows(256, 1))
    write_jsonl(tmp_path / glue_tasks.DIR / "rte.valid.jsonl", rows(100, 2))
    run = make_run(tokenizer)
    opts = {"glue_set": "2026", "tasks": "rte", "lr": 3e-3, "epochs": 6}
    control = glue.GlueSuite().evaluate(make_ctx(run, tmp_path, **{**opts, "lr": 1e-9,
                                                                   "epochs": 1}))
    assert control.tasks["student-0"]["rte"].score < 0.8  # near chance (0.5) untrained
    result = glue.GlueSuite().evaluate(make_ctx(run, tmp_path, **opts))
    r = result.tasks["student-0"]["rte"]
    assert r.n == 100 and r.score >= 0.9 and r.metrics["f1"] >= 0.9 and r.metrics["mcc"] >= 0.8

    # the official script's own pooling, the first token (BOS), sees no input at all
    settings = glue.Settings.from_options({**opts, "pooling": "first", "epochs": 1})
    spec = glue.TASKS_2026["rte"]
    seg, lab = glue.load_rows(tmp_path / glue_tasks.DIR / "rte.valid.jsonl", spec)
    enc = glue.encode_rows(tokenizer, seg, lab, 64, settings.layout)
    probs = glue.finetune(run.students[0], spec, enc, enc, {}, settings)["rte"]
    assert torch.allclose(probs, probs[:1].expand_as(probs))


@pytest.mark.parametrize("options, message", [
    ({"glue_set": "2025"}, "glue_set='2025': choose 2024 or 2026"),
    ({"glue_set": True}, "glue_set=True"),
    ({"glue_set": "2026", "tasks": "rte,cola"}, "cola not in the 2026 set"),
    ({"pooling": "mean"}, "pooling='mean': choose last or first"),
])
def test_bad_glue_set_options_are_one_line_errors(tokenizer, zebra_root, options, message):
    with pytest.raises(MinidmlError) as e:
        glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), zebra_root, **options))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_glue_set_options_override_every_task():
    s = glue.Settings.from_options({"glue_set": 2026, "epochs": 2, "finetune_batch_size": 8,
                                    "tasks": ["wsc", "boolq"], "max_length": 256})
    assert s.tasks == ("boolq", "wsc")
    assert {(s.for_task(t).epochs, s.for_task(t).batch_size) for t in s.tasks} == {(2, 8)}
    assert (s.max_length, s.lr, s.seed, s.patience) == (256, 3e-5, 42, None)
    assert glue.Settings.from_options({"glue_set": "2024"}) == glue.Settings.from_options({})


def test_real_data_2026(tokenizer, data_dir):
    result = glue.GlueSuite().evaluate(make_ctx(make_run(tokenizer), data_dir, limit=16,
                                                glue_set="2026", max_train_examples=32,
                                                epochs=1))
    per = result.tasks["student-0"]
    expected = ("multirc", "rte", "wsc", "mrpc", "qqp", "mnli")
    assert result.groups == {"glue": expected} and tuple(per) == expected
    assert all(per[t].n == 16 and 0 <= per[t].metrics["acc"] <= 1 for t in expected)
    assert all(-1 <= per[t].metrics["mcc"] <= 1 for t in expected if t != "mnli")
    assert [n for n in result.notes if n.startswith("boolq")] == [
        "boolq: no training file (babylm-eval/glue_filtered/boolq.train.jsonl); unavailable"]
    assert not any("2025 release" in n for n in result.notes)  # mnli, qqp: the 2026 files
