"""The built-in demo: a corpus generated from a probabilistic grammar
(:mod:`~minidml.demo.grammar`) and mutual learning on it (:mod:`~minidml.demo.run`)."""

from __future__ import annotations

from typing import Any

__all__ = ["demo_corpus", "run_demo"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # loaded on first use: the grammar alone needs no torch
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'minidml.demo' has no attribute {name!r}")
