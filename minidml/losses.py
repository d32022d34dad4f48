"""The mutual-learning loss of K students that see the same tokens, from their logits.

Student i minimises ``(1-α)·CE(z_i, y) + α·T²·Σ_{j≠i} ω̃_j·KL(p_j ‖ p_i)`` with
``p = softmax(z / T)``, peers detached (they are targets, as in deep mutual learning),
``ω̃_j = ω_j / Σ_{k≠i} ω_k`` and the KL averaged over tokens, so it has the scale of the CE.

This module holds the plain definition, pairwise and with materialised logits
(:func:`mutual_kl_reference`, :func:`mutual_loss`): the yardstick that the production loss
is checked against, and what a caller with logits in hand can use. Training takes the same
loss from the students' final hidden states instead (:mod:`minidml.fused_linear`), with the
mixture identity ``Σ_j ω̃_j KL(p_j ‖ p_i) = Σ_j ω̃_j Σ_v p_j log p_j − Σ_v q_i log p_i``
(``q_i = Σ_j ω̃_j p_j``), in row chunks and without any K×N×V tensor. The ensemble helpers
below serve validation and the outer objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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
                alpha: float, temperature: float = 1.0) -> MutualLoss:
    """Losses of K students on the same targets [N] from their logits (K tensors [N, V]), by
    the plain definition (float32, or float64 for float64 logits)."""
    ce = torch.stack([F.cross_entropy(z.to(_compute_dtype(z)), targets) for z in logits])
    if len(logits) == 1 or alpha == 0:  # no distillation: the KL is not even computed
        return MutualLoss(ce.sum(), ce, ce, torch.zeros_like(ce))
    div = mutual_kl_reference(logits, omega, temperature)
    per_student = (1 - alpha) * ce + alpha * temperature**2 * div
    return MutualLoss(per_student.sum(), per_student, ce, div)


def distillation_omega(students: int, teachers: int, device: torch.device | str | None = None
                       ) -> torch.Tensor:
    """ω over ``students`` students followed by ``teachers`` teachers in which only the
    teachers weigh, equally: each student's peer mixture is then the teachers' average."""
    return torch.cat([torch.zeros(students, device=device),
                      torch.full((teachers,), 1.0 / teachers, device=device)])


def distillation_loss(logits: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                      targets: torch.Tensor, alpha: float, temperature: float = 2.0
                      ) -> MutualLoss:
    """Teacher-guided distillation (BabyLlama-style) of K students from M frozen teachers:
    ``(1-α)·CE(z_i, y) + α·T²·(1/M)·Σ_m KL(p_m ‖ p_i)`` for each student i, with no peers.

    It is the mutual loss of the students and the teachers in which only the teachers weigh
    (:func:`distillation_omega`); the teachers are detached and learn nothing. Its gradient
    is that of the KL to the teachers' averaged distribution, ``(p_i − mean_m p_m)/T``
    (the two differ by a constant of the teachers). The result covers the K students only.
    """
    k = len(logits)
    omega = distillation_omega(k, len(teachers), targets.device)
    full = mutual_loss([*logits, *(t.detach() for t in teachers)], targets, omega, alpha,
                       temperature)
    per_student = full.loss[:k]
    return MutualLoss(per_student.sum(), per_student, full.ce[:k], full.kl[:k])
