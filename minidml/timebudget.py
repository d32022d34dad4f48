"""A time budget: as many steps as fit in ``max_time`` seconds of wall time.

The learning-rate schedule needs the number of steps before training starts, but a time
budget only says when to stop. :class:`TimeBudget` bridges the two:

1. Before the first step, a first guess: the steps that the run's FLOPs per step allow at
   half the fp32 matmul rate that the precision check measured (:mod:`minidml.runtime`;
   the same estimate that decides ``compile="auto"``), or :data:`FALLBACK_STEPS`.
2. After :data:`PROBE_STEPS` steps (or two outer cycles, if longer), not counting the first
   :data:`SETTLE_STEPS` of each ``fit`` call (compiling, warming caches), the plan: the steps
   done plus the remaining time over the measured seconds per step.
3. After every evaluation, and whenever a tenth of the budget (:data:`REPLAN_FRACTION`) has
   passed since the last plan, the plan again, from the rate since the measurement began
   (evaluations and checkpoints included), so the schedule ends where the time does even
   when the first steps ran slower or faster than the rest (another job on the machine).
4. A hard stop: a step that ends past the limit is the last one (the final evaluation and
   checkpoint follow it), so a run ends within one step, plus that evaluation, of the limit.

Each plan is recorded (an ``event: plan`` line in ``metrics.jsonl`` and ``plan`` in
``config.json``). The plan travels in checkpoints; a resumed run continues from it with the
time it has left. Plans depend on measured time, so two runs with the same budget need not
take the same number of steps: a resumed time-budgeted run is not bit-identical to an
uninterrupted one (a run with ``steps``, ``tokens`` or ``epochs`` is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .runtime import estimated_seconds

__all__ = ["TimeBudget", "parse_duration", "FALLBACK_STEPS", "PROBE_STEPS", "SETTLE_STEPS",
           "REPLAN_FRACTION"]

FALLBACK_STEPS = 1000  # the first guess when no matmul rate was measured
PROBE_STEPS = 20
SETTLE_STEPS = 2
REPLAN_FRACTION = 0.1
_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"60m"``, ``"1.5h"``; ValueError otherwise."""
    t = text.strip().lower()
    unit = next((u for u in ("min", "s", "m", "h") if t.endswith(u)), "")
    value = float(t[: len(t) - len(unit)]) * _UNITS.get(unit, 1.0)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


class TimeBudget:
    """The plan of a run limited to ``seconds`` of wall time (see the module docstring)."""

    def __init__(self, seconds: float, outer_every: int = 1):
        self.seconds = float(seconds)
        self.probe = max(PROBE_STEPS, 2 * outer_every)
        self._mark: tuple[int, float] | None = None
        self._first_step = 0
        self._planned_at = 0.0  # training seconds at the last plan
        self.planned = False

    @staticmethod
    def first_guess(seconds: float, flops_per_step: float,
                    precision: Mapping[str, Any]) -> int:
        """Steps the budget allows at the estimated eager rate (see the module docstring)."""
        per_step = estimated_seconds(flops_per_step, precision)
        if not per_step:
            return FALLBACK_STEPS
        return max(1, int(seconds / per_step))

    def start(self, step: int) -> None:
        """A ``fit`` call begins at ``step``: measuring starts once it has settled."""
        self._first_step, self._mark = step, None

    def after_step(self, step: int, elapsed: float, evaluated: bool) -> int | None:
        """The new number of steps when a plan is due after ``step`` (``elapsed`` seconds of
        training so far, ``evaluated``: whether this step ended with an evaluation)."""
        if self._mark is None:
            if step - self._first_step >= SETTLE_STEPS:
                self._mark = (step, elapsed)
            return None
        done = step - self._mark[0]
        due = (evaluated or (self.planned and elapsed - self._planned_at
                             >= REPLAN_FRACTION * self.seconds)
               or (not self.planned and done >= self.probe))
        if done < 1 or not due:
            return None
        per_step = (elapsed - self._mark[1]) / done
        self.planned, self._planned_at = True, elapsed
        self.seconds_per_step = per_step
        return step + max(1, int(max(0.0, self.seconds - elapsed) / max(per_step, 1e-9)))

    def out_of_time(self, elapsed: float) -> bool:
        return elapsed >= self.seconds
