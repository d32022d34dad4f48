"""The library and its built-in suites ship type information (``py.typed``): mypy, with the
settings in pyproject.toml, finds nothing wrong in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_library_and_its_suites_type_check(tmp_path, require_extra):
    require_extra("dev", "mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]

