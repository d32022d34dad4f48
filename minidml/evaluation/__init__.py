"""Evaluation: suites of texts scored by a language model, found as pluggy plugins.

- :mod:`~minidml.evaluation.scoring`: a model's log-likelihood of a text (students, the
  ensemble, Hugging Face models), by a protocol;
- :mod:`~minidml.evaluation.protocols`: which tokens of a text are scored (the official BabyLM
  2026 pipeline's rule, lm-evaluation-harness's);
- :mod:`~minidml.evaluation.suite`: what a suite plugin uses (minimal pairs, choices, results);
- :mod:`~minidml.evaluation.hookspecs` and :mod:`~minidml.evaluation.plugins`: the hook and the
  plugin manager that finds suites through entry points;
- :mod:`~minidml.evaluation.runner`: running suites on a run and writing the results file;
- :mod:`~minidml.evaluation.fetch`: downloading a suite's data with pinned checksums.
"""

from __future__ import annotations

import warnings
from typing import Any

from .runner import (
    EvalResults,
    SuiteOutcome,
    data_checksum,
    evaluate,
    labels_for,
    require_suites,
)

__all__ = ["EvalResults", "SuiteOutcome", "data_checksum", "evaluate", "labels_for",
           "require_suites"]


def __getattr__(name: str) -> Any:
    """The suite API's names, which lived here before :mod:`minidml.evaluation.suite`: still
    found, with a DeprecationWarning that says where they are now."""
    from . import suite

    if name in suite.__all__:
        warnings.warn(f"minidml.evaluation.{name} is now minidml.evaluation.suite.{name}; "
                      "import it from there", DeprecationWarning, stacklevel=2)
        return getattr(suite, name)
    raise AttributeError(f"module 'minidml.evaluation' has no attribute {name!r}")
