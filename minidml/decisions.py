"""What a run decides before its first step: the device, the precision, whether the trunks
are compiled, and how many steps it plans.

A :class:`~minidml.trainer.Trainer` receives these decisions (:class:`Decisions`) instead of
taking them. :func:`decide` takes them where a run is set up (:func:`minidml.train`, which
writes them into ``config.json``; a resumed run gives back the precision and compilation
it recorded, so it goes on as it started), and a ``Trainer`` built without them takes them
through the same function. The rules themselves live in :mod:`minidml.runtime` (precision,
compilation) and :mod:`minidml.timebudget` (a time budget's first plan).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import TrainConfig
from .data import Batches
from .distributed import Comm
from .model import StudentConfig
from .runtime import choose_precision, decide_compile, resolve_device
from .timebudget import TimeBudget
from .words import WordCount, check_plan, step_limit


@dataclass(frozen=True)
class Decisions:
    """The decisions a run trains under (see the module docstring)."""

    device: torch.device
    precision: Mapping[str, Any]  # config.json's record: requested, choice, the timings
    compiled: Mapping[str, Any]  # requested, choice (a bool) and the line that says why
    total_steps: int  # planned; a time-budgeted run plans again once it has timed its steps
    warnings: tuple[str, ...] = field(default=())  # lines to show the user once
    max_steps: int | None = None  # the most steps the run's track allows (None: no track)

    @property
    def bf16(self) -> bool:
        return self.precision["choice"] == "bf16"


def decide(config: TrainConfig, students: Sequence[StudentConfig], batches: Batches,
           comm: Comm | None = None, *, precision: Mapping[str, Any] | None = None,
           compiled: Mapping[str, Any] | None = None, total_steps: int | None = None,
           words: WordCount | None = None) -> Decisions:
    """The decisions for training ``students`` on ``batches`` under ``config``.

    ``precision`` and ``compiled`` (records as ``config.json`` holds them) and
    ``total_steps`` pin what they name instead of deciding it. In a distributed run
    (``comm``) rank 0 measures the precision and every rank receives its choice. ``words``
    (the run's :class:`~minidml.words.WordCount`) holds the plan to its track's limits
    (:func:`~minidml.words.check_plan`): a fixed plan over them is refused, a time budget
    never plans past them."""
    device = resolve_device(config.device)
    warnings: list[str] = []
    if precision is None:
        def measured() -> tuple[dict[str, Any], str | None]:
            _, record, warning = choose_precision(
                config.precision, device, [s.d_model for s in students], students[0].vocab_size)
            return record, warning

        record, warning = measured() if comm is None else comm.on_main(measured, share=True)
        if warning:
            warnings.append(warning)
        precision = record
    flops_per_token = sum(s.flops_per_token(config.context) for s in students)
    if total_steps is None:
        total_steps = (steps_for(config, batches) if config.max_time is None else
                       TimeBudget.first_guess(config.max_time,
                                              flops_per_token * config.tokens_per_step,
                                              precision))
    max_steps = None
    if words is not None:
        max_steps = step_limit(config.track, config.words_cap, words)
        total_steps = check_plan(config, words, total_steps, config.max_time is None,
                                 max_steps)
    if compiled is None:
        choice, line = decide_compile(
            config.compile, device, flops_per_token * config.tokens_per_step * total_steps,
            config.max_time)
        compiled = {"requested": config.compile, "choice": choice, "line": line}
    return Decisions(device, dict(precision), dict(compiled), int(total_steps), tuple(warnings),
                     max_steps)


def steps_for(cfg: TrainConfig, batches: Batches) -> int:
    """Total optimiser steps: ``steps``; else ``tokens``, or ``epochs`` (default 1) of the
    batches' epoch, over the tokens per step. (A ``max_time`` run plans its own.)"""
    if cfg.steps is not None:
        return cfg.steps
    tokens = cfg.tokens if cfg.tokens is not None else (
        (cfg.epochs or 1.0) * batches.epoch_tokens)
    return max(1, int(tokens // cfg.tokens_per_step))
