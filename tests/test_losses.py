"""The mutual-learning loss against plain float64 implementations written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minidml.fused_linear import linear_mutual_loss
from minidml.losses import mutual_kl_reference, mutual_loss, peer_weights


# mutual_loss's default, and the plain path where it can be chosen
def production_loss(logits, targets, omega, alpha, temperature=1.0):
    """The loss training uses (from hidden states) on these logits: an identity head."""
    eye = torch.eye(logits[0].shape[-1], dtype=torch.promote_types(logits[0].dtype,
                                                                   torch.float32))
    return linear_mutual_loss(list(logits), [eye] * len(logits), targets, omega, alpha,
                              temperature)


IMPLEMENTATIONS = [pytest.param(production_loss, id="production"),
                   pytest.param(mutual_loss, id="plain")]


def make_logits(k: int, n: int = 6, v: int = 7, seed: int = 0, scale: float = 3.0,
                dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, v, generator=gen, dtype=torch.float64) * scale).to(dtype)
            .requires_grad_() for _ in range(k)]


def make_omega(k: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    return (torch.rand(k, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()


# ----------------------------------------------------------------------------- references
def softmax_list(row: list[float], t: float) -> list[float]:
    m = max(x / t for x in row)
    e = [math.exp(x / t - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


def dumb_peer_weights(omega: list[float]) -> list[list[float]]:
    k = len(omega)
    out = [[0.0] * k for _ in range(k)]
    for i in range(k):
        denom = sum(omega[m] for m in range(k) if m != i)
        for j in range(k):
            if j != i and denom > 0:
                out[i][j] = omega[j] / denom
    return out


def dumb_mutual_kl(logits, omega, t: float) -> list[float]:
    """Σ_{j≠i} ω̃_j · mean over tokens of Σ_v p_j,v (log p_j,v − log p_i,v), in Python floats."""
    z = [x.detach().double().tolist() for x in logits]
    w = dumb_peer_weights(omega.detach().double().tolist())
    k, n = len(z), len(z[0])
    out = []
    for i in range(k):
        total = 0.0
        for j in range(k):
            if j == i:
                continue
            kl = 0.0
            for tok in range(n):
                pj, pi = softmax_list(z[j][tok], t), softmax_list(z[i][tok], t)
                kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pj, pi, strict=True))
            total += w[i][j] * kl / n
        out.append(total)
    return out


def dumb_ce(z: torch.Tensor, y: torch.Tensor) -> float:
    rows, targets = z.detach().double().tolist(), y.tolist()
    nll = [-math.log(softmax_list(r, 1.0)[t]) for r, t in zip(rows, targets, strict=True)]
    return sum(nll) / len(nll)


def mixtures(logits, omega, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p_i = softmax(z_i / T) [K,N,V] and q_i = Σ_{j≠i} ω̃_j p_j [K,N,V], in float64."""
    p = torch.stack([F.softmax(z.detach().double() / t, -1) for z in logits])
    w = torch.tensor(dumb_peer_weights(omega.detach().double().tolist()), dtype=torch.float64)
    return p, torch.einsum("ij,jnv->inv", w, p)


# ----------------------------------------------------------------------------- peer_weights
@settings(max_examples=80, deadline=None)
@given(omega=st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 10.0)), min_size=1, max_size=6))
def test_peer_weights_match_the_definition(omega):
    w = peer_weights(torch.tensor(omega, dtype=torch.float64))
    ref = torch.tensor(dumb_peer_weights(omega), dtype=torch.float64)
    assert torch.allclose(w, ref, rtol=1e-12, atol=0)
    k = len(omega)
    assert torch.all(torch.diagonal(w) == 0)
    for i in range(k):
        has_peer = any(omega[j] > 0 for j in range(k) if j != i)
        assert w[i].sum().item() == pytest.approx(1.0 if has_peer else 0.0, abs=1e-12)
    # only ratios matter
    assert torch.allclose(peer_weights(torch.tensor(omega, dtype=torch.float64) * 7.5), w,
                          rtol=1e-12, atol=0)


def test_peer_weights_zero_peer_row_stays_zero():
    w = peer_weights(torch.tensor([1.0, 0.0, 0.0]))
    assert w.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert peer_weights(torch.tensor([0.3])).tolist() == [[0.0]]  # one student: no peers


def test_peer_weights_gradient():
    omega = make_omega(4)
    assert torch.autograd.gradcheck(peer_weights, (omega,))
    # d W_ij / d ω_m for i = 0, j = 1: (δ_jm S − ω_j [m ≠ i]) / S², S = Σ_{m≠i} ω_m
    (g,) = torch.autograd.grad(peer_weights(omega)[0, 1], omega)
    om = omega.detach()
    s = om[1:].sum()
    expected = torch.tensor([0.0, (s - om[1]) / s**2, -om[1] / s**2, -om[1] / s**2],
                            dtype=torch.float64)
    assert torch.allclose(g, expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- mutual KL
@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("t", [0.5, 1.0, 2.5])
def test_mutual_kl_reference_equals_a_dumb_implementation(k, t):
    logits, omega = make_logits(k, seed=k), make_omega(k, seed=k)
    got = mutual_kl_reference(logits, omega, t)
    assert got.shape == (k,) and got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(dumb_mutual_kl(logits, omega, t),
                                            dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_mutual_kl_equals_the_mixture_identity(k):
    # Σ_j ω̃_j KL(p_j ‖ p_i) = Σ_j ω̃_j Σ_v p_j log p_j − Σ_v q_i log p_i  (DESIGN §2)
    t = 1.7
    logits, omega = make_logits(k, seed=10 + k), make_omega(k, seed=10 + k)
    p, q = mixtures(logits, omega, t)
    w = torch.tensor(dumb_peer_weights(omega.tolist()), dtype=torch.float64)
    neg_entropy = (p * p.log()).sum(-1).mean(-1)  # [K]
    expected = w @ neg_entropy - (q * p.log()).sum(-1).mean(-1)
    assert torch.allclose(mutual_kl_reference(logits, omega, t), expected, rtol=1e-10, atol=1e-12)


def test_mutual_kl_with_a_zero_peer_row():
    logits = make_logits(3, seed=2)
    omega = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    got = mutual_kl_reference(logits, omega, 1.0)
    assert got[0].item() == 0.0
    assert torch.allclose(got, torch.tensor(dumb_mutual_kl(logits, omega, 1.0),
                                            dtype=torch.float64), rtol=1e-10)


def test_mutual_kl_is_zero_for_identical_students_and_positive_otherwise():
    z = make_logits(1, seed=3)[0].detach()
    same = [z, z.clone(), z + 5.0]  # softmax is shift-invariant: three identical students
    assert torch.allclose(mutual_kl_reference(same, make_omega(3), 1.3),
                          torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert (mutual_kl_reference(make_logits(3, seed=4), make_omega(3), 1.3) > 0).all()


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("t", [0.7, 1.0, 3.0])
def test_gradient_wrt_own_logits_is_p_minus_q(k, t):
    logits, omega = make_logits(k, seed=20 + k), make_omega(k, seed=20 + k)
    n = logits[0].shape[0]
    upstream = torch.randn(k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    kl = mutual_kl_reference(logits, omega, t)
    grads = torch.autograd.grad((upstream * kl).sum(), logits)
    p, q = mixtures(logits, omega, t)
    for i in range(k):
        expected = upstream[i] * (p[i] - q[i]) / (t * n)
        assert torch.allclose(grads[i], expected, rtol=1e-9, atol=1e-13), i


@pytest.mark.parametrize("k", [2, 4])
def test_peers_are_detached(k):
    logits, omega = make_logits(k, seed=30 + k), make_omega(k)
    kl = mutual_kl_reference(logits, omega, 2.0)
    for i in range(k):
        grads = torch.autograd.grad(kl[i], logits, retain_graph=True, allow_unused=True)
        for j, g in enumerate(grads):
            if j != i:
                assert g is None or torch.all(g == 0), (i, j)
            else:
                assert g is not None and g.abs().sum() > 0


def test_gradient_wrt_omega():
    k, t = 4, 1.5
    logits, omega = make_logits(k, seed=40), make_omega(k, seed=40)
    kl = mutual_kl_reference(logits, omega, t)
    upstream = torch.tensor([0.3, -1.0, 2.0, 0.7], dtype=torch.float64)
    (g,) = torch.autograd.grad((upstream * kl).sum(), omega)
    # D_ij = mean KL(p_j ‖ p_i); d kl_i/dω_m = Σ_j D_ij (δ_jm S_i − ω_j [m ≠ i]) / S_i²
    p, _ = mixtures(logits, omega, t)
    om = omega.detach()
    expected = torch.zeros(k, dtype=torch.float64)
    for i in range(k):
        s = om.sum() - om[i]
        for j in range(k):
            if j == i:
                continue
            d = (p[j] * (p[j].log() - p[i].log())).sum(-1).mean()
            for m in range(k):
                if m != i:
                    expected[m] += upstream[i] * d * ((m == j) * s - om[j]) / s**2
    assert torch.allclose(g, expected, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("k", [2, 3])
def test_gradcheck_mutual_kl_reference(k):
    t = 1.8
    logits, omega = make_logits(k, n=3, v=4, seed=50 + k), make_omega(k, seed=50 + k)
    for i in range(k):
        # for student i, the peers are constants: vary only z_i (and ω)
        def kl_i(z_i, om, i=i):
            zs = [z_i if j == i else logits[j].detach() for j in range(k)]
            return mutual_kl_reference(zs, om, t)[i]

        assert torch.autograd.gradcheck(kl_i, (logits[i], omega))
        assert torch.autograd.gradgradcheck(kl_i, (logits[i], omega))
    assert torch.autograd.gradcheck(
        lambda om: mutual_kl_reference([z.detach() for z in logits], om, t), (omega,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_logits_are_computed_in_float32(dtype):
    logits = [z.detach().to(dtype) for z in make_logits(3, seed=60)]
    omega = make_omega(3).detach().float()
    got = mutual_kl_reference(logits, omega, 1.0)
    assert got.dtype == torch.float32
    ref = dumb_mutual_kl([z.double() for z in logits], omega.double(), 1.0)
    assert torch.allclose(got.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4,
                          atol=1e-6)


def test_gradient_wrt_omega_is_finite_when_a_row_has_no_peers():
    logits = [z.detach().float() for z in make_logits(3, seed=70, scale=6.0)]
    omega = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    (g,) = torch.autograd.grad(mutual_kl_reference(logits, omega, 1.0).sum(), omega)
    assert torch.isfinite(g).all() and g.abs().max() < 1e6


# ----------------------------------------------------------------------------- mutual_loss
def targets_for(n: int = 6, v: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("options", IMPLEMENTATIONS)
@pytest.mark.parametrize("k, alpha, t", [(2, 0.5, 1.0), (3, 0.3, 2.0), (4, 1.0, 0.5),
                                         (5, 0.9, 3.0)])
def test_mutual_loss_equals_reference(options, k, alpha, t):
    logits, omega, y = make_logits(k, seed=80 + k), make_omega(k, seed=80 + k), targets_for()
    out = options(logits, y, omega, alpha, t)
    ce = torch.tensor([dumb_ce(z, y) for z in logits], dtype=torch.float64)
    kl = torch.tensor(dumb_mutual_kl(logits, omega, t), dtype=torch.float64)
    loss = (1 - alpha) * ce + alpha * t**2 * kl
    assert torch.allclose(out.ce.double(), ce, rtol=1e-5)
    assert torch.allclose(out.kl.double(), kl, rtol=1e-5, atol=1e-7)
    assert torch.allclose(out.loss.double(), loss, rtol=1e-5, atol=1e-7)
    assert out.total.item() == pytest.approx(loss.sum().item(), rel=1e-5)


@pytest.mark.parametrize("options", IMPLEMENTATIONS)
@pytest.mark.parametrize("k, alpha, t", [(2, 0.5, 1.0), (3, 0.25, 2.0), (4, 0.8, 0.6)])
def test_mutual_loss_gradient(options, k, alpha, t):
    # ∂ total / ∂ z_i = (1−α)(softmax(z_i) − onehot(y))/N + α·T²·(p_i − q_i)/(T·N)
    logits, omega, y = make_logits(k, seed=90 + k), make_omega(k, seed=90 + k), targets_for()
    n, v = logits[0].shape
    grads = torch.autograd.grad(options(logits, y, omega, alpha, t).total,
                                logits)
    p, q = mixtures(logits, omega, t)
    onehot = F.one_hot(y, v).double()
    for i in range(k):
        expected = ((1 - alpha) * (F.softmax(logits[i].detach(), -1) - onehot) / n
                    + alpha * t * (p[i] - q[i]) / n)
        assert torch.allclose(grads[i].double(), expected, rtol=1e-4, atol=1e-7), i


@pytest.mark.parametrize("options", IMPLEMENTATIONS)
def test_mutual_loss_gradient_wrt_omega(options):
    k, alpha, t = 3, 0.4, 1.5
    logits, omega, y = make_logits(k, seed=99), make_omega(k, seed=99), targets_for()
    (g,) = torch.autograd.grad(options(logits, y, omega, alpha, t).total, omega)
    (ref,) = torch.autograd.grad(mutual_kl_reference(logits, omega, t).sum(), omega)
    assert torch.allclose(g.double(), alpha * t**2 * ref, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("options", IMPLEMENTATIONS)
def test_single_student_is_cross_entropy(options):
    (z,), y = make_logits(1, seed=5, dtype=torch.float32), targets_for()
    out = options([z], y, torch.ones(1), alpha=0.7, temperature=2.0)
    assert out.ce.shape == out.loss.shape == out.kl.shape == (1,)
    assert out.ce.item() == pytest.approx(dumb_ce(z, y), rel=1e-6)
    assert torch.equal(out.loss, out.ce) and out.total.item() == out.ce.item()
    assert torch.equal(out.kl, torch.zeros(1))


@pytest.mark.parametrize("options", IMPLEMENTATIONS)
def test_alpha_zero_is_cross_entropy(options):
    k = 3
    logits, y = make_logits(k, seed=6, dtype=torch.float32), targets_for()
    out = options(logits, y, torch.ones(k) / k, alpha=0.0, temperature=2.0)
    ce = torch.tensor([dumb_ce(z, y) for z in logits])
    assert torch.allclose(out.ce, ce, rtol=1e-6) and torch.equal(out.loss, out.ce)
    assert out.total.item() == pytest.approx(ce.sum().item(), rel=1e-6)
    grads = torch.autograd.grad(out.total, logits)
    n, v = logits[0].shape
    for z, g in zip(logits, grads, strict=True):  # no pull towards the peers
        expected = (F.softmax(z.detach(), -1) - F.one_hot(y, v)) / n
        assert torch.allclose(g, expected, atol=1e-7)


@pytest.mark.parametrize("options, k, alpha", [
    pytest.param(impl.values[0], k, alpha, id=f"{impl.id}-K{k}-alpha{alpha}")
    for impl in IMPLEMENTATIONS for k, alpha in [(1, 0.5), (3, 0.0), (3, 0.5)]])
def test_float64_logits_keep_float64(options, k, alpha):
    logits, y = make_logits(k, seed=7), targets_for()
    out = options(logits, y, torch.ones(k, dtype=torch.float64) / k, alpha, 1.0)
    assert out.ce.dtype == torch.float64
    ce = torch.tensor([dumb_ce(z, y) for z in logits], dtype=torch.float64)
    assert torch.allclose(out.ce, ce, rtol=1e-12, atol=0)
