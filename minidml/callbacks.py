"""The observer interface of training: a :class:`Callback` sees each step, log record,
evaluation, outer step and checkpoint of a :class:`~minidml.Trainer`. Trackers
(:mod:`minidml.tracking`) are callbacks, and so is anything a caller passes to
:func:`minidml.train`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .losses import MutualLoss
    from .trainer import Trainer


class Callback:
    """Observer of a :class:`~minidml.Trainer`; override what you need. Set
    ``trainer.should_stop`` to end training after the current step (a checkpoint is
    written)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, losses: MutualLoss) -> None: ...
    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_outer(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...
