"""The plugin manager: entry-point plugins first, then minidml's own suites.

Plugins come from the ``minidml`` entry-point group of installed packages; the built-in
suites (the ``minidml_plugins`` package, from ``plugins/`` in the source tree) are registered
after them through the same hooks, so the core uses its own plugin API. A plugin named in
``$MINIDML_BLOCK_PLUGINS`` (comma-separated; a built-in by its short name, e.g. ``glue``) is
not loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from .._version import __version__
from ..errors import MinidmlError, describe
from . import hookspecs
from .fetch import DataFile

ENTRY_POINT_GROUP = "minidml"
BLOCK_ENV = "MINIDML_BLOCK_PLUGINS"
BUILTIN_PACKAGE = "minidml_plugins"
DEFAULT_PLUGINS = ("agreement", "blimp", "supplement", "ewok", "glue", "entity_tracking", "wug",
                   "comps", "reading", "aoa")


@dataclass(frozen=True)
class SuiteSpec:
    """A registered suite. ``requires``: paths (relative to the data root) that must exist
    for it to run; ``sources``: files ``minidml data fetch`` can download."""

    name: str
    factory: Callable[[], Any]
    description: str
    version: str = "1"
    requires: tuple[str, ...] = ()
    sources: tuple[DataFile, ...] = ()
    # the scoring protocols (minidml.evaluation.protocols) the suite is defined under; () is
    # all of them
    protocols: tuple[str, ...] = ()
    plugin: str = ""  # filled in by the plugin manager
    package: str = ""
    package_version: str = ""

    def missing_data(self, data_dir: Path) -> list[str]:
        return [p for p in self.requires if not (data_dir / p).exists()]

    def data_present(self, data_dir: Path) -> bool:
        return not self.missing_data(data_dir)

    def supports(self, protocol: str) -> bool:
        return not self.protocols or protocol in self.protocols


def blocked() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def make_manager(builtins: Sequence[str] = DEFAULT_PLUGINS, entry_points: bool = True,
                 extra: Sequence[object] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager with the hook specifications, entry-point plugins, the
    built-in suites and any ``extra`` plugin objects (modules, classes or instances with
    ``@hookimpl`` functions) loaded; a hook implementation that matches no hook is an error."""
    pm = pluggy.PluginManager("minidml")
    pm.add_hookspecs(hookspecs)
    off = blocked()
    for name in off:
        pm.set_blocked(name)
    if entry_points:
        # each loaded on its own first, so that one that fails is named (pluggy then registers
        # them, modules already imported, with their distributions)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in off:
                continue
            try:
                ep.load()
            except Exception as e:
                raise MinidmlError(f"plugin {ep.name}{_package_of(ep)} failed to load "
                                   f"({describe(e)}); uninstall it or set {BLOCK_ENV}="
                                   f"{ep.name}") from None
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for short in builtins:
        if short in off:
            continue
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{short}")
        pm.register(module, name=f"{BUILTIN_PACKAGE}.{short}")
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise MinidmlError(f"plugin {e.plugin!r}: {e}; fix the hook's name") from None
    return pm


def _package_of(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f" (package {dist.metadata['Name']})" if dist is not None else ""


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return make_manager()


def suites(pm: pluggy.PluginManager | None = None) -> dict[str, SuiteSpec]:
    """Every registered suite by name, tagged with the plugin and package that gave it."""
    pm = pm or plugin_manager()
    dists = {pm.get_name(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    found: dict[str, SuiteSpec] = {}
    # call each implementation separately so that every suite knows its plugin
    for impl in pm.hook.register_suites.get_hookimpls():  # in registration order
        name = impl.plugin_name
        dist = dists.get(name)
        package, pkg_version = (
            (dist.metadata["Name"], dist.version) if dist is not None
            else ("minidml", __version__) if name.startswith(BUILTIN_PACKAGE) else ("", ""))

        def register(suite: str, factory: Any, *, description: str, version: str = "1",
                     requires: Sequence[str] = (), sources: Sequence[Any] = (),
                     protocols: Sequence[str] = (), _plugin: str = name,
                     _package: str = package, _pv: str = pkg_version) -> None:
            if suite in found:
                raise MinidmlError(f"suite {suite!r} is registered by both "
                                   f"{found[suite].plugin} and {_plugin}; block one with "
                                   f"{BLOCK_ENV}")
            for what, values in (("requires", requires), ("protocols", protocols)):
                if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                    raise MinidmlError(f"plugin {_plugin}: suite {suite!r}'s {what} must be "
                                       f"a list of strings, not {values!r}; fix the plugin, or "
                                       f"set {BLOCK_ENV}={_plugin}")
            if not all(isinstance(s, DataFile) for s in sources):
                raise MinidmlError(f"plugin {_plugin}: suite {suite!r}'s sources must be "
                                   f"DataFile objects; fix the plugin, or set "
                                   f"{BLOCK_ENV}={_plugin}")
            found[suite] = SuiteSpec(suite, factory, description, str(version),
                                     tuple(requires), tuple(sources), tuple(protocols),
                                     _plugin, _package, _pv)

        try:
            impl.function(**({"register": register} if "register" in impl.argnames else {}))
        except MinidmlError:
            raise
        except Exception as e:  # a third party's mistake: named, one line
            raise MinidmlError(f"plugin {name}: its register_suites failed ({describe(e)}); "
                               f"fix the plugin, or set {BLOCK_ENV}={name}") from None
    return found
