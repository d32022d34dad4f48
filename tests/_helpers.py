"""Assertions shared by test modules (``tests/`` is on ``sys.path`` under pytest)."""

from __future__ import annotations


def run_cli(*args, capsys) -> tuple[int, str, str]:
    """``minidml ARGS`` in this process: (exit status, stdout, stderr)."""
    import pytest

    from minidml.cli import main

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
