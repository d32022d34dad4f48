"""minidml's built-in evaluation suites, each a pluggy plugin that uses only the public API.

Installed as the package ``minidml_plugins``; :mod:`minidml.evaluation.plugins` loads these
modules after the plugins that other packages register through the ``minidml`` entry-point group.
"""
