"""The mutual-learning loss of K students that see the same tokens.

Student i minimises ``(1-α)·CE(z_i, y) + α·T²·Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i)`` with
``p = softmax(z / T)``, peers detached (they are targets, as in deep mutual learning),
``ω̃_j = ω_j / Σ_{k≠i} ω_k`` and the KL averaged over tokens, so it has the scale of the CE.

Two implementations compute the same thing:

* :func:`mutual_kl_reference` (with ``F.cross_entropy``) is the plain pairwise definition,
  the yardstick for everything else.
* :func:`fused_mutual_losses` uses the mixture identity. Because the peers are constants for
  student i, ``Σ_j ω̃_j KL(p_j ‖ p_i) = Σ_j ω̃_j Σ_v p_j log p_j − Σ_v q_i log p_i`` with
  ``q_i = Σ_j ω̃_j p_j``, so ``∂/∂z_i = (p_i − q_i)/T``: K cross-entropies against mixtures
  instead of K(K−1) KL terms. It walks the rows in chunks, computing cross-entropy and KL in
  one pass, and keeps nothing of size K×N×V for backward: the backward pass recomputes the
  softmaxes chunk by chunk, in differentiable torch ops, so second-order derivatives (the
  bi-level hypergradient through ``ω``) are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F


def peer_weights(omega: torch.Tensor) -> torch.Tensor:
    """[K, K] matrix W with ``W[i, j] = ω_j / Σ_{k≠i} ω_k`` for ``j ≠ i`` and 0 on the diagonal.

    A student whose peers all have weight 0 gets an all-zero row (no distillation).
    Differentiable in ``omega``, which the bi-level step needs.
    """
    k = omega.shape[0]
    off = 1.0 - torch.eye(k, dtype=omega.dtype, device=omega.device)
    w = omega[None, :] * off
    total = w.sum(1, keepdim=True)
    return w / torch.where(total > 0, total, torch.ones_like(total))  # finite gradients too


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 stays


# ----------------------------------------------------------------------------- reference
def mutual_kl_reference(logits: Sequence[torch.Tensor], omega: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """``[K]`` vector: Σ_{j≠i} ω̃_j · mean_tokens KL(p_j ‖ p_i), pairwise, peers detached.

    ``logits`` holds K tensors [N, V]; computed in float32 (or float64 if given).
    """
    dtype = _compute_dtype(logits[0])
    logp = [F.log_softmax(z.to(dtype) / temperature, dim=-1) for z in logits]
    w = peer_weights(omega.to(dtype))
    rows = []
    for i in range(len(logits)):
        terms = [w[i, j] * (logp[j].detach().exp() * (logp[j].detach() - logp[i])).sum(-1).mean()
                 for j in range(len(logits)) if j != i]
        rows.append(torch.stack(terms).sum() if terms else logp[i].new_zeros(()))
    return torch.stack(rows)


# ----------------------------------------------------------------------------- fused
def default_chunk_rows(k: int, vocab: int, device: torch.device) -> int:
    """Rows per chunk: about 2M (CPU caches) or 64M (GPU) elements of K×rows×V work."""
    budget = (1 << 26) if device.type == "cuda" else (1 << 21)
    return max(1, budget // max(1, k * vocab))


def _log_probs_chunk(z: Sequence[torch.Tensor], temperature: float, logp: torch.Tensor
                     ) -> None:
    """Fill ``logp`` [K,C,V] with log softmax(z_k / T), one fused kernel per student."""
    for k, zk in enumerate(z):
        zk = zk.to(logp.dtype)
        torch.log_softmax(zk / temperature if temperature != 1.0 else zk, -1, out=logp[k])


class _FusedMutualLosses(torch.autograd.Function):
    """(ce [K], kl [K]) of K students from logits, in row chunks; see the module docstring.

    The forward pass also returns each row's log-sum-exp (at T, and at 1 when T ≠ 1), [K, N]
    each, so that the backward pass rebuilds the softmaxes in two passes over the logits.
    """

    @staticmethod
    def forward(w: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int,
                *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, k, v = targets.shape[0], len(logits), logits[0].shape[-1]
        dtype = _compute_dtype(logits[0])
        device = targets.device
        ce = torch.zeros(k, dtype=dtype, device=device)
        kl = torch.zeros_like(ce)
        lse_t = torch.empty(k, n, dtype=dtype, device=device)
        lse_1 = torch.empty(k, n, dtype=dtype, device=device) if temperature != 1.0 else lse_t
        wd = w.to(dtype)
        logp_buf = torch.empty(k, min(chunk, n), v, dtype=dtype, device=device)
        p_buf = torch.empty_like(logp_buf)
        for r in range(0, n, chunk):
            z = [t[r:r + chunk] for t in logits]
            y = targets[r:r + chunk]
            c = y.shape[0]
            logp, p = logp_buf[:, :c], p_buf[:, :c]
            _log_probs_chunk(z, temperature, logp)
            # log p(y) now; the log-sum-exp, z_y/T − log p(y), follows after the loop
            torch.gather(logp, -1, y[None, :, None].expand(k, c, 1), out=lse_t[:, r:r + c, None])
            if temperature == 1.0:
                ce -= lse_t[:, r:r + c].sum(1)
            else:
                lse_1[:, r:r + c] = torch.stack([torch.logsumexp(zk.to(dtype), -1) for zk in z])
                picked = torch.stack([zk.gather(-1, y[:, None])[:, 0].to(dtype) for zk in z])
                ce += (lse_1[:, r:r + c] - picked).sum(1)
            torch.exp(logp, out=p)
            # cross[c, j, i] = Σ_v p_j log p_i; KL_i = Σ_j W_ij (cross[j, j] − cross[j, i])
            cross = torch.bmm(p.transpose(0, 1), logp.transpose(0, 1).transpose(1, 2))
            d = torch.diagonal(cross, dim1=1, dim2=2).sum(0)[None, :] - cross.sum(0).T
            kl += (wd * d).sum(1)
        # the softmax kernel's own log-sum-exp, recovered at the target (whose log p is small,
        # so the subtraction loses nothing): no second reduction over the vocabulary
        z_y = torch.stack([t.gather(-1, targets[:, None])[:, 0].to(dtype) for t in logits])
        lse_t = (z_y / temperature if temperature != 1.0 else z_y) - lse_t
        if temperature == 1.0:
            lse_1 = lse_t
        return ce / n, kl / n, lse_t, lse_1

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        w, targets, temperature, chunk, *logits = inputs
        _, _, lse_t, lse_1 = output
        ctx.mark_non_differentiable(lse_t, lse_1)
        ctx.save_for_backward(w, targets, lse_t, lse_1, *logits)
        ctx.temperature, ctx.chunk = temperature, chunk

    @staticmethod
    def backward(ctx: Any, g_ce: torch.Tensor, g_kl: torch.Tensor, *_: Any) -> tuple:
        w, targets, lse_t, lse_1, *logits = ctx.saved_tensors
        if torch.is_grad_enabled() or ctx.needs_input_grad[0]:
            # create_graph / torch.func, or a gradient for ω: the plain differentiable path
            return _fused_backward(w, targets, ctx.temperature, ctx.chunk, logits, g_ce, g_kl,
                                   need_w=ctx.needs_input_grad[0])
        grads = _fast_backward(w, targets, ctx.temperature, ctx.chunk, logits, g_ce, g_kl,
                               lse_t, lse_1)
        return (None, None, None, None, *grads)


def _fast_backward(w: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int,
                   logits: Sequence[torch.Tensor], g_ce: torch.Tensor, g_kl: torch.Tensor,
                   lse_t: torch.Tensor, lse_1: torch.Tensor) -> list[torch.Tensor]:
    """Gradients for the logits only, with no graph: three passes over each chunk.

    With a_i = g_ce_i / N, b_i = g_kl_i / (N·T) and s_i = Σ_j W_ij (1, or 0 for a student
    whose peers all weigh 0), student i's gradient is a_i·(p¹_i − onehot) + b_i·(s_i·p_i −
    Σ_j W_ij p_j); for T = 1 that is ``M @ p`` with the K×K matrix
    M = diag(a + b∘s) − diag(b)·W, minus a_i at each target.
    """
    n, k, v = targets.shape[0], len(logits), logits[0].shape[-1]
    dtype = lse_t.dtype
    a = g_ce.to(dtype) / n
    b = g_kl.to(dtype) / (n * temperature)
    wd = w.to(dtype)
    m = torch.diag(b * wd.sum(1)) - b[:, None] * wd  # the KL part: b_i (s_i p_i − q_i)
    if temperature == 1.0:
        m = m + torch.diag(a)  # the CE part shares the softmax
    grads = [torch.empty_like(t) for t in logits]
    p_buf = torch.empty(k, min(chunk, n), v, dtype=dtype, device=a.device)
    g_buf = torch.empty_like(p_buf)
    for r in range(0, n, chunk):
        y = targets[r:r + chunk]
        c = y.shape[0]
        p, g = p_buf[:, :c], g_buf[:, :c]
        for i, t in enumerate(logits):
            zi = t[r:r + chunk]
            torch.sub(zi * (1.0 / temperature) if temperature != 1.0 else zi,
                      lse_t[i, r:r + c, None], out=p[i])
        p.exp_()
        torch.mm(m, p.reshape(k, -1), out=g.reshape(k, -1))
        if temperature != 1.0:  # the cross-entropy's own softmax at T = 1
            for i, t in enumerate(logits):
                p1 = torch.exp(t[r:r + chunk].to(dtype) - lse_1[i, r:r + c, None])
                g[i].addcmul_(p1, a[i])
        rows = torch.arange(c, device=a.device)
        g[:, rows, y] -= a[:, None]
        for i in range(k):
            grads[i][r:r + c] = g[i]
    return grads


def _fused_backward(w: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int,
                    logits: Sequence[torch.Tensor], g_ce: torch.Tensor, g_kl: torch.Tensor,
                    need_w: bool = True) -> tuple:
    """Gradients for (w, targets, temperature, chunk, *logits), from recomputed softmaxes.

    Written in ordinary differentiable torch ops, so that autograd (and ``torch.func``) can
    differentiate the gradients themselves when asked to (``create_graph=True``). The
    gradient for W, ``D[i, j] = mean KL(p_j ‖ p_i)``, is computed only when needed (the
    bi-level step), from elementwise log-ratios, which keeps it accurate in float32.
    """
    n, k = targets.shape[0], len(logits)
    dtype = _compute_dtype(logits[0])
    wd = w.to(dtype)
    a = (g_ce.to(dtype) / n)[:, None, None]
    b = (g_kl.to(dtype) / (n * temperature))[:, None, None]
    s = wd.sum(1)[:, None, None]  # 1, or 0 for a student whose peers all weigh 0
    differentiable = torch.is_grad_enabled()  # True only under create_graph / torch.func
    if differentiable:
        parts: list[list[torch.Tensor]] = [[] for _ in range(k)]
    else:
        grads = [torch.empty_like(t) for t in logits]
    g_w = torch.zeros_like(wd)
    for r in range(0, n, chunk):
        z = [t[r:r + chunk] for t in logits]
        y = targets[r:r + chunk]
        zs = torch.stack([t.to(dtype) for t in z])
        logp = F.log_softmax(zs / temperature, dim=-1)
        p = logp.exp()
        q = (wd @ p.flatten(1)).view_as(p)  # q_i = Σ_j W_ij p_j
        p1 = p if temperature == 1.0 else F.softmax(zs, -1)
        g = a * (p1 - F.one_hot(y, p.shape[-1]).to(dtype)) + b * (s * p - q)  # [K, C, V]
        if need_w:  # D[i, j] += Σ_rows Σ_v p_j (log p_j − log p_i)
            g_w = g_w + torch.einsum("jcv,ijcv->ij", p, logp[None] - logp[:, None])
        for i in range(k):
            if differentiable:
                parts[i].append(g[i].to(logits[i].dtype))
            else:
                grads[i][r:r + chunk] = g[i]
    if differentiable:
        grads = [torch.cat(pp) for pp in parts]
    g_w = (g_w * (g_kl.to(dtype) / n)[:, None]).to(w.dtype) if need_w else None
    return (g_w, None, None, None, *grads)


def fused_mutual_losses(logits: Sequence[torch.Tensor], targets: torch.Tensor,
                        omega: torch.Tensor, temperature: float = 1.0,
                        chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-student mean cross-entropy and ω̃-weighted mutual KL, each ``[K]``, fused.

    Equal to ``F.cross_entropy`` and :func:`mutual_kl_reference` (values and gradients for
    logits and ``omega``), without materialising any K×N×V tensor for backward.
    Inputs may be bf16; the arithmetic is float32 (float64 for float64 inputs).
    """
    k, vocab = len(logits), logits[0].shape[-1]
    chunk = chunk_rows or default_chunk_rows(k, vocab, targets.device)
    w = peer_weights(omega)
    ce, kl, _, _ = _FusedMutualLosses.apply(w, targets, float(temperature), int(chunk), *logits)
    return ce, kl


# ----------------------------------------------------------------------------- ensembles
def mixture_log_probs(log_probs: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """log Σ_i ω_i exp(log_probs[i]) over the leading (student) axis of ``log_probs``.

    A student with ω_i = 0 contributes nothing (its log-weight is −inf).
    """
    log_w = omega.to(log_probs.dtype).log().view(-1, *([1] * (log_probs.dim() - 1)))
    return torch.logsumexp(log_probs + log_w, dim=0)


def ensemble_log_probs(logits: Sequence[torch.Tensor], omega: torch.Tensor) -> torch.Tensor:
    """log Σ_i ω_i softmax(z_i): log-probabilities of the ω-weighted mixture (float32 or more)."""
    dtype = _compute_dtype(logits[0])
    return mixture_log_probs(torch.stack([torch.log_softmax(z.to(dtype), -1) for z in logits]),
                             omega)


def ensemble_target_log_probs(logits: Sequence[torch.Tensor], targets: torch.Tensor,
                              omega: torch.Tensor) -> torch.Tensor:
    """log Σ_i ω_i p_i[y]: the ω-mixture's log-probability of each target, [N].

    Equal to ``ensemble_log_probs(logits, omega).gather(-1, targets)`` but it never builds the
    K×N×V stack: each student contributes log p_i[y] through one cross-entropy kernel, whose
    backward is a single softmax per student.
    """
    return mixture_log_probs(target_log_probs(logits, targets), omega)


def target_log_probs(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """log p_i[y] of each student and target, [K, N] (float32 or more), one cross-entropy
    kernel per student: what an ensemble of these students needs from each of them."""
    dtype = _compute_dtype(logits[0])
    return torch.stack([-F.cross_entropy(z.to(dtype), targets, reduction="none")
                        for z in logits])


# ----------------------------------------------------------------------------- the loss
class MutualLoss(NamedTuple):
    total: torch.Tensor  # Σ_i loss_i: one backward trains every student
    loss: torch.Tensor  # [K] loss of each student
    ce: torch.Tensor  # [K] cross-entropy of each student
    kl: torch.Tensor  # [K] ω̃-weighted KL of each student to its peers (0 when K = 1 or α = 0)


def mutual_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor, omega: torch.Tensor,
                alpha: float, temperature: float = 1.0, fused: bool = True) -> MutualLoss:
    """Losses of K students on the same targets [N] from their logits (K tensors [N, V]).

    ``fused=False`` selects the plain reference implementation.
    """
    def cross_entropies() -> torch.Tensor:
        return torch.stack([F.cross_entropy(z.to(_compute_dtype(z)), targets) for z in logits])

    if len(logits) == 1 or alpha == 0:  # no distillation: the KL is not even computed
        ce = cross_entropies()
        return MutualLoss(ce.sum(), ce, ce, torch.zeros_like(ce))
    if fused:
        ce, div = fused_mutual_losses(logits, targets, omega, temperature)
    else:
        ce = cross_entropies()
        div = mutual_kl_reference(logits, omega, temperature)
    per_student = (1 - alpha) * ce + alpha * temperature**2 * div
    return MutualLoss(per_student.sum(), per_student, ce, div)


def teacher_logits(logits: Sequence[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """One teacher's logits [N, V] standing for an ensemble that averages its members'
    probabilities: ``T · log mean_m softmax(z_m / T)``, whose softmax at T is that average."""
    if len(logits) == 1:
        return logits[0]
    dtype = _compute_dtype(logits[0])
    logp = torch.stack([F.log_softmax(z.to(dtype) / temperature, -1) for z in logits])
    return temperature * (torch.logsumexp(logp, 0) - math.log(len(logits)))


def distillation_loss(logits: Sequence[torch.Tensor], teacher: torch.Tensor,
                      targets: torch.Tensor, alpha: float, temperature: float = 2.0,
                      fused: bool = True) -> MutualLoss:
    """Teacher-guided distillation (BabyLlama-style) of K students from one frozen teacher:
    ``(1-α)·CE(z_i, y) + α·T²·KL(p_teacher ‖ p_i)`` for each student i, with no peers.

    It is the mutual loss of the K students and the teacher in which only the teacher has
    weight: each student's peer mixture is the teacher alone, and the teacher (detached,
    its row of weights empty) learns nothing. The result covers the K students only.
    """
    k = len(logits)
    omega = torch.zeros(k + 1, device=targets.device)
    omega[k] = 1.0
    full = mutual_loss([*logits, teacher.detach()], targets, omega, alpha, temperature, fused)
    per_student = full.loss[:k]
    return MutualLoss(per_student.sum(), per_student, full.ce[:k], full.kl[:k])
