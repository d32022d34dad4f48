"""End-to-end training: students learn, resumption is exact, runs reload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import minidml
from minidml import Shape, TrainConfig
from minidml.data import Batches, corpus_files, read_lines, tokenize_corpus, unigram_entropy
from minidml.demo.grammar import write_corpus
from minidml.errors import MinidmlError
from minidml.losses import mutual_loss
from minidml.model import Student
from minidml.rundir import checkpoints, student_configs
from minidml.schedule import lr_at
from minidml.tokenizer import Tokenizer
from minidml.trainer import Callback, Trainer

from _helpers import optimizer_states

# runs compared with each other pin fp32: `auto` times bf16 on the machine, and two runs
# may choose differently where the two are close
TINY = dict(students=(Shape(2, 64, 2), Shape(1, 96, 4)), mode="dml", context=32, batch_size=16,
            vocab_size=400, warmup_steps=10, log_every=5, eval_every=50, eval_tokens=4096,
            lr=3e-3, precision="fp32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "grammar.txt", 6_000, seed=0)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, losses):
        if trainer.step == self.step:
            trainer.should_stop = True


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)


def test_wsd_schedule_holds_the_peak_then_decays_linearly():
    lrs = [lr_at(s, 1.0, 10, 110, 0.1, "wsd", 0.2) for s in range(111)]
    assert lrs[:10] == [lr_at(s, 1.0, 10, 110, 0.1) for s in range(10)]  # the same warmup
    assert all(v == 1.0 for v in lrs[10:91])  # stable until the last 20 of 100 steps
    steps = np.diff(lrs[90:])
    assert np.allclose(steps, steps[0]) and steps[0] < 0  # a straight line down
    assert lrs[110] == pytest.approx(0.1)


@pytest.mark.slow
def test_two_students_learn_far_below_unigram_entropy(corpus, tmp_path):
    run = minidml.train(corpus, tmp_path / "run", TrainConfig(**TINY), steps=300, mode="wml",
                        outer_every=10)
    tokens = tokenize_corpus(corpus_files([corpus]), run.tokenizer)
    h1 = unigram_entropy(np.asarray(tokens))
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").open()]
    evals = [r for r in records if r["event"] == "eval"]
    final = evals[-1]
    assert final["step"] == 300
    # each student and the ensemble reach well under the unigram entropy of the corpus
    for loss in [*final["val_loss"], final["ensemble_val_loss"]]:
        assert loss < 0.6 * h1, (loss, h1)
    # and training made them better over time
    assert all(b < a for a, b in zip(evals[0]["val_loss"], final["val_loss"], strict=True))
    assert final["val_ppl"][0] == pytest.approx(math.exp(final["val_loss"][0]))
    # ω was learned: one record per outer step, always a probability vector
    omegas = [r["omega"] for r in records if r["event"] == "omega"]
    assert len(omegas) == 30
    assert all(abs(sum(w) - 1) < 1e-6 and min(w) >= 0 for w in omegas)
    assert run.omega.tolist() == pytest.approx(omegas[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mode, optimizer", [("dml", "adamw"), ("wml", "adamw"),
                                             ("dml", "muon")])
def test_stop_and_resume_is_bit_identical(corpus, tmp_path, mode, optimizer):
    cfg = TrainConfig(**{**TINY, "save_every": 10, "mode": mode, "outer_every": 4},
                      optimizer=optimizer, steps=40)
    full = minidml.train(corpus, tmp_path / "full", cfg)
    minidml.train(corpus, tmp_path / "part", cfg, callbacks=[StopAt(17)])
    assert [p.name for p in checkpoints(tmp_path / "part")][-1] == "step-00000017"
    resumed = minidml.train(corpus, tmp_path / "part", cfg, resume=True)
    assert resumed.step == full.step == 40
    for a, b in zip(full.students, resumed.students, strict=True):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), name
    state_a = torch.load(checkpoints(tmp_path / "full")[-1] / "state.pt", weights_only=True)
    state_b = torch.load(checkpoints(tmp_path / "part")[-1] / "state.pt", weights_only=True)
    assert torch.equal(state_a["omega"], state_b["omega"])
    assert torch.equal(full.omega, resumed.omega)
    if mode == "wml":  # ω really moved, so its restoration is tested
        assert not torch.equal(full.omega, torch.full((2,), 0.5))
    for oa, ob in zip(state_a["optimizers"], state_b["optimizers"], strict=True):
        for sa, sb in zip(optimizer_states(oa), optimizer_states(ob), strict=True):
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # metrics were not duplicated by the resumption
    steps = [json.loads(line)["step"] for line in (tmp_path / "part/metrics.jsonl").open()
             if '"train"' in line]
    assert steps == sorted(set(steps)) == list(range(5, 41, 5))


def test_muon_takes_the_trunks_matrices_and_adamw_the_rest():
    from minidml.model import StudentConfig
    from minidml.schedule import Hybrid, make_optimizer

    student = Student(StudentConfig(vocab_size=100, n_layers=2, d_model=32, n_heads=2,
                                    context=16))
    opt = make_optimizer(student, TrainConfig(optimizer="muon"))
    assert isinstance(opt, Hybrid)
    muon = {id(p) for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.parts["adamw"].param_groups for p in g["params"]}
    for name, p in student.named_parameters():
        inner = p.dim() == 2 and name != "embed.weight"
        assert (id(p) in muon, id(p) in adamw) == (inner, not inner), name
    assert len(opt.param_groups) == 3  # Muon's one, AdamW's decayed and not
    for g in opt.param_groups:  # the trainer sets a step's lr on every group
        g["lr"] = 1e-3
    assert all(g["lr"] == 1e-3 for o in opt.parts.values() for g in o.param_groups)
    with pytest.raises(minidml.MinidmlError, match="--unroll adam.*--optimizer muon"):
        TrainConfig(optimizer="muon", unroll="adam")


@pytest.mark.slow
def test_muon_learns(corpus, tmp_path):
    run = minidml.train(corpus, tmp_path / "run", TrainConfig(**TINY), steps=100,
                        students=(Shape(2, 64, 2),), mode="single", optimizer="muon",
                        eval_every=25)
    tokens = tokenize_corpus(corpus_files([corpus]), run.tokenizer)
    h1 = unigram_entropy(np.asarray(tokens))
    evals = [json.loads(line) for line in (run.path / "metrics.jsonl").open()
             if '"eval"' in line]
    assert evals[-1]["step"] == 100
    for first, last in zip(evals[0]["val_loss"], evals[-1]["val_loss"], strict=True):
        assert last < first and last < 0.6 * h1, (first, last, h1)


@pytest.mark.slow
def test_load_reloads_what_training_produced(corpus, tmp_path):
    run = minidml.train(corpus, tmp_path / "run", TrainConfig(**TINY), steps=20)
    loaded = minidml.load(run.path)
    assert loaded.step == 20 and loaded.tokenizer.sha256 == run.tokenizer.sha256
    x = torch.randint(0, loaded.tokenizer.vocab_size, (2, 16))
    for a, b in zip(run.students, loaded.students, strict=True):
        torch.testing.assert_close(a.eval()(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.omega, run.omega)
    text = loaded.generate("The", student=1, max_new_tokens=10, seed=3)
    assert text.startswith("The") and text == loaded.generate("The", 1, 10, seed=3)


@pytest.mark.slow
def test_single_student_is_plain_language_modelling(corpus, tmp_path):
    run = minidml.train(corpus, tmp_path / "run", TrainConfig(**TINY),
                        students=(Shape(1, 64, 2),), steps=10)
    rec = [json.loads(line) for line in (run.path / "metrics.jsonl").open()][0]
    assert rec["kl"] == [0.0] and rec["loss"] == rec["ce"]


class ReferenceStep(Trainer):
    """The training step with the plain definition of the loss on materialised logits
    (:func:`minidml.losses.mutual_loss`) in place of the production loss from hidden states."""

    def _loss(self, x, y, alpha):
        logits = [s(x).flatten(0, 1) for s in self.students]
        with torch.no_grad():
            hidden = [s.trunk(x).flatten(0, 1) for s in self.students]
        losses = mutual_loss(logits, y, self.omega, alpha, self.config.softmax_temperature)
        return losses, hidden, [s.embed.weight for s in self.students]


@pytest.mark.parametrize("mode", ["single", "wml"])
def test_the_training_step_trains_as_the_plain_definition(corpus, tmp_path, mode):
    """The production step (loss from hidden states, in row chunks) and one with the plain
    loss on full logits train the same students: ten steps, an outer step among them,
    agree to float32 rounding (fp32: a bf16 head would differ by bf16 rounding)."""
    cfg = TrainConfig(**{**TINY, "mode": mode}, steps=10, outer_every=5)
    tok = Tokenizer.train(read_lines([corpus]), vocab_size=cfg.vocab_size)
    batches = Batches(tokenize_corpus([corpus], tok, tmp_path), cfg.context, cfg.batch_size)
    trained = {}
    for kind in (Trainer, ReferenceStep):
        torch.manual_seed(0)
        students = [Student(c) for c in student_configs(cfg, tok.vocab_size)]
        trainer = kind(cfg, students, batches, compiled={"choice": False, "line": ""})
        for _ in range(cfg.steps):
            trainer.train_step()
        trained[kind] = trainer
    a, b = trained[Trainer], trained[ReferenceStep]
    for x, y in zip(a.students, b.students, strict=True):
        for p, q in zip(x.state_dict().values(), y.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(a.omega, b.omega, rtol=1e-4, atol=1e-6)
    if mode == "wml":
        assert not torch.equal(a.omega, torch.full((2,), 0.5))


@pytest.mark.slow
@pytest.mark.parametrize("name, damage", [("student-0.pt", b"garbage"), ("state.pt", b""),
                                          ("student-0.pt", b"")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(corpus, tmp_path, name,
                                                                 damage):
    cfg = TrainConfig(**{**TINY, "save_every": 5}, steps=12)
    minidml.train(corpus, tmp_path / "run", cfg, callbacks=[StopAt(10)])
    newest = checkpoints(tmp_path / "run")[-1]
    assert newest.name == "step-00000010"
    (newest / name).write_bytes(damage)
    with pytest.raises(minidml.MinidmlError, match=rf"{name}: refused or damaged") as e:
        minidml.load(tmp_path / "run")  # a reader: one line naming the file
    assert "\n" not in str(e.value)
    resumed = minidml.train(corpus, tmp_path / "run", cfg, resume=True)
    assert resumed.step == 12
    uninterrupted = minidml.train(corpus, tmp_path / "ref", cfg)
    for a, b in zip(uninterrupted.students, resumed.students, strict=True):
        assert all(torch.equal(x, y) for x, y in
                   zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_trainer_without_a_run_directory_cannot_resume(corpus, tmp_path):
    cfg = TrainConfig(**TINY, steps=2)
    tok = Tokenizer.train(read_lines([corpus]), vocab_size=cfg.vocab_size)
    batches = Batches(tokenize_corpus([corpus], tok, tmp_path), cfg.context, cfg.batch_size)
    trainer = Trainer(cfg, [Student(c) for c in student_configs(cfg, tok.vocab_size)], batches)
    with pytest.raises(MinidmlError, match="no run directory to resume from; give it run_dir="):
        trainer.resume()


def test_a_resumed_budget_run_keeps_the_shapes_it_started_with(grammar_corpus, tmp_path,
                                                                monkeypatch):
    """The search of a later minidml may pick other shapes for the same budget: a resumed
    run trains the students its config.json records."""
    import minidml.search

    cfg = TrainConfig(budget=300_000, students=(Shape(1, 32, 2),) * 2, vocab_size=300,
                      context=16, batch_size=4, steps=4, save_every=2, eval_every=100,
                      compile="off", precision="fp32")
    class StopAtTwo(Callback):
        def on_step_end(self, trainer, losses):
            trainer.should_stop = trainer.step == 2

    first = minidml.train(grammar_corpus, tmp_path / "run", cfg, callbacks=[StopAtTwo()])
    searched = first.config.students
    assert first.step == 2 and searched != cfg.students

    def no_search(*args, **kwargs):
        raise AssertionError("a resumed budget run must not search again")

    monkeypatch.setattr(minidml.search, "plan", no_search)
    run = minidml.train(grammar_corpus, tmp_path / "run", cfg, resume=True)
    assert run.step == 4 and run.config.students == searched


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("small") / "grammar.txt", 1_500, seed=2)


@pytest.mark.slow
def test_a_multi_epoch_run_resumes_bit_identically(small_corpus, tmp_path):
    """epochs = 2.5, stopped in the second epoch and resumed: the same students, ω and
    metrics as the uninterrupted run; the metrics count epochs up to 2.5."""
    cfg = TrainConfig(**{**TINY, "mode": "wml", "outer_every": 4, "save_every": 1000,
                         "log_every": 1}, epochs=2.5)
    full = minidml.train(small_corpus, tmp_path / "full", cfg)
    records = [json.loads(line) for line in (tmp_path / "full/metrics.jsonl").open()]
    epochs = [r["epoch"] for r in records if r["event"] == "train"]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(2.5, abs=0.05)
    stop = next(r["step"] for r in records if r["event"] == "train" and r["epoch"] > 1.3)
    minidml.train(small_corpus, tmp_path / "part", cfg, callbacks=[StopAt(stop)])
    resumed = minidml.train(small_corpus, tmp_path / "part", cfg, resume=True)
    assert resumed.step == full.step
    for a, b in zip(full.students, resumed.students, strict=True):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), name
    assert torch.equal(full.omega, resumed.omega)
    again = [json.loads(line) for line in (tmp_path / "part/metrics.jsonl").open()]
    assert [r["epoch"] for r in again if r["event"] == "train"] == epochs


@pytest.mark.slow
def test_a_time_budget_plans_the_schedule_and_stops_at_the_limit(small_corpus, tmp_path):
    """--max-time: steps planned from the measured throughput (recorded in metrics and
    config.json); the last step starts before the limit; the schedule runs to its end."""
    limit = 6.0
    cfg = TrainConfig(**{**TINY, "log_every": 1, "eval_every": 20, "warmup_steps": 5},
                      max_time=limit)
    run = minidml.train(small_corpus, tmp_path / "run", cfg)
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").open()]
    plans = [r for r in records if r["event"] == "plan"]
    trains = [r for r in records if r["event"] == "train"]
    assert plans and all(p["max_time"] == limit and p["total_steps"] > p["step"] for p in plans)
    meta = json.loads((run.path / "config.json").read_text())
    assert meta["config"]["max_time"] == limit and meta["plan"] == plans[-1]
    assert trains[-1]["step"] == run.step and trains[-2]["train_seconds"] < limit
    assert trains[-1]["train_seconds"] > 0.5 * limit  # the budget was used
    # the planned schedule ended (near) where training did: the lr decayed most of the way
    assert trains[-1]["lr"] < 0.5 * cfg.lr
    assert any(r["event"] == "eval" and r["step"] == run.step for r in records)


def test_a_time_budget_replans_when_the_first_steps_were_slow():
    """A plan made from slow first steps (another job on the machine) is corrected after a
    tenth of the budget, not only at the next evaluation."""
    from minidml.timebudget import PROBE_STEPS, SETTLE_STEPS, TimeBudget

    budget, elapsed, plans = TimeBudget(100.0), 0.0, []
    budget.start(0)
    for step in range(1, 1000):
        elapsed += 3.0 if step <= PROBE_STEPS + SETTLE_STEPS else 1.0  # then 3x faster
        new = budget.after_step(step, elapsed, evaluated=False)
        if new is not None:
            plans.append((step, new))
        if elapsed >= 100.0:
            break
    first, last = plans[0][1], plans[-1][1]
    assert len(plans) > 2 and plans[0][0] == SETTLE_STEPS + PROBE_STEPS
    assert first < 40 and last > 1.5 * first  # the slow start no longer sets the length
    assert abs(last - step) <= 0.1 * step  # the last plan ends where the time did


def test_one_length_of_training_and_durations():
    from minidml.timebudget import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "60m", "1.5h", "2min")] == [
        90, 90, 3600, 5400, 120]
    for bad in ("", "m", "-5m", "soon", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(minidml.MinidmlError, match="--steps and --max-time: give one length"):
        TrainConfig(steps=10, max_time=60.0)
    with pytest.raises(minidml.MinidmlError, match="--epochs -1.0: must be a positive number"):
        TrainConfig(epochs=-1.0)


def test_alpha_warms_up_linearly_from_zero(corpus, tmp_path):
    cfg = TrainConfig(**{**TINY, "log_every": 1}, steps=6, alpha=0.5, alpha_warmup=4)
    assert [cfg.alpha_at(s) for s in range(6)] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert TrainConfig(alpha=0.3).alpha_at(0) == 0.3  # no ramp by default
    run = minidml.train(corpus, tmp_path / "run", cfg)
    logs = [json.loads(line) for line in (run.path / "metrics.jsonl").open()]
    trains = [r for r in logs if r["event"] == "train"]
    assert len(trains) == 6
    for r in trains:  # each step's loss is (1-α)·CE + α·KL with that step's α (T = 1)
        a = cfg.alpha_at(r["step"] - 1)
        for loss, ce, kl in zip(r["loss"], r["ce"], r["kl"], strict=True):
            assert loss == pytest.approx((1 - a) * ce + a * kl, rel=1e-5)


def test_wml_unrolls_the_adamw_step_when_asked(corpus, tmp_path):
    # three students: with two, each one's only peer weighs 1 whatever ω is, and the
    # second-order term vanishes
    three = (*TINY["students"], Shape(1, 64, 2))
    cfg = TrainConfig(**{**TINY, "students": three}, steps=20, outer_every=5,
                      optimizer="adamw")
    runs = {u: minidml.train(corpus, tmp_path / u, cfg, mode="wml", unroll=u)
            for u in ("sgd", "adam")}
    config = json.loads((runs["adam"].path / "config.json").read_text())
    assert config["config"]["unroll"] == "adam"
    records = {u: [json.loads(line) for line in (r.path / "metrics.jsonl").open()
                   if '"omega"' in line and '"hypergrad"' in line] for u, r in runs.items()}
    assert len(records["adam"]) == 4
    # at the first outer step (same weights and batches so far), a second-order part that
    # AdamW's larger step makes larger
    first = {u: r[0] for u, r in records.items()}
    second = {u: np.abs(np.subtract(f["hypergrad"], f["direct"])).sum() for u, f in first.items()}
    assert second["adam"] > 10 * second["sgd"]


def test_a_continuation_keeps_the_space_before_its_first_word(tiny_run, monkeypatch):
    """With the word boundary, a continuation decoded alone would lose its first space
    ("Thedog"); decoded after its prompt it reads as written."""
    tok = tiny_run.tokenizer
    assert tok.boundary == "prefix"
    wanted = [tok.bos_id, *tok.encode("The"), *tok.encode("dog sleeps")]
    student = tiny_run.students[0]
    monkeypatch.setattr(student, "generate",
                        lambda ids, *a, **k: torch.tensor([wanted], device=ids.device))
    assert tiny_run.generate("The") == "The dog sleeps"
    wanted = [tok.bos_id, *tok.encode("dog sleeps")]
    assert tiny_run.generate("") == "dog sleeps"


def test_metrics_lines_that_are_not_utf8_are_skipped_with_a_warning(tmp_path):
    from minidml.rundir import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"event": "train", "step": 1}\n\xff\xfe not text\n{"event": "eval", "st')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped 1 line\(s\) that are not"):
        assert read_metrics(path) == [{"event": "train", "step": 1}]
