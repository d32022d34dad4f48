"""What a minidml plugin can implement.

A plugin is a module (or object) with functions marked ``@hookimpl``; a package makes one
known through the ``minidml`` entry-point group::

    [project.entry-points.minidml]
    my_suites = "my_package.suites"

Every hook receives a ``register`` callback, so a plugin hands over factories (cheap to
register, built only when used) instead of returning objects.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("minidml")
hookimpl = pluggy.HookimplMarker("minidml")


@hookspec
def register_suites(register: Callable[..., None]) -> None:
    """Add evaluation suites: ``register(name, factory, *, description, version, requires,
    sources, protocols)`` once per suite (see :class:`minidml.evaluation.plugins.SuiteSpec`
    for the fields).
    ``factory()`` returns an object whose ``evaluate(ctx: minidml.evaluation.suite.EvalContext) ->
    minidml.evaluation.suite.SuiteResult`` runs the suite."""
