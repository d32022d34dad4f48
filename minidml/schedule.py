"""How fast a run learns: the learning-rate schedule and the optimiser (how many steps it
takes is one of its :mod:`~minidml.decisions`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .config import TrainConfig
from .muon import Muon

__all__ = ["Hybrid", "lr_at", "make_optimizer"]


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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, precision: str = "fp32"
                   ) -> torch.optim.Optimizer | Hybrid:
    """``cfg.optimizer``'s optimiser for ``model``. ``adamw``: AdamW with weight decay on
    matrices only (not on norms' 1-D gains). ``muon``: :class:`minidml.muon.Muon` for the
    matrices inside the trunk's layers, its Newton–Schulz iteration in bf16 where the run
    computes in it (``precision``), else in fp32; and that AdamW for the rest: the
    embedding (the tied output layer too) and the gains."""
    params = list(model.parameters())
    if cfg.optimizer == "muon":
        embeddings = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Embedding)}
        inner = [p for p in params if p.dim() == 2 and id(p) not in embeddings]
        muon = Muon(inner, lr=cfg.lr, weight_decay=cfg.weight_decay,
                    dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        rest = [p for p in params if all(p is not q for q in inner)]
        return Hybrid({"muon": muon, "adamw": _adamw(rest, cfg)})
    return _adamw(params, cfg)


def _adamw(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    params = list(params)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2))


class Hybrid:
    """Several optimisers over disjoint parameters, used as one: ``param_groups`` lists
    theirs (the same dictionaries, so setting a group's ``lr`` sets it for its optimiser),
    ``step`` and ``zero_grad`` run each, and the state is one dictionary keyed by name."""

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.parts.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.parts.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != set(self.parts):
            raise ValueError(f"expected the states of {', '.join(self.parts)}")
        for name, opt in self.parts.items():
            opt.load_state_dict(state[name])
