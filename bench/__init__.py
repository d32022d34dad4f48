"""minidml benchmarks: ``python -m bench`` runs them all, ``python -m bench NAME`` one of them.

A benchmark is a module ``bench/<name>.py`` with top-level ``run(args) -> dict`` (``args``
has ``quick``, ``device`` and ``results_dir``) and ``report(result) -> str``; the runner
writes the dict to ``bench/results/<name>.json``. See bench/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path


def discover() -> list[str]:
    """Names of the modules in this folder that follow the protocol above, sorted."""
    return [p.stem for p in sorted(Path(__file__).resolve().parent.glob("*.py"))
            if re.search(r"^def run\(.*^def report\(", p.read_text(encoding="utf-8"),
                         re.M | re.S)]
