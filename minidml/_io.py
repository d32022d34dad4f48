"""Atomic file writes (a reader never sees a half-written file), and the markdown tables of
reports."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", exclusive: bool = False
                ) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``
    (``exclusive``: link it to ``path`` instead, raising :class:`FileExistsError` where a file
    is already there, so two writers never replace each other's).

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                               dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the mode open() would give, not mkstemp's 0600
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_orphans(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_open` in ``directory`` whose writing
    process is gone (killed before it could clean up); returns them."""
    removed = []
    for tmp in Path(directory).glob(".*-*.tmp"):
        pid = tmp.name.rsplit("-", 1)[0].rsplit(".", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            pass
        except OSError:  # alive, someone else's
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any, exclusive: bool = False) -> None:
    with atomic_open(path, "w", exclusive) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def utc_now() -> str:
    """The time now, UTC, to the second, as ISO 8601: what every record says it was written."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]
