"""minidml's Muon against a plain float64 reference, against torch's own Muon, and the
precision its Newton–Schulz iteration runs in."""

from __future__ import annotations

import math

import pytest
import torch

from minidml.muon import Muon, orthogonalise
from minidml.schedule import make_optimizer


def _reference_ns(u: list[list[float]], steps: int = 5) -> list[list[float]]:
    """The quintic Newton–Schulz iteration in plain Python lists of floats."""
    a, b, c = 3.4445, -4.7750, 2.0315

    def mm(p, q):
        return [[sum(p[i][k] * q[k][j] for k in range(len(q))) for j in range(len(q[0]))]
                for i in range(len(p))]

    def t(p):
        return [list(r) for r in zip(*p, strict=True)]

    tall = len(u) > len(u[0])
    x = t(u) if tall else [list(r) for r in u]
    norm = math.sqrt(sum(v * v for r in x for v in r))
    x = [[v / norm for v in r] for r in x]
    for _ in range(steps):
        g = mm(x, t(x))
        g2 = mm(g, g)
        poly = [[b * g[i][j] + c * g2[i][j] for j in range(len(g))] for i in range(len(g))]
        px = mm(poly, x)
        x = [[a * x[i][j] + px[i][j] for j in range(len(x[0]))] for i in range(len(x))]
    return t(x) if tall else x


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (6, 6)])
def test_newton_schulz_is_the_plain_iteration_and_nearly_orthogonal(shape):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(shape, generator=g, dtype=torch.float64)
    got = orthogonalise(u, torch.float64)
    want = torch.tensor(_reference_ns(u.tolist()), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # every singular value sent towards 1 (the iteration's band), whatever U's were
    s = torch.linalg.svdvals(got)
    assert s.min() > 0.5 and s.max() < 1.5, s
    assert torch.linalg.svdvals(u).max() / torch.linalg.svdvals(u).min() > 2


def test_a_step_is_the_plain_update():
    torch.manual_seed(0)
    w0 = torch.randn(6, 4, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.01, weight_decay=0.1, momentum=0.9, dtype=torch.float64)
    grads = [torch.randn(6, 4, dtype=torch.float64) for _ in range(3)]
    buf, want = torch.zeros_like(w0), w0.clone()
    for grad in grads:
        w.grad = grad.clone()
        opt.step()
        buf = 0.9 * buf + 0.1 * grad
        look = 0.1 * grad + 0.9 * buf
        o = torch.tensor(_reference_ns(look.tolist()), dtype=torch.float64)
        want = want * (1 - 0.01 * 0.1) - 0.01 * 0.2 * math.sqrt(6) * o
        torch.testing.assert_close(w.detach(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], buf, rtol=1e-12, atol=1e-12)


def test_matrices_of_one_shape_are_orthogonalised_together_as_each_alone():
    """A batch of matrices gives each matrix's own iteration; in the optimiser, matrices of
    one shape (a tall one among them, turned) step together exactly as each would alone."""
    g = torch.Generator().manual_seed(2)
    batch = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    together = orthogonalise(batch, torch.float64)
    for u, got in zip(batch, together, strict=True):
        torch.testing.assert_close(got, orthogonalise(u, torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(orthogonalise(batch.mT, torch.float64), together.mT,
                               rtol=1e-12, atol=1e-12)
    shapes = [(5, 8), (8, 5), (5, 8), (3, 4)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64))
              for s in shapes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    kw = {"lr": 0.02, "weight_decay": 0.1, "dtype": torch.float64}
    opt, singles = Muon(params, **kw), [Muon([p], **kw) for p in alone]
    for _ in range(3):
        for p, q in zip(params, alone, strict=True):
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            q.grad = p.grad.clone()
        opt.step()
        for single in singles:
            single.step()
        for p, q in zip(params, alone, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_in_bf16_it_is_torchs_muon():
    """torch's Muon runs the iteration in bf16: with the same dtype minidml's matches it."""
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(16, 48))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([a], lr=0.004, weight_decay=0.1, dtype=torch.bfloat16)
    theirs = torch.optim.Muon([b], lr=0.004, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(4):
        grad = torch.randn(16, 48)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_iteration_runs_in_the_runs_precision():
    from minidml.config import TrainConfig
    from minidml.model import Student, StudentConfig

    student = Student(StudentConfig(vocab_size=50, n_layers=1, d_model=16, n_heads=2,
                                    context=8))
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        opt = make_optimizer(student, TrainConfig(optimizer="muon"), precision)
        assert opt.parts["muon"].dtype == dtype
    with pytest.raises(ValueError, match="matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
