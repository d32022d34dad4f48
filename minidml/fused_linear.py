"""The mutual-learning loss from hidden states: the tied head fused into the loss.

:func:`linear_mutual_loss` takes each student's final hidden states ``h_i`` [N, d_i] and its
output matrix ``W_i`` [V, d_i] (the tied embedding) and returns what
:func:`minidml.losses.mutual_loss` returns for the logits ``z_i = h_i W_iᵀ``:

    loss_i = (1-α)·CE(z_i, y) + α·T²·Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i),    p = softmax(z / T)

but it walks the rows in chunks and never holds a K×N×V tensor, forward or backward (the
idea of Liger-Kernel's fused linear cross-entropy and of Cut Cross-Entropy, for K students
and their peer mixtures q_i = Σ_j ω̃_j p_j). Because every student's loss is the last
operation of its graph and depends on its own (h_i, W_i) only (peers are detached targets),
the forward pass computes the gradients too, chunk by chunk:

    ∂loss_i/∂z_i = (1-α)/N·(softmax(z_i) − onehot(y)) + α·T/N·(s_i·p_i − q_i)
    ∂h_i = ∂z_i · W_i        ∂W_i = Σ_chunks ∂z_iᵀ · h_i

(s_i = Σ_j ω̃_j: 1, or 0 for a student whose peers all weigh 0), and the backward pass
scales them by the upstream gradient of each student's loss: three matmuls per chunk, as
an unfused head's forward and backward, and none of the logits kept.

Anything else — a gradient through ``ce`` or ``kl`` themselves, a gradient for ω (the
bi-level step), or a graph of the gradient (``create_graph``, nested ``torch.func``) —
takes a slower path that recomputes the chunks in differentiable torch ops, so every
derivative stays exact. The code is device-agnostic and has no host synchronisation
inside the chunk loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .losses import MutualLoss, _compute_dtype, peer_weights

__all__ = ["linear_mutual_loss", "linear_target_log_probs", "linear_peer_directional",
           "default_chunk_rows"]


def default_chunk_rows(k: int, vocab: int, device: torch.device) -> int:
    """Rows per chunk: about 16M (CPU) or 64M (GPU) elements of K×rows×V work, and at most a
    quarter of that per student, at least 64 rows (on the CPU at V = 8,192: 512 rows for any
    K up to 4; at K = 4, V = 16,384: 256 rows, buffers of 64 MiB). Larger chunks stream
    from memory instead of the caches; smaller ones make the head's matmuls thin and its
    weight gradient's accumulation dominate."""
    budget = (1 << 26) if device.type == "cuda" else (1 << 24)
    return max(64, budget // (max(4, k) * vocab))


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[K, K]: entry [j, i] = Σ_rows,v a[j] b[i], of two [K, rows, V] stacks, as one batched
    matmul over rows (a [K, rows·V] × [rows·V, K] matmul runs ~3x slower on the CPU)."""
    return torch.bmm(a.transpose(0, 1), b.permute(1, 2, 0)).sum(0)


class _LinearMutual(torch.autograd.Function):
    """(loss [K], ce [K], kl [K], *∂h, *∂W) from hidden states and head weights; the
    gradients (of each student's loss, for an upstream gradient of 1) are outputs that the
    backward pass scales."""

    @staticmethod
    def forward(w: torch.Tensor, targets: torch.Tensor, alpha: float, temperature: float,
                chunk: int, trainable: tuple[int, ...], head_dtype: torch.dtype | None,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = len(tensors) // 2
        hidden, weights = tensors[:k], tensors[k:]
        n, v = targets.shape[0], weights[0].shape[0]
        dtype = _compute_dtype(hidden[0])
        device = targets.device
        low = head_dtype not in (None, dtype)  # the head's matmuls in bf16, the rest in dtype
        mm_dtype = head_dtype if low else dtype
        mats = [wt.to(mm_dtype) for wt in weights]
        wd = w.to(dtype)
        distil = alpha > 0 and k > 1
        ce = torch.zeros(k, dtype=dtype, device=device)
        kl = torch.zeros_like(ce)
        learn = list(trainable)  # the members whose gradients are computed, in order
        every = len(learn) == k
        mine = (lambda t: t) if every else (lambda t: t[learn])
        grads_h = [torch.empty_like(h) if i in trainable else h.new_empty(0)
                   for i, h in enumerate(hidden)]
        grads_w = [torch.zeros(wt.shape, dtype=dtype, device=device) if i in trainable
                   else wt.new_empty(0) for i, wt in enumerate(weights)]
        a = (1.0 - alpha) / n
        b = alpha * temperature / n
        m = torch.diag(b * wd.sum(1)) - b * wd
        if temperature == 1.0:
            m = m + a * torch.eye(k, dtype=dtype, device=device)
        m = mine(m)  # [members learning, K]
        rows = min(chunk, n)
        z = torch.empty(k, rows, v, dtype=dtype, device=device)
        logp = torch.empty_like(z)
        probs = torch.empty_like(z)
        for r in range(0, n, chunk):
            y = targets[r:r + chunk]
            c = y.shape[0]
            hs = [h[r:r + chunk].to(mm_dtype) for h in hidden]
            zc, p = z[:, :c], probs[:, :c]
            for i in range(k):
                if low:
                    zc[i].copy_(torch.mm(hs[i], mats[i].t()))
                else:
                    torch.mm(hs[i], mats[i].t(), out=zc[i])
            # cross-entropy at T = 1
            lp1 = torch.log_softmax(zc, -1, out=logp[:, :c])
            ce -= lp1.gather(-1, y[None, :, None].expand(k, c, 1))[..., 0].sum(1)
            lp = lp1 if temperature == 1.0 else torch.log_softmax(zc.div_(temperature), -1)
            torch.exp(lp, out=p)
            if distil:  # cross[j, i] = Σ_rows,v p_j log p_i; KL_i = Σ_j W_ij (cross_jj − cross_ji)
                cross = _cross(p, lp)
                kl += (wd * (torch.diagonal(cross)[None, :] - cross.t())).sum(1)
            if not learn:
                continue
            kt = len(learn)
            if distil:
                g = torch.mm(m, p.reshape(k, -1), out=zc[:kt].reshape(kt, -1)).view(kt, c, v)
                if temperature != 1.0:
                    g.add_(mine(lp1).exp_(), alpha=a)
            else:  # no mixing: a student's NaN must stay its own
                g = mine(p).mul_(a)
            g[:, torch.arange(c, device=device), y] -= a
            for j, i in enumerate(learn):
                gi = g[j].to(mm_dtype)
                grads_h[i][r:r + c] = torch.mm(gi, mats[i]).to(hidden[i].dtype)
                if low:
                    grads_w[i].add_(torch.mm(gi.t(), hs[i]))
                else:
                    grads_w[i].addmm_(gi.t(), hs[i])
        ce, kl = ce / n, kl / n
        loss = (1.0 - alpha) * ce + alpha * temperature**2 * kl
        grads_w = [gw.to(wt.dtype) for gw, wt in zip(grads_w, weights, strict=True)]
        return (loss, ce, kl, *grads_h, *grads_w)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        w, targets, alpha, temperature, chunk, trainable, _, *tensors = inputs
        stored = output[3:]
        ctx.mark_non_differentiable(*stored)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(w, targets, *tensors, *stored)
        ctx.alpha, ctx.temperature, ctx.chunk, ctx.k = alpha, temperature, chunk, len(tensors) // 2
        ctx.trainable = trainable

    @staticmethod
    def backward(ctx: Any, g_loss: torch.Tensor | None, g_ce: torch.Tensor | None,
                 g_kl: torch.Tensor | None, *_: Any) -> tuple:
        k = ctx.k
        saved = ctx.saved_tensors
        w, targets, tensors = saved[0], saved[1], saved[2:2 + 2 * k]
        stored = saved[2 + 2 * k:]
        learns = [i % k in ctx.trainable for i in range(2 * k)]
        fast = (all(learns[i] or not ctx.needs_input_grad[7 + i] for i in range(2 * k))
                and g_ce is None and g_kl is None and not ctx.needs_input_grad[0]
                and not torch.is_grad_enabled())
        if fast:
            if g_loss is None:
                return (None,) * (7 + 2 * k)
            scaled = [g * g_loss[i % k].to(g.dtype) if learns[i] else None
                      for i, g in enumerate(stored)]
            return (None,) * 7 + tuple(scaled)
        zero = torch.zeros(k, dtype=_compute_dtype(tensors[0]), device=targets.device)
        g_loss, g_ce, g_kl = (zero if t is None else t for t in (g_loss, g_ce, g_kl))
        g_w, grads = _differentiable_grads(w, targets, ctx.alpha, ctx.temperature, ctx.chunk,
                                           tensors, g_loss, g_ce, g_kl, ctx.needs_input_grad[0])
        return (g_w, None, None, None, None, None, None, *grads)


def _differentiable_grads(w: torch.Tensor, targets: torch.Tensor, alpha: float,
                          temperature: float, chunk: int, tensors: Sequence[torch.Tensor],
                          g_loss: torch.Tensor, g_ce: torch.Tensor, g_kl: torch.Tensor,
                          need_w: bool) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Gradients for w and every (h_i, W_i) from recomputed chunks, in ordinary torch ops,
    so that autograd and ``torch.func`` can differentiate them in turn. With the upstream
    gradients (g_loss, g_ce, g_kl), ∂z_i = A_i·(softmax(z_i) − onehot) + B_i·(s_i p_i − q_i),
    A_i = ((1-α)·g_loss_i + g_ce_i)/N, B_i = (α·T²·g_loss_i + g_kl_i)/(N·T); and
    ∂w_ij = (α·T²·g_loss_i + g_kl_i)/N · Σ_rows KL(p_j ‖ p_i)."""
    k = len(tensors) // 2
    hidden, weights = tensors[:k], tensors[k:]
    n = targets.shape[0]
    dtype = _compute_dtype(hidden[0])
    wd = w.to(dtype)
    kl_scale = alpha * temperature**2 * g_loss.to(dtype) + g_kl.to(dtype)
    a = (((1.0 - alpha) * g_loss.to(dtype) + g_ce.to(dtype)) / n)[:, None, None]
    b = (kl_scale / (n * temperature))[:, None, None]
    s = wd.sum(1)[:, None, None]
    mats = [wt.to(dtype) for wt in weights]
    parts_h: list[list[torch.Tensor]] = [[] for _ in range(k)]
    grads_w = [torch.zeros_like(m) for m in mats]
    g_w = torch.zeros_like(wd)
    for r in range(0, n, chunk):
        y = targets[r:r + chunk]
        hs = [h[r:r + chunk].to(dtype) for h in hidden]
        zs = torch.stack([h @ m.t() for h, m in zip(hs, mats, strict=True)])
        logp = F.log_softmax(zs / temperature, -1)
        p = logp.exp()
        q = (wd @ p.flatten(1)).view_as(p)
        p1 = p if temperature == 1.0 else F.softmax(zs, -1)
        g = a * (p1 - F.one_hot(y, p.shape[-1]).to(dtype)) + b * (s * p - q)
        if need_w:
            g_w = g_w + torch.einsum("jcv,ijcv->ij", p, logp[None] - logp[:, None])
        for i in range(k):
            parts_h[i].append(g[i] @ mats[i])
            grads_w[i] = grads_w[i] + g[i].t() @ hs[i]
    grads = [torch.cat(ph).to(h.dtype) for ph, h in zip(parts_h, hidden, strict=True)]
    grads += [gw.to(wt.dtype) for gw, wt in zip(grads_w, weights, strict=True)]
    g_omega = (g_w * (kl_scale / n)[:, None]).to(w.dtype) if need_w else None
    return g_omega, grads


def _target_log_probs(hidden: torch.Tensor, mat: torch.Tensor, targets: torch.Tensor,
                      chunk: int, dtype: torch.dtype) -> torch.Tensor:
    """log p[y] of each row, [N], from row chunks of the logits h Wᵀ."""
    n, v = targets.shape[0], mat.shape[0]
    out = torch.empty(n, dtype=dtype, device=targets.device)
    logp = torch.empty(min(chunk, n), v, dtype=dtype, device=targets.device)
    for r in range(0, n, chunk):
        c = min(chunk, n - r)
        lp = torch.log_softmax(hidden[r:r + c].to(dtype) @ mat.t(), -1, out=logp[:c])
        out[r:r + c] = lp.gather(-1, targets[r:r + c, None])[:, 0]
    return out


class _TargetLogProbs(torch.autograd.Function):
    """log softmax(h Wᵀ)[y] per row; the backward pass recomputes each chunk's softmax:
    ∂/∂z = g·(onehot(y) − softmax(z)), then ∂h = ∂z·W and ∂W = ∂zᵀ·h."""

    @staticmethod
    def forward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        dtype = _compute_dtype(hidden)
        return _target_log_probs(hidden, weight.to(dtype), targets, chunk, dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        hidden, weight, targets, chunk = inputs
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        hidden, weight, targets = ctx.saved_tensors
        dtype = _compute_dtype(hidden)
        n, v, chunk = targets.shape[0], weight.shape[0], ctx.chunk
        mat = weight.to(dtype)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device
                             ) if ctx.needs_input_grad[1] else None
        g = g.to(dtype)
        z = torch.empty(min(chunk, n), v, dtype=dtype, device=targets.device)
        dz = torch.empty_like(z)
        for r in range(0, n, chunk):
            c = min(chunk, n - r)
            h, gc = hidden[r:r + c].to(dtype), g[r:r + c, None]
            torch.mm(h, mat.t(), out=z[:c])
            d = torch.log_softmax(z[:c], -1, out=dz[:c]).exp_().mul_(-gc)
            d.scatter_add_(-1, targets[r:r + c, None], gc)
            if grad_h is not None:
                grad_h[r:r + c] = (d @ mat).to(hidden.dtype)
            if grad_w is not None:
                grad_w.addmm_(d.t(), h)
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None, None, None)


def linear_target_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                            chunk_rows: int | None = None) -> torch.Tensor:
    """log softmax(h Wᵀ)[y] of one student for each row, [N] (float32 or more), in row chunks,
    without the N×V logits: what validation and the held-out side of the outer step need.
    Differentiable (once) in ``hidden`` and ``weight``; the backward pass recomputes the
    chunks, so nothing of the size of the logits is kept."""
    chunk = int(chunk_rows or default_chunk_rows(1, weight.shape[0], targets.device))
    with torch.autocast(targets.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _TargetLogProbs.apply(hidden, weight, targets, chunk)
        dtype = _compute_dtype(hidden)
        return _target_log_probs(hidden, weight.to(dtype), targets, chunk, dtype)


@torch.no_grad()
def linear_peer_directional(hidden: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                            tangents: Sequence[tuple[torch.Tensor, torch.Tensor]],
                            temperature: float, chunk_rows: int | None = None,
                            rows: Sequence[int] | None = None) -> torch.Tensor:
    """D[i, j] = Σ_rows ⟨p_i − p_j, dz_i⟩ / T, [K, K], from hidden states and head weights.

    p_j = softmax(h_j W_jᵀ / T) and dz_i = dh_i W_iᵀ + h_i dW_iᵀ, the derivative of student
    i's logits along the tangent (dh_i [N, d_i], dW_i [V, d_i]) of its hidden states and head:
    the directional derivatives of the peer KLs that the exact hypergradient needs
    (:func:`minidml.bilevel.peer_kl_directional`), in row chunks with no K×N×V tensor. Each
    chunk is K products for the p_j, K for the dz_i ([dh_i, h_i]·[W_i, dW_i]ᵀ, one matmul
    each) and one [K, K] product of the two stacks. ``rows`` (default: every student) names
    the students whose ``tangents`` are given, in order; the other rows of D are 0."""
    k = len(hidden)
    rows = list(range(k)) if rows is None else list(rows)
    if len(tangents) != len(rows):
        raise ValueError(f"{len(tangents)} tangents for {len(rows)} rows")
    n, v = hidden[0].shape[0], weights[0].shape[0]
    chunk = int(chunk_rows or default_chunk_rows(k, v, hidden[0].device))
    dtype = _compute_dtype(hidden[0])
    device = hidden[0].device
    mats = [wt.to(dtype) for wt in weights]
    pairs = [torch.cat([dh.to(dtype), hidden[i].to(dtype)], -1)
             for (dh, _), i in zip(tangents, rows, strict=True)]
    both = [torch.cat([mats[i], dw.to(dtype)], -1) for (_, dw), i in zip(tangents, rows,
                                                                         strict=True)]
    total = torch.zeros(k, k, dtype=dtype, device=device)
    size = min(chunk, n)
    p = torch.empty(k, size, v, dtype=dtype, device=device)
    dz = torch.empty(len(rows), size, v, dtype=dtype, device=device)
    own = torch.tensor(rows, device=device)
    slot = torch.arange(len(rows), device=device)
    with torch.autocast(device.type, enabled=False):
        for r in range(0, n, chunk):
            c = min(chunk, n - r)
            pc, dzc = p[:, :c], dz[:, :c]
            for j in range(k):  # each student's logits, then its softmax in their place
                torch.mm(hidden[j][r:r + c].to(dtype), mats[j].t(), out=pc[j])
                if temperature != 1.0:
                    pc[j].div_(temperature)
                pc[j].copy_(torch.softmax(pc[j], -1))
            for a, pair in enumerate(pairs):
                torch.mm(pair[r:r + c], both[a].t(), out=dzc[a])
            cross = _cross(pc, dzc)  # [K, rows]: Σ ⟨p_j, dz_i⟩
            total[own] += cross[own, slot][:, None] - cross.t()
    return total / temperature


def linear_mutual_loss(hidden: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                       targets: torch.Tensor, omega: torch.Tensor, alpha: float,
                       temperature: float = 1.0, chunk_rows: int | None = None,
                       head_dtype: torch.dtype | None = None) -> MutualLoss:
    """The mutual loss of K students from their hidden states (K tensors [N, d_i]) and head
    weights (K tensors [V, d_i]) on the same targets [N]: the values and gradients of
    ``mutual_loss([h @ W.T ...], targets, omega, alpha, temperature)``, in row chunks of
    ``chunk_rows`` (default: :func:`default_chunk_rows`) with no K×N×V tensor. α = 0 or
    K = 1 computes the cross-entropies alone (``kl`` is then 0). Arithmetic is float32
    (float64 for float64 inputs); ``head_dtype=torch.bfloat16`` runs the head's three matmuls
    per chunk in bf16 (what a bf16 run's autocast would do to the head): the softmaxes and
    losses stay in float32, and each chunk's bf16 share of the weight gradient is summed
    into a float32 accumulator. Derivatives beyond the first (the slower path) are computed
    in float32 throughout.

    A member whose hidden states and head weight need no gradient (a ``kd`` run's teachers,
    or students trained by other ranks) is a fixed target: its own gradients are never
    computed, and its entries of the result mean what they say but train nothing."""
    k = len(hidden)
    if len(weights) != k:
        raise ValueError(f"{k} hidden-state tensors but {len(weights)} head weights")
    vocab = weights[0].shape[0]
    chunk = int(chunk_rows or default_chunk_rows(k, vocab, targets.device))
    trainable = tuple(i for i, (h, wt) in enumerate(zip(hidden, weights, strict=True))
                      if h.requires_grad or wt.requires_grad) if torch.is_grad_enabled() else ()
    if k == 1 or alpha == 0:  # no distillation: the loss is the cross-entropy
        alpha, temperature = 0.0, 1.0
    w = peer_weights(omega) if k > 1 else omega.new_zeros(1, 1)
    with torch.autocast(targets.device.type, enabled=False):  # head_dtype decides, not autocast
        out = _LinearMutual.apply(w, targets, float(alpha), float(temperature), chunk,
                                  trainable, head_dtype, *hidden, *weights)
    loss, ce, kl = out[:3]
    return MutualLoss(loss.sum(), loss, ce, kl)
