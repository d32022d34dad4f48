"""minidml: teacher-less weighted mutual learning of small GPT-style students.

Import cost is kept low: the public names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _moved
from ._version import __version__

_EXPORTS = {
    "train": "launch", "load": "rundir", "Run": "rundir", "Trainer": "trainer",
    "Callback": "trainer", "TrainConfig": "config", "Student": "model",
    "StudentConfig": "model", "Shape": "model", "Tokenizer": "tokenizer",
    "Batches": "data", "MinidmlError": "errors",
}

__all__ = [  # noqa: RUF022 - grouped by module, like _EXPORTS
    "__version__", "train", "load", "Run", "Trainer", "Callback", "TrainConfig", "Student",
    "StudentConfig", "Shape", "Tokenizer", "Batches", "MinidmlError",
]

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import Batches
    from .errors import MinidmlError
    from .launch import train
    from .model import Shape, Student, StudentConfig
    from .rundir import Run, load
    from .tokenizer import Tokenizer
    from .trainer import Callback, Trainer


_moved.install()  # old module names (0.1) still import, with a DeprecationWarning


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minidml' has no attribute {name!r}")
