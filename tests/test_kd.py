"""Teacher-guided distillation (BabyLlama-style): the loss, teacher ensembles, the kd mode."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minidml
from minidml import Shape, TrainConfig
from minidml.cli.commands import main
from minidml.data import corpus_files, tokenize_corpus, unigram_entropy
from minidml.errors import MinidmlError
from minidml.fused_linear import linear_mutual_loss
from minidml.losses import distillation_loss, distillation_omega
from minidml.rundir import checkpoints

from _helpers import assert_one_line_error

# runs compared with each other pin fp32: `auto` times bf16 on the machine, and two runs
# may choose differently where the two are close
BASE = dict(context=32, batch_size=16, vocab_size=400, warmup_steps=10, log_every=10,
            eval_every=100, eval_tokens=4096, lr=3e-3, precision="fp32")


def plain_kd(student: torch.Tensor, teachers: list[torch.Tensor], y: torch.Tensor,
             alpha: float, temperature: float) -> torch.Tensor:
    """(1-α)·CE + α·T²·mean_m KL(p_m ‖ p_s), written out directly in float64."""
    log_s = F.log_softmax(student / temperature, -1)
    kl = 0.0
    for teacher in teachers:
        log_t = F.log_softmax(teacher / temperature, -1)
        kl = kl + (log_t.exp() * (log_t - log_s)).sum(-1).mean() / len(teachers)
    return (1 - alpha) * F.cross_entropy(student, y) + alpha * temperature**2 * kl


@pytest.mark.parametrize("k,m,temperature", [(1, 1, 2.0), (3, 1, 1.0), (2, 3, 0.7)])
def test_distillation_loss_matches_the_plain_definition(k, m, temperature):
    torch.manual_seed(k)
    n, v, alpha = 37, 53, 0.4
    students = [(3 * torch.randn(n, v, dtype=torch.float64)).requires_grad_() for _ in range(k)]
    teachers = [3 * torch.randn(n, v, dtype=torch.float64) for _ in range(m)]
    y = torch.randint(v, (n,))
    got = distillation_loss(students, teachers, y, alpha, temperature)
    want = [plain_kd(z, teachers, y, alpha, temperature) for z in students]
    torch.testing.assert_close(got.loss, torch.stack(want))
    g_got = torch.autograd.grad(got.total, students)
    g_want = torch.autograd.grad(sum(want), students)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)
    assert got.loss.shape == (k,)  # the teachers are not among the results


def test_a_teacher_ensemble_pulls_towards_its_averaged_probabilities():
    """With several teachers the gradient is that of the KL to their averaged distribution."""
    torch.manual_seed(0)
    n, v, t = 11, 17, 2.0
    members = [2 * torch.randn(n, v, dtype=torch.float64) for _ in range(3)]
    z = torch.randn(n, v, dtype=torch.float64, requires_grad=True)
    y = torch.randint(v, (n,))
    (g,) = torch.autograd.grad(distillation_loss([z], members, y, 1.0, t).total, [z])
    mean = torch.stack([F.softmax(m / t, -1) for m in members]).mean(0)
    kl = (mean * (mean.log() - F.log_softmax(z / t, -1))).sum(-1).mean()
    (want,) = torch.autograd.grad(t**2 * kl, [z])
    torch.testing.assert_close(g, want)


def test_distillation_from_hidden_states_is_the_reference_and_trains_only_students():
    """The production path: teachers as fixed members of the hidden-state loss."""
    torch.manual_seed(1)
    n, v, alpha, t = 29, 41, 0.6, 2.0
    widths = [8, 12, 6, 10]  # two students, two teachers
    hidden = [torch.randn(n, d, dtype=torch.float64) for d in widths]
    heads = [torch.randn(v, d, dtype=torch.float64) for d in widths]
    for x in (*hidden[:2], *heads[:2]):
        x.requires_grad_()
    y = torch.randint(v, (n,))
    got = linear_mutual_loss(hidden, heads, y, distillation_omega(2, 2), alpha, t,
                             chunk_rows=8)
    want = distillation_loss([h @ w.t() for h, w in zip(hidden[:2], heads[:2], strict=True)],
                             [h @ w.t() for h, w in zip(hidden[2:], heads[2:], strict=True)],
                             y, alpha, t)
    torch.testing.assert_close(got.loss[:2], want.loss)
    torch.testing.assert_close(got.kl[:2], want.kl)
    learned = [*hidden[:2], *heads[:2]]
    for a, b in zip(torch.autograd.grad(got.loss[:2].sum(), learned),
                    torch.autograd.grad(want.total, learned), strict=True):
        torch.testing.assert_close(a, b)


def test_kd_needs_a_teacher_and_teachers_need_kd():
    with pytest.raises(MinidmlError, match="--mode kd: needs at least one --teacher"):
        TrainConfig(mode="kd")
    with pytest.raises(MinidmlError, match="only --mode kd"):
        TrainConfig(mode="dml", teachers=("runs/x",))
    assert TrainConfig(mode="kd", teachers=("t",)).softmax_temperature == 2.0
    assert TrainConfig(mode="dml").softmax_temperature == 1.0
    assert TrainConfig(mode="kd", teachers=("t",), temperature=1.5).softmax_temperature == 1.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from minidml.demo.grammar import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "grammar.txt", 6_000, seed=0)


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):
    cfg = TrainConfig(students=(Shape(2, 96, 4),), mode="single", steps=200, **BASE)
    return minidml.train(corpus, tmp_path_factory.mktemp("teacher") / "run", cfg)


def parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.slow
def test_a_student_learns_from_the_teacher_alone(corpus, teacher, tmp_path):
    """With α = 1 the labels play no part: whatever the student learns comes from the teacher.
    It must learn context, not just word frequencies: well below the unigram entropy."""
    before = parameters(minidml.load(teacher.path).students[0])
    cfg = TrainConfig(students=(Shape(1, 64, 2),), mode="kd", teachers=(str(teacher.path),),
                      alpha=1.0, steps=150, **BASE)
    start = minidml.train(corpus, tmp_path / "s0", cfg, steps=1, eval_every=1)
    run = minidml.train(corpus, tmp_path / "kd", cfg)
    teacher_loss = teacher.last_eval["val_loss"][0]
    untrained = start.last_eval["val_loss"][0]
    final = run.last_eval["val_loss"][0]
    tokens = tokenize_corpus(corpus_files([corpus]), run.tokenizer)
    h1 = unigram_entropy(np.asarray(tokens))
    assert final < untrained - 2.0, (untrained, final)
    assert final < h1 - 0.5 and teacher_loss < final, (h1, teacher_loss, final)
    # the teacher stayed frozen, and the run records which teacher it learnt from
    torch.testing.assert_close(parameters(minidml.load(teacher.path).students[0]), before,
                               rtol=0, atol=0)
    meta = json.loads((run.path / "config.json").read_text())
    weights = checkpoints(teacher.path)[-1] / "student-0.pt"
    assert meta["teachers"] == [{"run": str(teacher.path.resolve()), "student": 0,
                                 "step": 200, "n_params": teacher.students[0].config.n_params,
                                 "shape": {"n_layers": 2, "d_model": 96, "n_heads": 4,
                                           "mlp_ratio": 8 / 3},
                                 "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                 "words_total": teacher.last_eval["words_total"]}]
    assert meta["words"]["teachers"] == teacher.last_eval["words_total"] > 0
    assert run.tokenizer.sha256 == teacher.tokenizer.sha256  # the teacher's, by default
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").open()]
    train = [r for r in records if r["event"] == "train"]
    assert all(len(r["kl"]) == 1 and r["kl"][0] > 0 for r in train)
    assert train[-1]["kl"][0] < train[0]["kl"][0] / 2  # the student closes in on the teacher


def test_a_teacher_checkpoint_rotated_away_while_read_is_one_line(teacher, monkeypatch):
    """The teacher's weights are recorded by the checkpoint that was loaded; one a training
    teacher removed in between is a one-line error, not a crash."""
    import dataclasses

    from minidml import teachers

    real = minidml.load(teacher.path)
    models, _, records = teachers.load_teachers([teacher.path])
    weights = checkpoints(teacher.path)[-1] / "student-0.pt"
    assert records[0]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setattr(teachers, "load", lambda path, device: dataclasses.replace(
        real, step=real.step + 5))  # a newer checkpoint loaded, and gone again
    with pytest.raises(MinidmlError, match=rf"--teacher .*: its checkpoint of step "
                                           rf"{real.step + 5} was removed while being read"):
        teachers.load_teachers([teacher.path])


@pytest.mark.slow
def test_kd_resumes_exactly(corpus, teacher, tmp_path):
    cfg = TrainConfig(students=(Shape(1, 64, 2), Shape(1, 32, 2)), mode="kd",
                      teachers=(str(teacher.path), str(teacher.path)), steps=20, save_every=5,
                      **BASE)
    whole = minidml.train(corpus, tmp_path / "whole", cfg)

    class Stop(minidml.Callback):
        def on_step_end(self, trainer, losses):
            trainer.should_stop = trainer.step == 7

    minidml.train(corpus, tmp_path / "part", cfg, callbacks=[Stop()])
    # the teacher moves in between: its path may change, its weights may not
    moved = tmp_path / "moved-teacher"
    shutil.copytree(teacher.path, moved)
    with pytest.raises(MinidmlError, match="--teacher .*nowhere: .*not a minidml run"):
        minidml.train(corpus, tmp_path / "part", cfg, resume=True,
                      teachers=(str(tmp_path / "nowhere"),) * 2)
    # so may their number not: a teacher more (or fewer) would resume another run
    with pytest.raises(MinidmlError, match=r"--resume: the run learnt from 2 teacher\(s\), not "
                                           r"3; give the same --teacher runs"):
        minidml.train(corpus, tmp_path / "part", cfg, resume=True, teachers=(str(moved),) * 3)
    resumed = minidml.train(corpus, tmp_path / "part", cfg, resume=True,
                            teachers=(str(moved),) * 2)
    for a, b in zip(whole.students, resumed.students, strict=True):
        torch.testing.assert_close(parameters(a), parameters(b), rtol=0, atol=0)
    # a teacher whose weights changed is refused
    weights = checkpoints(moved)[-1] / "student-0.pt"
    torch.save({k: v + 1 for k, v in torch.load(weights, weights_only=True).items()}, weights)
    with pytest.raises(MinidmlError, match="has changed since this run started"):
        minidml.train(corpus, tmp_path / "part", cfg, resume=True, teachers=(str(moved),) * 2)


def test_kd_refuses_a_teacher_with_another_tokenizer_or_a_short_context(
        corpus, teacher, tmp_path, capsys):
    other = minidml.train(corpus, tmp_path / "other", TrainConfig(
        students=(Shape(1, 32, 2),), mode="single", steps=2, **{**BASE, "vocab_size": 420}))
    common = [str(corpus), "--mode", "kd", "--students", "1", "--layers", "1", "--width", "32",
              "--heads", "2", "--steps", "2", "--quiet"]
    cases = [
        (["--teacher", str(teacher.path), "--teacher", str(other.path)], "share a tokenizer"),
        (["--teacher", str(teacher.path), "--vocab-size", "420"], "--vocab-size 420"),
        (["--teacher", str(teacher.path), "--context", "64"], "--context 32 or less"),
        ([], "needs at least one --teacher"),
        (["--teacher", str(tmp_path / "nowhere")], "not a minidml run"),
    ]
    for i, (extra, message) in enumerate(cases):
        out = tmp_path / f"kd-{i}"
        with pytest.raises(SystemExit) as exit_:
            main(["train", *common, "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 1, err
        assert_one_line_error(exit_.value.code, err, message)
        assert not out.exists()  # nothing half-made
