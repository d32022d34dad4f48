"""The mutual-learning loss of K students that see the same tokens.

Student i minimises ``(1-α)·CE(z_i, y) + α·T²·Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i)`` with
``p = softmax(z / T)``, peers detached (they are targets, as in deep mutual learning),
``ω̃_j = ω_j / Σ_{k≠i} ω_k`` and the KL averaged over tokens, so it has the scale of the CE.

:func:`mutual_kl_reference` is the plain pairwise definition; it is the yardstick for any
faster implementation, which plugs in through the ``kl`` argument of :func:`mutual_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

MutualKL = Callable[[Sequence[torch.Tensor], torch.Tensor, float], torch.Tensor]


def peer_weights(omega: torch.Tensor) -> torch.Tensor:
    """[K, K] matrix W with ``W[i, j] = ω_j / Σ_{k≠i} ω_k`` for ``j ≠ i`` and 0 on the diagonal.

    A student whose peers all have weight 0 gets an all-zero row (no distillation).
    Differentiable in ``omega``, which the bi-level step needs.
    """
    k = omega.shape[0]
    off = 1.0 - torch.eye(k, dtype=omega.dtype, device=omega.device)
    w = omega[None, :] * off
    return w / w.sum(1, keepdim=True).clamp_min(torch.finfo(omega.dtype).tiny)


def mutual_kl_reference(logits: Sequence[torch.Tensor], omega: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """``[K]`` vector: Σ_{j≠i} ω̃_j · mean_tokens KL(p_j ‖ p_i), pairwise, peers detached.

    ``logits`` holds K tensors [N, V]; computed in float32 (or float64 if given).
    """
    dtype = torch.promote_types(logits[0].dtype, torch.float32)
    logp = [F.log_softmax(z.to(dtype) / temperature, dim=-1) for z in logits]
    w = peer_weights(omega.to(dtype))
    rows = []
    for i in range(len(logits)):
        terms = [w[i, j] * (logp[j].detach().exp() * (logp[j].detach() - logp[i])).sum(-1).mean()
                 for j in range(len(logits)) if j != i]
        rows.append(torch.stack(terms).sum() if terms else logp[i].new_zeros(()))
    return torch.stack(rows)


class MutualLoss(NamedTuple):
    total: torch.Tensor  # Σ_i loss_i: one backward trains every student
    loss: torch.Tensor  # [K] loss of each student
    ce: torch.Tensor  # [K] cross-entropy of each student
    kl: torch.Tensor  # [K] ω̃-weighted KL of each student to its peers (0 when K = 1)


def mutual_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor, omega: torch.Tensor,
                alpha: float, temperature: float = 1.0,
                kl: MutualKL = mutual_kl_reference) -> MutualLoss:
    """Losses of K students on the same targets [N] from their logits (K tensors [N, V])."""
    ce = torch.stack([F.cross_entropy(z.float(), targets) for z in logits])
    if len(logits) == 1 or alpha == 0:
        return MutualLoss(ce.sum(), ce, ce, torch.zeros_like(ce))
    div = kl(logits, omega, temperature)
    per_student = (1 - alpha) * ce + alpha * temperature**2 * div
    return MutualLoss(per_student.sum(), per_student, ce, div)
