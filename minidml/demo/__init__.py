"""The built-in demo: a corpus generated from a probabilistic grammar
(:mod:`~minidml.demo.grammar`) and mutual learning on it (:mod:`~minidml.demo.run`)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_STEPS", "demo_corpus", "run_demo"]
DEMO_STEPS = 150  # the demo's training (see minidml.demo.run)


def __getattr__(name: str) -> Any:
    if name in ("demo_corpus", "run_demo"):  # loaded on first use: the grammar alone needs no torch
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'minidml.demo' has no attribute {name!r}")
