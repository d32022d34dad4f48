"""Modules that moved in 0.2, still importable under their old names for one release.

``import minidml.scoring`` finds :mod:`minidml.evaluation.scoring` (the same module object)
and warns once with a :class:`DeprecationWarning` that names the new place. Installed by
``minidml/__init__.py``; it prints nothing and changes no other import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "minidml.scoring": "minidml.evaluation.scoring",
    "minidml.suite": "minidml.evaluation.suite",
    "minidml.protocols": "minidml.evaluation.protocols",
    "minidml.fetch": "minidml.evaluation.fetch",
    "minidml.hookspecs": "minidml.evaluation.hookspecs",
    "minidml.plugins": "minidml.evaluation.plugins",
    "minidml.export": "minidml.hf.export",
    "minidml.hf_models": "minidml.hf.models",
    "minidml.compare": "minidml.experiments.compare",
    "minidml.compare_config": "minidml.experiments.config",
    "minidml.compare_report": "minidml.experiments.report",
    "minidml.paired": "minidml.experiments.paired",
    "minidml.plot": "minidml.experiments.plot",
    "minidml.cli_options": "minidml.cli.options",
    "minidml.cli_results": "minidml.cli.results",
    "minidml.grammar": "minidml.demo.grammar",
    "minidml.devices": "minidml.runtime",
    "minidml.precision": "minidml.runtime",
    "minidml.compiling": "minidml.runtime",
    "minidml.assignment": "minidml.search",
    "minidml.trainer_state": "minidml.trainer",
    "minidml.callbacks": "minidml.trainer",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and hands out the module now at its new place."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} is now {new}; import it from there (the old name goes in "
                      "the next release)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the module is already executed at its new place


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
