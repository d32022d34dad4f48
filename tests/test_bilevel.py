"""Bi-level peer weights: the hypergradient against finite differences, mirror descent, and a
run in which a crippled student loses its weight."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from minidml import Shape, Student, StudentConfig, TrainConfig
from minidml.bilevel import (
    adam_unroll,
    hypergradient,
    hypergradient_nested,
    mirror_step,
    outer_loss,
    unrolled,
)
from minidml.data import Batches, read_lines, tokenize_corpus
from minidml.demo.grammar import write_corpus
from minidml.fused_linear import linear_mutual_loss
from minidml.losses import ensemble_log_probs, ensemble_target_log_probs, mutual_loss
from minidml.model import trunk_call
from minidml.rundir import student_configs
from minidml.tokenizer import Tokenizer
from minidml.trainer import Trainer

V, LR, ALPHA, T = 23, 0.5, 0.7, 1.5


@pytest.fixture
def tiny():
    """Three differently shaped float64 students (tied embeddings) and their batches."""
    torch.manual_seed(0)
    shapes = [(1, 16, 2), (2, 8, 2), (1, 12, 2)]
    students = [Student(StudentConfig(vocab_size=V, n_layers=n, d_model=d, n_heads=h,
                                      context=8)).double() for n, d, h in shapes]
    g = torch.Generator().manual_seed(1)
    xs = [torch.randint(0, V, (3, 8), generator=g) for _ in range(2)]
    ys = [torch.randint(0, V, (3, 8), generator=g) for _ in range(2)]
    xo, yo = torch.randint(0, V, (2, 8), generator=g), torch.randint(0, V, (2, 8), generator=g)
    omega = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    return students, omega, xs, ys, xo, yo


def inner_backward(students, omega, xs, ys):
    """The trainer's inner step: accumulate gradients of the mean loss over micro-batches."""
    for s in students:
        s.zero_grad()
    for x, y in zip(xs, ys, strict=True):
        logits = [s(x).flatten(0, 1) for s in students]
        (mutual_loss(logits, y.flatten(), omega, ALPHA, T).total / len(xs)).backward()


def outer_of(students, omega, xs, ys, xo, yo, objective):
    inner_backward(students, omega, xs, ys)
    logits = [functional_call(s, p, (xo,)).flatten(0, 1)
              for s, p in zip(students, unrolled(students, LR), strict=True)]
    return outer_loss(logits, yo.flatten(), omega, objective).item()


def central_differences(students, omega, xs, ys, xo, yo, objective, eps=1e-6):
    out = []
    for k in range(len(omega)):
        e = torch.zeros_like(omega)
        e[k] = eps
        out.append((outer_of(students, omega + e, xs, ys, xo, yo, objective)
                    - outer_of(students, omega - e, xs, ys, xo, yo, objective)) / (2 * eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("objective", ["ensemble", "sum-ce"])
def test_exact_hypergradient_matches_finite_differences(tiny, objective):
    students, omega, xs, ys, xo, yo = tiny
    fd = central_differences(students, omega, xs, ys, xo, yo, objective)
    inner_backward(students, omega, xs, ys)
    kw = dict(lr=LR, alpha=ALPHA, temperature=T, objective=objective)
    exact = hypergradient(students, omega, xs, xo, yo, variant="exact", **kw)
    first = hypergradient(students, omega, xs, xo, yo, variant="first-order", **kw)
    approx = hypergradient(students, omega, xs, xo, yo, variant="fd", **kw)
    rel = ((exact.grad - fd).norm() / fd.norm()).item()
    assert rel < 1e-4, rel
    # the second-order term is real: first-order misses it by far more than the exact error
    second_order = (exact.grad - first.grad).norm().item()
    assert second_order > 100 * (exact.grad - fd).norm().item()
    torch.testing.assert_close(first.grad, exact.direct)
    assert ((approx.grad - exact.grad).norm() / second_order).item() < 1e-2
    torch.testing.assert_close(exact.outer_loss.item(),
                               outer_of(students, omega, xs, ys, xo, yo, objective))


@pytest.mark.parametrize("inner", ["reference", "hidden"])
def test_exact_hypergradient_equals_nested_torch_func(tiny, inner):
    """Nested torch.func.grad through the plain loss and through the loss training uses."""
    students, omega, xs, ys, xo, yo = tiny
    xs, ys = xs[:1], ys[:1]
    inner_backward(students, omega, xs, ys)
    exact = hypergradient(students, omega, xs, xo, yo, lr=LR, alpha=ALPHA, temperature=T)

    def from_hidden(prms, w):
        hidden = [trunk_call(s, p, xs[0]).flatten(0, 1)
                  for s, p in zip(students, prms, strict=True)]
        return linear_mutual_loss(hidden, [p["embed.weight"] for p in prms], ys[0].flatten(),
                                  w, ALPHA, T).total

    nested = hypergradient_nested(students, omega, xs[0], ys[0], xo, yo, lr=LR, alpha=ALPHA,
                                  temperature=T,
                                  inner_loss=from_hidden if inner == "hidden" else None)
    torch.testing.assert_close(exact.grad, nested, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # a caller with the step's logits hands them over
        logits = [[s(x).flatten(0, 1) for s in students] for x in xs]
        hidden = [[s.trunk(x).flatten(0, 1) for s in students] for x in xs]
    reused = hypergradient(students, omega, xs, xo, yo, lr=LR, alpha=ALPHA, temperature=T,
                           logits=logits)
    torch.testing.assert_close(reused.grad, exact.grad, rtol=1e-12, atol=1e-14)
    chunked = hypergradient(students, omega, xs, xo, yo, lr=LR, alpha=ALPHA, temperature=T,
                            hidden=hidden)
    torch.testing.assert_close(chunked.grad, exact.grad, rtol=1e-9, atol=1e-12)


class Opaque(torch.nn.Module):
    """A student seen only through forward(): the hypergradient's generic JVP path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_generic_modules_get_the_same_exact_hypergradient(tiny):
    students, omega, xs, ys, xo, yo = tiny
    inner_backward(students, omega, xs, ys)
    kw = dict(lr=LR, alpha=ALPHA, temperature=T)
    native = hypergradient(students, omega, xs, xo, yo, **kw)
    opaque = [Opaque(s) for s in students]
    assert not hasattr(opaque[0], "logits_jvp")
    generic = hypergradient(opaque, omega, xs, xo, yo, **kw)
    torch.testing.assert_close(generic.grad, native.grad, rtol=1e-10, atol=1e-13)


def test_ensemble_target_log_probs_gathers_the_mixture(tiny):
    torch.manual_seed(3)
    logits = [torch.randn(11, V, dtype=torch.float64) * 3 for _ in range(3)]
    y = torch.randint(0, V, (11,))
    omega = torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64)  # a zero weight too
    want = ensemble_log_probs(logits, omega).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(ensemble_target_log_probs(logits, y, omega), want)
    mix = sum(w * torch.softmax(z, -1) for w, z in zip(omega, logits, strict=True))
    torch.testing.assert_close(want, mix.gather(1, y[:, None]).squeeze(1).log())


def test_hypergradient_changes_nothing(tiny):
    students, omega, xs, ys, xo, yo = tiny
    inner_backward(students, omega, xs, ys)
    before = [{n: p.detach().clone() for n, p in s.named_parameters()} for s in students]
    grads = [{n: p.grad.clone() for n, p in s.named_parameters()} for s in students]
    hypergradient(students, omega, xs, xo, yo, lr=LR, alpha=ALPHA, temperature=T)
    for s, b, g in zip(students, before, grads, strict=True):
        for n, p in s.named_parameters():
            assert torch.equal(p, b[n]) and torch.equal(p.grad, g[n])


def test_mirror_descent_stays_on_the_simplex_under_extreme_gradients():
    g = torch.Generator().manual_seed(0)
    omega = torch.full((5,), 0.2)
    for i in range(1000):
        scale = 10.0 ** torch.randint(-3, 30, (1,), generator=g).item()
        grad = torch.randn(5, generator=g) * scale
        if i % 97 == 0:
            grad[i % 5] = float("nan") if i % 2 else float("inf")
        omega = mirror_step(omega, grad, lr=float(torch.rand(1, generator=g)) * 10)
        assert torch.isfinite(omega).all() and (omega >= 0).all()
        assert abs(omega.sum().item() - 1.0) < 1e-6


def test_mirror_step_is_exponentiated_gradient():
    omega = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    expected = omega * torch.exp(-0.1 * grad)
    torch.testing.assert_close(mirror_step(omega, grad, 0.1), expected / expected.sum())


class Shuffled(Student):
    """A crippled student: it sees its context in a fixed scrambled order."""

    def trunk(self, ids):
        perm = torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))
        return super().trunk(ids[:, perm])


@pytest.mark.slow
def test_a_crippled_student_loses_its_peer_weight(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", 3000, seed=0)
    tok = Tokenizer.train(read_lines([corpus]), vocab_size=400)
    batches = Batches(tokenize_corpus([corpus], tok, tmp_path), 32, 16)
    cfg = TrainConfig(students=(Shape(1, 64, 2),) * 3, context=32, batch_size=16, steps=120,
                      lr=3e-3, warmup_steps=10, outer_every=5, mode="wml", alpha=0.5,
                      schedule="cosine")
    torch.manual_seed(0)
    scfg = student_configs(cfg, tok.vocab_size)
    trainer = Trainer(cfg, [Student(scfg[0]), Shuffled(scfg[1]), Student(scfg[2])], batches)
    for _ in range(cfg.steps):
        trainer.train_step()
    omega = trainer.omega
    assert abs(omega.sum().item() - 1) < 1e-6
    assert omega[1] < 0.1, omega  # far below 1/K
    assert omega[0] > 0.2 and omega[2] > 0.2, omega  # healthy students keep theirs


# ----------------------------------------------------------------------------- --unroll adam
def warm_adamw(students, omega, xs, ys, steps=3, lr=0.05):
    """AdamW optimisers (weight decay on, as the trainer's) with a few real steps behind them,
    and the gradients of one more inner step in .grad."""
    opts = [torch.optim.AdamW(s.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
            for s in students]
    for _ in range(steps):
        inner_backward(students, omega, xs, ys)
        for o in opts:
            o.step()
    inner_backward(students, omega, xs, ys)
    return opts


@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_the_adam_unroll_is_the_step_adamw_takes(tiny, max_norm):
    """... after the trainer's gradient clipping too (0.05 clips every student here)."""
    students, omega, xs, ys, _, _ = tiny
    opts = warm_adamw(students, omega, xs, ys)
    norms = [float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in s.parameters()
                                                         if p.grad is not None])))
             for s in students]
    predicted = adam_unroll(students, opts, 0.05, max_norm).step(students)
    if max_norm is not None:
        assert min(norms) > max_norm
        for s in students:
            torch.nn.utils.clip_grad_norm_(s.parameters(), max_norm)
    for o in opts:
        o.step()
    for s, want in zip(students, predicted, strict=True):
        for n, p in s.named_parameters():
            torch.testing.assert_close(p.detach(), want[n], rtol=1e-12, atol=1e-14)


def test_the_adam_unroll_hypergradient_matches_finite_differences_and_nested(tiny):
    """Exact under the approximation (AdamW's preconditioner and momentum held constant):
    against central differences of L_out(ω) through θ'(ω) = base − scale ⊙ ∇L(ω), and
    against nested torch.func.grad through the same step."""
    students, omega, xs, ys, xo, yo = tiny
    opts = warm_adamw(students, omega, xs, ys)
    lr = 0.05
    unroll = adam_unroll(students, opts, lr)

    def outer(w):
        inner_backward(students, w, xs, ys)
        logits = [functional_call(s, p, (xo,)).flatten(0, 1)
                  for s, p in zip(students, unroll.step(students), strict=True)]
        return outer_loss(logits, yo.flatten(), w).item()

    eps = 1e-6
    fd = torch.tensor([(outer(omega + eps * e) - outer(omega - eps * e)) / (2 * eps)
                       for e in torch.eye(len(omega), dtype=torch.float64)])
    inner_backward(students, omega, xs, ys)
    kw = dict(lr=lr, alpha=ALPHA, temperature=T)
    exact = hypergradient(students, omega, xs, xo, yo, unroll=unroll, **kw)
    assert ((exact.grad - fd).norm() / fd.norm()).item() < 1e-4
    sgd = hypergradient(students, omega, xs, xo, yo, **kw)
    # AdamW's step is far larger per parameter than η·g: so is its second-order term
    assert (exact.grad - exact.direct).norm() > 10 * (sgd.grad - sgd.direct).norm()
    inner_backward(students, omega, xs[:1], ys[:1])
    unroll1 = adam_unroll(students, opts, lr)
    one = hypergradient(students, omega, xs[:1], xo, yo, unroll=unroll1, **kw)
    nested = hypergradient_nested(students, omega, xs[0], ys[0], xo, yo, unroll=unroll1, **kw)
    torch.testing.assert_close(one.grad, nested, rtol=1e-9, atol=1e-12)
