"""Muon: the momentum of each matrix, orthogonalised, as its update (Jordan et al., 2024).

For a matrix parameter W (m × n) with gradient G, a step is

    B ← μ·B + (1 − μ)·G                     the momentum (μ = 0.95)
    U ← (1 − μ)·G + μ·B                     Nesterov's look-ahead
    O ← NS(U)                               ≈ the orthogonal factor P·Qᵀ of U = P·S·Qᵀ
    W ← (1 − lr·λ)·W − lr·0.2·√max(m, n)·O

NS is five steps of the quintic Newton–Schulz iteration X ← a·X + (b·A + c·A²)·X with
A = X·Xᵀ, (a, b, c) = (3.4445, −4.7750, 2.0315), from X = U/‖U‖ (taken on the wide side, so
that A is the smaller Gram matrix); it sends every singular value of U towards 1 (to about
0.7–1.2, which serves as well as exactly 1). The factor 0.2·√max(m, n) gives the update
the root-mean-square of an AdamW update, so that the learning rate and weight decay tuned
for AdamW apply unchanged (``match_rms_adamw``, as torch's own Muon calls it). A step
orthogonalises the matrices of one shape (tall ones turned) as one batch: the same values,
in a few batched products instead of a dozen small ones per matrix, for the price of holding
that shape's look-aheads and iterates at once (about three copies of those matrices).

The iteration runs in ``dtype``: bfloat16 where the run computes in bf16 (a GPU, or a CPU
with bf16 units: the iteration is then cheap and its rounding harmless), float32 otherwise,
for on a CPU without bf16 units a bf16 matrix product is ~100× slower than a float32 one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import overload

import torch

__all__ = ["Muon", "orthogonalise"]

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
STEPS = 5


def orthogonalise(update: torch.Tensor, dtype: torch.dtype = torch.float32,
                  steps: int = STEPS, eps: float = 1e-7) -> torch.Tensor:
    """NS(``update``): the Newton–Schulz approximation of its orthogonal factor, in
    ``dtype``; a 3-D ``update`` is a batch of matrices of one shape, each orthogonalised
    alone (as in a loop, in a batched product's few kernels)."""
    a, b, c = COEFFICIENTS
    x = update.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    batched = x.dim() == 3
    fma = torch.baddbmm if batched else torch.addmm
    norm = x.norm(dim=(-2, -1), keepdim=True) if batched else x.norm()
    x = x / norm.clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = fma(x, fma(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.mT


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters (see the module's docstring); its state is one
    ``momentum_buffer`` per parameter."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float,
                 weight_decay: float = 0.0, momentum: float = 0.95,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay,
                                  "momentum": momentum})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon: matrices only, not a {p.dim()}-D parameter")
        self.dtype = dtype

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            # (parameter, its gradient) by shape, device and dtype
            shapes: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                state["momentum_buffer"].lerp_(grad, 1 - mu)
                shapes.setdefault((*sorted(p.shape), p.device, p.dtype), []).append((p, grad))
            for (m, n, device, dtype), same in shapes.items():
                # the look-aheads written straight into one batch, tall matrices turned
                looks = torch.empty(len(same), m, n, device=device, dtype=dtype)
                for (p, grad), look in zip(same, looks, strict=True):
                    torch.lerp(grad, self.state[p]["momentum_buffer"], mu,
                               out=look if p.size(0) <= p.size(1) else look.T)
                updates = orthogonalise(looks if len(same) > 1 else looks[0], self.dtype)
                for (p, _), update in zip(same, updates.view(len(same), m, n), strict=True):
                    if p.size(0) > p.size(1):
                        update = update.T
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(update.to(p.dtype),
                           alpha=-(lr * (0.2 * math.sqrt(max(p.shape)))))
        return loss
