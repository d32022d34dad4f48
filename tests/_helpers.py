"""Assertions shared by test modules (``tests/`` is on ``sys.path`` under pytest)."""

from __future__ import annotations


def run_cli(*args, capsys) -> tuple[int, str, str]:
    """``minidml ARGS`` in this process: (exit status, stdout, stderr)."""
    import pytest

    from minidml.cli.commands import main

    with pytest.raises(SystemExit) as exc:
        main([*map(str, args)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A failed command: non-zero status, one line on stderr, no traceback, every needle."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def real_text_student(data_dir, root, export: str = "hf", **settings):
    """A one-student run trained briefly in ``root`` on the first lines of two real BabyLM
    files (so its vocabulary has the pieces of running English) with ``settings`` changed
    from a small default, and its Hugging Face export ``root/export``."""
    import minidml
    from minidml import Shape, TrainConfig
    from minidml.hf.export import export_hf

    corpus = real_text_corpus(data_dir, root / "corpus.txt")
    cfg = TrainConfig(**{**dict(students=(Shape(1, 64, 2),), mode="single", vocab_size=1200,
                                lr=3e-3), **settings})
    run = minidml.train(corpus, root / "run", cfg)
    return run, export_hf(run, 0, root / export)


def real_text_corpus(data_dir, path):
    """The first lines of two real BabyLM files, written to ``path``."""
    import itertools
    import lzma

    with open(path, "w", encoding="utf-8") as out:
        for name in ("childes", "simple_wiki"):
            with lzma.open(data_dir / f"babylm-2024-100M-snippets/{name}.txt.xz", "rt",
                           encoding="utf-8") as f:
                out.writelines(itertools.islice(f, 4))
    return path


def official_pipeline(data_dir, needs: str):
    """The official BabyLM 2026 pipeline beside the data (``needs``: a file it must have);
    missing, it fails the test where the data was promised, and skips it elsewhere."""
    import os

    import pytest

    path = data_dir.parent / "reference" / "babylm-eval-strict"
    if not (path / needs).is_file():
        if os.environ.get("MINIDML_DATA_DIR"):
            pytest.fail(f"the official BabyLM pipeline is not at {path}", pytrace=False)
        pytest.skip(f"the official BabyLM pipeline is not at {path}")
    return path


def cli(*args) -> tuple[int, str, str]:
    """``minidml ARGS`` in this process: (exit status, stdout, stderr), for module fixtures,
    which have no capsys."""
    import contextlib
    import io

    from minidml.cli.commands import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*map(str, args)])
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, out.getvalue(), err.getvalue()


def optimizer_states(state: dict) -> list[dict]:
    """The per-parameter states of a checkpointed optimiser (one, or a Hybrid's parts)."""
    parts = [state] if "state" in state else list(state.values())
    return [s for part in parts for s in part["state"].values()]
