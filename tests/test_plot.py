"""``minidml plot``: the pictures of a run exist, are what they say, and need only the extra."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import pytest

from minidml.cli.commands import main
from minidml.errors import MinidmlError

from _helpers import assert_one_line_error, run_cli


@pytest.fixture(autouse=True)
def _matplotlib(require_extra):
    require_extra("plot", "matplotlib")


def svg_text(path) -> str:
    root = ET.parse(path).getroot()  # well-formed SVG, or this raises
    assert root.tag.endswith("svg")
    return path.read_text()


def test_a_run_gets_loss_and_omega_pictures(tiny_run, tmp_path, capsys):
    out = tmp_path / "pics"
    main(["plot", str(tiny_run.path), "--out", str(out)])
    written = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == ["losses.png", "losses.svg", "omega.png", "omega.svg"]  # it learned ω
    for name in ("losses.png", "omega.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # matplotlib writes text as glyph paths; the titles survive as comments and ids
    assert "validation loss" in svg_text(out / "losses.svg")
    assert "learned peer weights" in svg_text(out / "omega.svg")


def test_without_matplotlib_the_message_says_how_to_install_it(tiny_run, monkeypatch):
    from minidml.experiments.plot import plot

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(MinidmlError, match=r"pip install 'minidml\[plot\]'"):
        plot(tiny_run.path)


def test_a_directory_that_is_neither_run_nor_comparison_is_refused(tmp_path):
    from minidml.experiments.plot import plot

    with pytest.raises(MinidmlError, match="neither a run"):
        plot(tmp_path)


def test_evaluated_checkpoints_get_a_learning_curve(tiny_run, tmp_path, capsys):
    import shutil

    from minidml.rundir import checkpoint_scores

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    main(["eval", str(run), "--suite", "agreement", "--limit", "40", "--step", "all", "-q"])
    scores = checkpoint_scores(run)
    assert list(scores) == [tiny_run.step]
    assert 0 <= scores[tiny_run.step]["groups"]["student-0"]["agreement"]["score"] <= 1
    capsys.readouterr()
    main(["plot", str(run), "--out", str(tmp_path / "pics"), "--format", "svg"])
    names = sorted(p.rsplit("/", 1)[1] for p in capsys.readouterr().out.split())
    assert "curve.svg" in names
    text = svg_text(tmp_path / "pics" / "curve.svg")
    assert "suite scores of checkpoints" in text and "words seen (each model)" in text
    # two evaluations of a step in one second: the second written (…-2.json) is the newest
    first = next((run / "eval").glob(f"results-step{tiny_run.step}-*.json"))
    newer = json.loads(first.read_text())
    newer["groups"]["student-0"]["agreement"]["score"] = -1.0
    later = first.with_name(f"{first.stem}-2.json")
    later.write_text(json.dumps(newer))
    assert checkpoint_scores(run)[tiny_run.step]["groups"]["student-0"]["agreement"][
        "score"] == -1.0
    later.unlink()
    # a results file cut short is one line naming it
    cut = run / "eval" / f"results-step{tiny_run.step}-99999999-999999.json"
    cut.write_text('{"trunc')
    code, _, err = run_cli("plot", run, "--out", tmp_path / "pics2", capsys=capsys)
    assert_one_line_error(code, err, str(cut), "remove it")


def test_the_curve_of_a_fast_set_stands_beside_the_official_baseline(tiny_run, tmp_path,
                                                                      capsys):
    """A suite with a published baseline gets its final score as a line."""
    import json
    import shutil

    from minidml.evaluation.baselines import official_baseline

    assert official_baseline("blimp-fast") == official_baseline("blimp") == 0.6508
    assert official_baseline("agreement") is None
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    doc = {"groups": {"student-0": {"blimp-fast": {"suite": "blimp-fast", "score": 0.55,
                                                  "score_stderr": 0.01}}}}
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / f"results-step{tiny_run.step}-2026.json").write_text(json.dumps(doc))
    main(["plot", str(run), "--out", str(tmp_path / "pics"), "--format", "svg"])
    capsys.readouterr()
    assert "blimp: official baseline, final" in svg_text(tmp_path / "pics" / "curve.svg")
