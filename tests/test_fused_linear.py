"""The mutual loss from hidden states against the plain reference on the logits h·Wᵀ: values
and gradients (float64 and float32, T ≠ 1, ω with zeros, K = 1…5, chunks that do not divide
N, upstream gradients that are not 1), gradients for ω and of gradients, the hypergradient
through it against finite differences, and what it keeps for backward."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from minidml import Student, StudentConfig
from minidml.bilevel import hypergradient, hypergradient_nested, outer_loss, unrolled
from minidml.fused_linear import (
    linear_mutual_loss,
    linear_peer_directional,
    linear_target_log_probs,
)
from minidml.losses import mutual_loss


def problem(k: int, n: int = 37, v: int = 53, d: int = 8, dtype=torch.float64, seed: int = 0,
            zeros: int = 0):
    """K students of different widths: hidden states, head weights, targets and ω (with
    ``zeros`` weights set to 0)."""
    g = torch.Generator().manual_seed(seed)
    hidden = [torch.randn(n, d + 3 * i, generator=g, dtype=dtype).requires_grad_()
              for i in range(k)]
    weights = [(0.7 * torch.randn(v, d + 3 * i, generator=g, dtype=dtype)).requires_grad_()
               for i in range(k)]
    y = torch.randint(0, v, (n,), generator=g)
    omega = torch.rand(k, generator=g, dtype=dtype) + 0.1
    omega[:zeros] = 0
    return hidden, weights, y, omega / omega.sum()


def reference(hidden, weights, y, omega, alpha, temperature):
    logits = [h @ w.t() for h, w in zip(hidden, weights, strict=True)]
    return mutual_loss(logits, y, omega, alpha, temperature)


def assert_lists_close(got, want, **tol):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_values_and_gradients_equal_the_reference(k, temperature, dtype):
    hidden, weights, y, omega = problem(k, dtype=dtype, seed=k, zeros=1 if k > 2 else 0)
    up = torch.randn(k, dtype=dtype, generator=torch.Generator().manual_seed(9))  # not 1
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4,
                                                                            atol=1e-5)
    for alpha in (0.0, 0.4):
        want = reference(hidden, weights, y, omega, alpha, temperature)
        for chunk in (5, 16, 1000):  # 37 rows: chunks that do not divide N, and one chunk
            got = linear_mutual_loss(hidden, weights, y, omega, alpha, temperature,
                                     chunk_rows=chunk)
            assert_lists_close(got, want, **tol)
            g_got = torch.autograd.grad((got.loss * up).sum(), [*hidden, *weights])
            g_want = torch.autograd.grad((want.loss * up).sum(), [*hidden, *weights],
                                         retain_graph=True)
            assert_lists_close(g_got, g_want, **tol)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gradients_through_ce_kl_and_omega(temperature):
    """Upstream gradients on ce and kl themselves, and a gradient for ω: the differentiable
    path, against the reference."""
    k = 4
    hidden, weights, y, omega = problem(k, seed=5, zeros=1)
    omega.requires_grad_()
    g = torch.Generator().manual_seed(2)
    ups = [torch.randn(k, dtype=torch.float64, generator=g) for _ in range(3)]
    got = linear_mutual_loss(hidden, weights, y, omega, 0.6, temperature, chunk_rows=6)
    want = reference(hidden, weights, y, omega, 0.6, temperature)
    inputs = [omega, *hidden, *weights]
    g_got = torch.autograd.grad(sum((t * u).sum() for t, u in zip(got[1:], ups, strict=True)),
                                inputs)
    g_want = torch.autograd.grad(sum((t * u).sum() for t, u in zip(want[1:], ups,
                                                                  strict=True)), inputs)
    assert_lists_close(g_got, g_want, rtol=1e-10, atol=1e-12)
    assert g_got[0].abs().sum() > 0


def test_gradcheck_and_gradgradcheck_float64():
    """Student 1's loss w.r.t. its own hidden states, head and ω, to second order."""
    hidden, weights, y, omega = problem(3, n=7, v=9, d=4, seed=3)
    hs = [h.detach() for h in hidden]
    ws = [w.detach() for w in weights]

    def f(h1, w1, om):
        out = linear_mutual_loss([hs[0], h1, hs[2]], [ws[0], w1, ws[2]], y, om, 0.5, 1.7,
                                 chunk_rows=3)
        return out.loss[1], out.ce[1], out.kl[1]

    args = (hs[1].clone().requires_grad_(), ws[1].clone().requires_grad_(),
            omega.clone().requires_grad_())
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_no_gradient_is_computed_without_a_graph():
    hidden, weights, y, omega = problem(3)
    with torch.no_grad():
        got = linear_mutual_loss(hidden, weights, y, omega, 0.5, 2.0, chunk_rows=8)
    want = reference(hidden, weights, y, omega, 0.5, 2.0)
    assert_lists_close(got, want, rtol=1e-10, atol=1e-12)
    assert not got.total.requires_grad


def test_nothing_of_the_size_of_the_logits_is_kept_for_backward():
    k, n, v, d = 4, 512, 2048, 16
    hidden, weights, y, omega = problem(k, n=n, v=v, d=d, dtype=torch.float32)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = linear_mutual_loss(hidden, weights, y, omega, 0.5, 2.0, chunk_rows=64)
    out.total.backward()
    widest = d + 3 * (k - 1)
    assert sizes and max(sizes) <= max(v, n) * widest  # hidden states, weights, gradients
    assert max(sizes) * 8 < n * v  # one student's logits would be N×V
    assert all(h.grad is not None for h in hidden)


def test_bf16_hidden_states_accumulate_in_float32():
    hidden, weights, y, omega = problem(3, n=64, v=97, dtype=torch.float32, seed=4)
    h16 = [h.detach().bfloat16().requires_grad_() for h in hidden]
    got = linear_mutual_loss(h16, weights, y, omega, 0.5, 2.0, chunk_rows=20)
    assert got.loss.dtype == torch.float32
    want = reference([h.float() for h in h16], weights, y, omega, 0.5, 2.0)
    assert_lists_close(got, want, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(got.total, h16)
    assert all(g.dtype == torch.bfloat16 for g in grads)


def test_a_bf16_head_is_the_reference_on_bf16_logits():
    """head_dtype=bf16: the logits are the bf16 product of bf16 operands (what autocast gives
    an unfused head), everything after them float32; the gradients carry bf16 rounding only."""
    hidden, weights, y, omega = problem(4, n=70, v=301, d=16, dtype=torch.float32, seed=6)
    for temperature in (1.0, 2.0):
        got = linear_mutual_loss(hidden, weights, y, omega, 0.5, temperature, chunk_rows=32,
                                 head_dtype=torch.bfloat16)
        logits = [(h.bfloat16() @ w.bfloat16().t()).float()
                  for h, w in zip(hidden, weights, strict=True)]
        want = mutual_loss(logits, y, omega, 0.5, temperature)
        assert_lists_close(got, want, rtol=1e-5, atol=1e-6)
        exact = reference(hidden, weights, y, omega, 0.5, temperature)
        g_got = torch.autograd.grad(got.total, [*hidden, *weights])
        g_exact = torch.autograd.grad(exact.total, [*hidden, *weights])
        for a, b in zip(g_got, g_exact, strict=True):
            assert a.dtype == torch.float32
            assert float((a - b).norm() / b.norm()) < 2e-2


# ----------------------------------------------------------------------------- bi-level
V, LR, ALPHA, T = 23, 0.5, 0.7, 1.5


class Trunk(torch.nn.Module):
    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, x):
        return self.student.trunk(x)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    students = [Student(StudentConfig(vocab_size=V, n_layers=n, d_model=d, n_heads=2,
                                      context=8)).double() for n, d in [(1, 16), (2, 8), (1, 12)]]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, V, (3, 8), generator=g), torch.randint(0, V, (3, 8), generator=g)
    xo, yo = torch.randint(0, V, (2, 8), generator=g), torch.randint(0, V, (2, 8), generator=g)
    return students, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), x, y, xo, yo


def inner_backward(students, omega, x, y):
    """The training step's backward pass, through the loss from hidden states."""
    for s in students:
        s.zero_grad()
    hidden = [s.trunk(x).flatten(0, 1) for s in students]
    linear_mutual_loss(hidden, [s.embed.weight for s in students], y.flatten(), omega, ALPHA,
                       T, chunk_rows=5).total.backward()


def test_hypergradient_through_the_loss_from_hidden_states(tiny):
    """The exact hypergradient from the inner step this loss computed equals central finite
    differences of L_out(ω) and nested torch.func.grad through this very loss."""
    students, omega, x, y, xo, yo = tiny

    def outer_at(w):
        inner_backward(students, w, x, y)
        logits = [functional_call(s, p, (xo,)).flatten(0, 1)
                  for s, p in zip(students, unrolled(students, LR), strict=True)]
        return outer_loss(logits, yo.flatten(), w).item()

    eps = 1e-6
    fd = torch.tensor([(outer_at(omega + eps * e) - outer_at(omega - eps * e)) / (2 * eps)
                       for e in torch.eye(3, dtype=torch.float64)])
    inner_backward(students, omega, x, y)
    exact = hypergradient(students, omega, [x], xo, yo, lr=LR, alpha=ALPHA, temperature=T)
    assert ((exact.grad - fd).norm() / fd.norm()).item() < 1e-4
    assert (exact.grad - exact.direct).norm() > 100 * (exact.grad - fd).norm()  # 2nd order
    # the outer step from hidden states, as the trainer takes it: the same hypergradient
    with torch.no_grad():
        hidden = [[s.trunk(x).flatten(0, 1) for s in students]]
    for objective in ("ensemble", "sum-ce"):
        kw = dict(lr=LR, alpha=ALPHA, temperature=T, objective=objective)
        from_logits = hypergradient(students, omega, [x], xo, yo, **kw)
        from_hidden = hypergradient(students, omega, [x], xo, yo, hidden=hidden, **kw)
        for field in ("grad", "direct", "outer_loss"):
            torch.testing.assert_close(getattr(from_hidden, field), getattr(from_logits, field),
                                       rtol=1e-10, atol=1e-13)

    trunks = [Trunk(s) for s in students]

    def inner(prms, w):
        hidden = [functional_call(t, {f"student.{n}": v for n, v in p.items()}, (x,))
                  .flatten(0, 1) for t, p in zip(trunks, prms, strict=True)]
        return linear_mutual_loss(hidden, [p["embed.weight"] for p in prms], y.flatten(), w,
                                  ALPHA, T, chunk_rows=5).total

    nested = hypergradient_nested(students, omega, x, y, xo, yo, lr=LR, alpha=ALPHA,
                                  temperature=T, inner_loss=inner)
    torch.testing.assert_close(exact.grad, nested, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [16, 50, 64])
def test_target_log_probs_from_hidden_states_equal_the_cross_entropy(chunk):
    """Values, and gradients for an upstream gradient that is not 1, against the logits."""
    hidden, weights, y, _ = problem(1, n=50, v=70, dtype=torch.float64)
    got = linear_target_log_probs(hidden[0], weights[0], y, chunk_rows=chunk)
    want = -torch.nn.functional.cross_entropy(hidden[0] @ weights[0].t(), y, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert_lists_close(torch.autograd.grad(got, [hidden[0], weights[0]], g),
                       torch.autograd.grad(want, [hidden[0], weights[0]], g),
                       rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert not linear_target_log_probs(hidden[0], weights[0], y).requires_grad
    weights[0].requires_grad_(False)  # a gradient for the hidden states alone
    (gh,) = torch.autograd.grad(linear_target_log_probs(hidden[0], weights[0], y, chunk).sum(),
                                [hidden[0]])
    want_h = torch.autograd.grad(-torch.nn.functional.cross_entropy(
        hidden[0] @ weights[0].t(), y, reduction="sum"), [hidden[0]])[0]
    torch.testing.assert_close(gh, want_h, rtol=1e-10, atol=1e-12)


def test_target_log_probs_keep_nothing_of_the_size_of_the_logits():
    n, v, d = 512, 2048, 16
    hidden, weights, y, _ = problem(1, n=n, v=v, d=d, dtype=torch.float32)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t,
                                                  lambda t: t):
        lp = linear_target_log_probs(hidden[0], weights[0], y, chunk_rows=64)
    lp.sum().backward()
    assert sizes and max(sizes) <= v * d and hidden[0].grad is not None


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_peer_directional_from_hidden_states_equals_the_logits(temperature):
    """D[i, j] = Σ ⟨p_i − p_j, dz_i⟩ / T with dz_i = dh_i W_iᵀ + h_i dW_iᵀ, against the
    logits built in full (chunks that do not divide N)."""
    k, n, v = 4, 37, 53
    hidden, weights, _, _ = problem(k, n=n, v=v)
    g = torch.Generator().manual_seed(7)
    tangents = [(torch.randn(h.shape, generator=g, dtype=h.dtype),
                 torch.randn(w.shape, generator=g, dtype=w.dtype))
                for h, w in zip(hidden, weights, strict=True)]
    with torch.no_grad():
        p = torch.stack([torch.softmax(h @ w.t() / temperature, -1)
                         for h, w in zip(hidden, weights, strict=True)])
        want = torch.stack([
            torch.stack([((p[i] - p[j]) * (dh @ w.t() + h @ dw.t())).sum()
                         for j in range(k)]) / temperature
            for i, (h, w, (dh, dw)) in enumerate(zip(hidden, weights, tangents, strict=True))])
    got = linear_peer_directional(hidden, weights, tangents, temperature, chunk_rows=10)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.diagonal(got).abs().max() < 1e-12 and want.abs().max() > 1e-2
