"""One writer per run directory.

``minidml train`` (a new run, ``--resume`` or ``--force``) and ``minidml compare`` hold their
directory for as long as they run: an exclusive ``flock`` on the file ``.lock`` inside it,
which holds the writer's process id. The kernel releases the lock when the process ends,
however it ends (``kill -9`` included), so a lock is never stale: a second writer is refused
with one line naming the holder's process id, and once the holder is gone the next one
simply takes it. Readers (``eval``, ``generate``, ``export``, ``load``) never take it.

A new run directory is made under a temporary name beside it (``.NAME.starting-PID``, locked
the same way) and given its name only once the run can start (:func:`hold_new`): a process
that dies before, even by an abort nothing can catch (the allocator's), leaves no run
directory, and the next writer of that name removes the temporary one of a dead process. A
live one refuses it, naming its process id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import MinidmlError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(directory: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Hold ``directory`` (created if missing) for this process's writing; a directory that
    another process holds is a :class:`MinidmlError` naming it and the holder. What this
    made (its lock file, and the directory if it is empty) is removed again if the body
    fails."""
    out = Path(directory)
    created_dir = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK_NAME
        created_lock = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (NotADirectoryError, FileExistsError):  # it, or a folder above it, is a file
        raise MinidmlError(f"{option} {out}: exists and is not a directory; choose another "
                           "path") from None
    except OSError as e:
        raise MinidmlError(f"{option} {out}: not writable ({e.strerror}); choose another "
                           "directory") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise MinidmlError(f"{option} {out}: in use by another minidml process (pid "
                               f"{holder}); wait for it to finish or stop it, or choose "
                               "another directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield out
        except BaseException:
            _tidy(out, created_dir, created_lock)
            raise
    finally:
        os.close(fd)


@dataclass
class Staged:
    """A new directory being made under a temporary name (``path``), locked by this process;
    :meth:`publish` gives it its own name (``final``), where ``replaces`` says that a
    directory of that name, held by this process too, is to be replaced (``--force``)."""

    path: Path
    final: Path
    option: str = "--out"
    replaces: bool = False

    def publish(self) -> Path:
        """Rename the directory to its own name (an empty directory there, made meanwhile,
        is replaced; with ``replaces``, the one there is moved aside first and removed
        after); another process's run there is a :class:`MinidmlError`."""
        old = None
        if self.replaces and self.final.exists():
            old = self.final.parent / f".{self.final.name}.replaced-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.final, old)
        try:
            os.rename(self.path, self.final)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise MinidmlError(f"{self.option} {self.final}: cannot be made "
                                   f"({e.strerror}); choose another directory") from None
            other = holder(self.final)
            who = f" (pid {other})" if other else ""
            raise MinidmlError(f"{self.option} {self.final}: another process made it while "
                               f"this run was being prepared{who}; choose another directory, "
                               "or --force to overwrite it") from None
        finally:
            if old is not None:
                if self.final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:  # not replaced after all: the old run back in its place
                    os.rename(old, self.final)
        return self.final


def staging_name(directory: Path, pid: int | None = None) -> Path:
    """Where a new ``directory`` is made before it is given its name."""
    return directory.parent / f".{directory.name}.starting-{os.getpid() if pid is None else pid}"


@contextlib.contextmanager
def hold_new(directory: str | os.PathLike, option: str = "--out", replaces: bool = False
             ) -> Iterator[Staged]:
    """Hold a directory that does not exist yet (or, with ``replaces``, one this process
    holds and will replace): made (empty, locked) under a temporary name beside it, given
    its name by :meth:`Staged.publish`. Another process preparing the same directory is a
    :class:`MinidmlError` naming it; the temporary directory of a dead one is removed. If
    the body fails before publishing, the temporary directory is removed (and what it was
    to replace stays as it was)."""
    final = Path(directory)
    if final.is_symlink() and not final.exists():
        raise MinidmlError(f"{option} {final}: a symbolic link to nothing "
                           f"({os.readlink(final)}); remove it or choose another directory")
    above = next((p for p in final.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise MinidmlError(f"{option} {final}: {above} is a file, not a directory; choose "
                           "another path")
    pattern = f".{glob.escape(final.name)}.starting-*"
    for other in final.parent.glob(pattern) if final.parent.is_dir() else ():
        pid = holder(other)
        if pid is not None:
            raise MinidmlError(f"{option} {final}: in use by another minidml process (pid "
                               f"{pid}) that is preparing a run there; wait for it to finish "
                               "or stop it, or choose another directory")
        shutil.rmtree(other, ignore_errors=True)  # a dead process's
    staged = Staged(staging_name(final), final, option, replaces)
    shutil.rmtree(staged.path, ignore_errors=True)  # a reused pid's leftovers
    try:
        with hold(staged.path, option):
            yield staged
    except BaseException:
        if staged.path.exists():
            shutil.rmtree(staged.path, ignore_errors=True)
        raise


def _tidy(out: Path, created_dir: bool, created_lock: bool) -> None:
    """Remove the lock file this process made, and the directory if it made that too and
    nothing else is in it."""
    with contextlib.suppress(OSError):
        if created_lock:
            (out / LOCK_NAME).unlink(missing_ok=True)
        if created_dir and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def holder(directory: str | os.PathLike) -> int | None:
    """The process id holding ``directory``, or None when no process does."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
