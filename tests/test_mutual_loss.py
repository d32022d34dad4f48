"""The production mutual loss seen from the logits, against the plain reference: values,
gradients, dtypes, gradcheck. An identity head (W = I) makes the hidden states of
:func:`~minidml.fused_linear.linear_mutual_loss` the logits themselves, so every property of
the loss on logits is checked on the code that trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minidml.fused_linear import linear_mutual_loss
from minidml.losses import mutual_kl_reference, mutual_loss


def fused_mutual_losses(logits, targets, omega, temperature, chunk_rows=None, alpha=0.5):
    """(ce, kl) of the production loss on these logits, through identity heads."""
    eye = torch.eye(logits[0].shape[-1], dtype=torch.promote_types(logits[0].dtype,
                                                                   torch.float32))
    out = linear_mutual_loss(list(logits), [eye] * len(logits), targets, omega, alpha,
                             temperature, chunk_rows=chunk_rows)
    return out.ce, out.kl


def problem(k: int, n: int, v: int, dtype=torch.float32, seed: int = 0, zeros: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = [(3 * torch.randn(n, v, generator=g)).to(dtype).requires_grad_() for _ in range(k)]
    omega = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    omega[:zeros] = 0.0  # weights including zeros
    omega = (omega / omega.sum()).to(torch.float32)
    targets = torch.randint(0, v, (n,), generator=g)
    return logits, omega, targets


def reference(logits, omega, targets, temperature):
    dtype = torch.promote_types(logits[0].dtype, torch.float32)
    ce = torch.stack([F.cross_entropy(z.to(dtype), targets) for z in logits])
    return ce, mutual_kl_reference(logits, omega, temperature)


def close_to(actual: torch.Tensor, truth: torch.Tensor, rtol: float, scale: float = 0.0) -> None:
    """Relative error ``rtol`` measured against the tensor's scale (its largest entry, or
    ``scale`` if larger: dL/dω is a difference of KL-sized terms and may cancel to zero)."""
    scale = max(scale, truth.abs().max().item())
    torch.testing.assert_close(actual.double(), truth, rtol=rtol, atol=rtol * scale + 1e-7)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_values_and_gradients_match_the_reference_fp32(k, temperature):
    """fp32 fused against the float64 reference: values and gradients (logits and ω)."""
    logits, omega, y = problem(k, n=67, v=131, seed=k, zeros=1 if k > 2 else 0)
    omega.requires_grad_()
    # a loss that is not the last operation: arbitrary upstream gradients for every output
    g_ce, g_kl = torch.randn(k), torch.randn(k)
    fused = fused_mutual_losses(logits, y, omega, temperature, chunk_rows=16)
    ref64 = [z.detach().double().requires_grad_() for z in logits]
    omega64 = omega.detach().double().requires_grad_()
    ref = reference(ref64, omega64, y, temperature)
    for a, b in zip(fused, ref, strict=True):
        assert a.dtype == torch.float32
        close_to(a, b.detach(), 1e-5)
    got = torch.autograd.grad((fused[0] * g_ce).sum() + (fused[1] * g_kl).sum(), [*logits, omega])
    want = torch.autograd.grad((ref[0] * g_ce.double()).sum() + (ref[1] * g_kl.double()).sum(),
                               [*ref64, omega64])
    for a, b in zip(got[:-1], want[:-1], strict=True):
        close_to(a, b, 1e-5)
    kl_scale = (ref[1].abs().max() * g_kl.abs().max()).item()
    close_to(got[-1], want[-1], 1e-5, scale=kl_scale)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_wide_logit_ranges_and_masked_entries_stay_accurate(temperature):
    """Logits spread over ±60 with some vocabulary entries far below (−10⁴, never a target):
    the log-sum-exps the backward pass reuses must stay exact enough for fp32 gradients."""
    k, n, v = 3, 40, 97
    logits, omega, y = problem(k, n, v, seed=5)
    with torch.no_grad():
        for z in logits:
            z.mul_(20)
            z[:, :5] = -1e4  # all but masked, including the first column
    y = 5 + y % (v - 5)
    fused = fused_mutual_losses(logits, y, omega, temperature, chunk_rows=7)
    ref64 = [z.detach().double().requires_grad_() for z in logits]
    ref = reference(ref64, omega.double(), y, temperature)
    for a, b in zip(fused, ref, strict=True):
        assert torch.isfinite(a).all()
        close_to(a, b.detach(), 1e-5)
    got = torch.autograd.grad(sum(t.sum() for t in fused), logits)
    want = torch.autograd.grad(sum(t.sum() for t in ref), ref64)
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        close_to(a, b, 1e-5)


def test_chunking_does_not_change_the_result():
    logits, omega, y = problem(4, n=50, v=37)
    whole = fused_mutual_losses(logits, y, omega, 1.5, chunk_rows=50)
    for rows in (1, 7, 13):
        for a, b in zip(whole, fused_mutual_losses(logits, y, omega, 1.5, chunk_rows=rows),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_gradient_is_p_minus_peer_mixture_over_t():
    k, n, v, t = 3, 5, 7, 2.0
    logits, omega, y = problem(k, n, v, dtype=torch.float64)
    _, kl = fused_mutual_losses(logits, y, omega.double(), t)
    grads = torch.autograd.grad(kl.sum(), logits)
    p = [F.softmax(z.detach() / t, -1) for z in logits]
    w = omega.double()
    for i in range(k):
        peers = [j for j in range(k) if j != i]
        q = sum(w[j] * p[j] for j in peers) / sum(w[j] for j in peers)
        torch.testing.assert_close(grads[i], (p[i] - q) / t / n)


def test_bf16_inputs_accumulate_in_fp32():
    logits, omega, y = problem(4, n=64, v=200, dtype=torch.bfloat16)
    fused = fused_mutual_losses(logits, y, omega, 2.0)
    assert all(t.dtype == torch.float32 for t in fused)
    ref = reference([z.float() for z in logits], omega, y, 2.0)
    for a, b in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(fused[1].sum() + fused[0].sum(), logits)
    ref_logits = [z.detach().float().requires_grad_() for z in logits]
    ref = reference(ref_logits, omega, y, 2.0)
    want = torch.autograd.grad(ref[1].sum() + ref[0].sum(), ref_logits)
    for a, b in zip(grads, want, strict=True):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-4)


@pytest.mark.parametrize("i", [0, 2])
def test_gradcheck_and_gradgradcheck_float64(i):
    """Peers are constants of student i's loss, so check student i's outputs w.r.t. its own
    logits and ω (the finite differences then see exactly what the gradient claims)."""
    logits, omega, y = problem(3, n=9, v=11, dtype=torch.float64, seed=3)
    others = [z.detach() for z in logits]
    w = omega.double().requires_grad_()

    def f(zi, w):
        zs = list(others)
        zs[i] = zi
        ce, kl = fused_mutual_losses(zs, y, w, 1.7, chunk_rows=4)
        return ce[i], kl[i]

    zi = others[i].clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (zi, w))
    assert torch.autograd.gradgradcheck(f, (zi, w))


def test_the_production_loss_equals_the_reference_and_combines_terms():
    logits, omega, y = problem(3, n=40, v=29)
    eye = torch.eye(29)
    a = linear_mutual_loss(logits, [eye] * 3, y, omega, alpha=0.3, temperature=2.0)
    b = mutual_loss(logits, y, omega, alpha=0.3, temperature=2.0)
    for x, z in zip(a, b, strict=True):
        torch.testing.assert_close(x, z, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.loss, 0.7 * a.ce + 0.3 * 4.0 * a.kl)
    torch.testing.assert_close(a.total, a.loss.sum())


def test_torch_func_can_transform_the_fused_loss():
    logits, omega, y = problem(3, n=12, v=17, dtype=torch.float64)
    zs = [z.detach() for z in logits]

    def kl_sum(w):
        return fused_mutual_losses(zs, y, w, 1.3)[1].sum()

    def kl_sum_ref(w):
        return mutual_kl_reference(zs, w, 1.3).sum()

    w = omega.double()
    torch.testing.assert_close(torch.func.grad(kl_sum)(w), torch.func.grad(kl_sum_ref)(w))


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
@pytest.mark.parametrize("k", [2, 5])
def test_fast_backward_equals_the_differentiable_one(k, temperature):
    """Training (a gradient through each student's loss only, none for ω) takes the
    gradients the forward pass computed; they must agree with the differentiable backward
    and with the reference."""
    logits, omega, y = problem(k, n=45, v=77, seed=11 + k, zeros=1)
    g_loss = torch.randn(k)
    eye = torch.eye(77)

    def grads(w, impl):
        return torch.autograd.grad((impl(logits, y, w) * g_loss).sum(), logits)

    def production(z, y, w):
        return linear_mutual_loss(z, [eye] * k, y, w, 0.4, temperature, chunk_rows=8).loss

    fast = grads(omega, production)
    slow = grads(omega.clone().requires_grad_(), production)
    ref = grads(omega, lambda z, y, w: mutual_loss(z, y, w, 0.4, temperature).loss)
    for a, b, c in zip(fast, slow, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)


def test_fixed_members_are_targets_that_learn_nothing():
    """Members without gradients (a kd run's teachers, other ranks' students) shape the
    others' losses exactly as in the reference, and get no gradient computed."""
    logits, omega, y = problem(4, n=33, v=41, seed=4)
    fixed = [z.detach() for z in logits[2:]]
    eye = torch.eye(41)
    got = linear_mutual_loss([*logits[:2], *fixed], [eye] * 4, y, omega, 0.5, 1.5)
    want = mutual_loss([*logits[:2], *fixed], y, omega, 0.5, 1.5)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(got.total, logits[:2]),
                    torch.autograd.grad(want.total, logits[:2]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
