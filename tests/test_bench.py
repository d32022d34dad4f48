"""The benchmarks still run against the library as it is: the cheap ones in their --quick
form (a smoke run: the figures mean nothing here), each writing its JSON and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import discover

ROOT = Path(__file__).resolve().parents[1]
# seconds each on the 2-core CPU; the others (tokenize_speed, scoring_speed, context_scoring,
# distributed, train_memory) take minutes even when quick
CHEAP = ("compare_step", "search_speed", "shape_speed", "mutual_kl", "wml_step", "muon_step",
         "generate_speed")


def test_every_cheap_benchmark_is_discovered():
    assert set(CHEAP) <= set(discover())


@pytest.mark.parametrize("name", CHEAP)
def test_quick_benchmark_runs(name, tmp_path):
    env = {**os.environ, "MINIDML_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "bench", name, "--quick", "--device", "cpu",
                           "--results-dir", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED" not in proc.stderr
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["quick"] is True
    assert result["machine"]["device"] == "cpu"
    assert proc.stdout.strip() or proc.stderr.strip()  # the report was printed
