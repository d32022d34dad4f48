"""minidml benchmarks: ``python -m bench`` runs them all, ``python -m bench NAME`` one of them.

A benchmark is a module ``bench/<name>.py`` with top-level ``run(args) -> dict`` (``args``
has ``quick``, ``device`` and ``results_dir``) and ``report(result) -> str``; the runner
writes the dict to ``bench/results/<name>.json``. See bench/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

FIRST = ("train_speed", "tokenize_speed")  # run these first, then the others by name


def discover() -> list[str]:
    """Names of the modules in this folder that follow the protocol above."""
    here = Path(__file__).resolve().parent
    found = []
    for path in sorted(here.glob("*.py")):
        if path.stem.startswith("_") or path.stem == "common":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"^def run\(", text, re.M) and re.search(r"^def report\(", text, re.M):
            found.append(path.stem)
    return [n for n in FIRST if n in found] + [n for n in found if n not in FIRST]
