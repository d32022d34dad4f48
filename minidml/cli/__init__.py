"""The ``minidml`` command: a thin layer over the Python API (:mod:`~minidml.cli.commands`),
its option types and the options made from the training settings
(:mod:`~minidml.cli.options`), the results commands (:mod:`~minidml.cli.results`) and the
reference made from the commands themselves (:mod:`~minidml.cli.reference`)."""

from __future__ import annotations

from .commands import cli, main

__all__ = ["cli", "main"]
