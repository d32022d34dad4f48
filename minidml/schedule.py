"""How fast a run learns: the learning-rate schedule and the optimiser (how many steps it
takes is one of its :mod:`~minidml.decisions`)."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig

__all__ = ["lr_at", "make_optimizer"]


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float,
          schedule: str = "cosine", decay_fraction: float = 0.2) -> float:
    """The learning rate of ``step``: linear warmup to ``base_lr``, then down to
    ``min_ratio · base_lr`` at ``total``: a cosine over all the remaining steps
    (``cosine``), or constant until the last ``decay_fraction`` of the steps and then a
    linear decay (``wsd``, warmup-stable-decay)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "wsd":
        start = max(warmup, total - max(1, round(decay_fraction * (total - warmup))))
        progress = min(1.0, max(0, step - start) / max(1, total - start))
        return base_lr * (1 - (1 - min_ratio) * progress)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms' 1-D gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
