"""The glue suite: metrics, encoding, options, and fine-tuning runs that really learn."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

import minidml_plugins.glue as glue
import minidml_plugins.glue_tasks as glue_tasks
from minidml import MinidmlError, Student, StudentConfig, Tokenizer, TrainConfig
from minidml.evaluation.plugins import make_manager, suites
from minidml.evaluation.scoring import Scorer
from minidml.evaluation.suite import EvalContext
from minidml.rundir import Run

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
