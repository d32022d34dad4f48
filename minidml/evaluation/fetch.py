"""Download evaluation data from pinned addresses, checked against pinned sha256 checksums.

Each file is a :class:`DataFile`: a path relative to a data root, a pinned download address
(a commit-pinned ``raw.githubusercontent.com`` URL, so its bytes cannot change) and the sha256
of its bytes as stored (for an ``.xz`` file, of the compressed bytes). The rules:

- :func:`fetch` downloads each file that is absent under the root (with ``force``, every file).
  A file that is already there is hashed: it is left alone when its checksum matches and
  downloaded again when it does not. Nothing is ever trusted without its checksum.
- A download streams into a temporary file in the destination directory while it is hashed,
  and is renamed into place only when its sha256 (and its size, when known) match. A reader
  therefore never sees a partial or wrong file under the final name; on any failure the
  temporary file is removed and the previous content, if any, is left as it was.
- A truncated transfer (fewer bytes than the server's ``Content-Length`` or the pinned size)
  and a checksum mismatch are errors, as are network failures (unreachable host, HTTP error
  status, time-out, connection reset). Each raises :class:`~minidml.errors.MinidmlError` with
  one line that names the file or address and says what to do.
- ``mirror`` is a base URL (``https://``, ``http://`` or ``file://``) that holds the same layout
  as the data root: the file ``p`` is then read from ``<mirror>/<p>`` instead of its pinned
  address, and is checked against the same pinned checksum.

:func:`missing` lists the absent files without reading any (fast); :func:`verify` hashes every
file and describes each problem. This module prints nothing; pass ``progress=True`` for a tqdm
bar counting bytes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .._io import atomic_open
from .._version import __version__
from ..errors import MinidmlError, describe, one_line

__all__ = ["DataFile", "missing", "verify", "fetch"]

CHUNK = 1 << 20  # bytes read, hashed and written at a time
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DataFile:
    """One pinned file: where it goes under a data root, where it comes from, what it hashes to.

    ``path`` is relative and POSIX-style (``"blimp/adjunct_island.jsonl"``); ``sha256`` is the
    hex digest of the file's bytes as stored; ``size`` (bytes), when given, is checked too.
    """

    path: str
    url: str
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        parts = PurePosixPath(self.path).parts
        if (
            not parts or self.path.startswith("/") or "\\" in self.path
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ValueError(f"DataFile path must be relative and plain POSIX, got {self.path!r}")
        if not _HEX64.fullmatch(self.sha256):
            raise ValueError(
                f"DataFile {self.path}: sha256 must be 64 lowercase hex digits, "
                f"got {self.sha256!r}"
            )
        if self.size is not None and self.size < 0:
            raise ValueError(f"DataFile {self.path}: size must be >= 0, got {self.size}")


def missing(files: Sequence[DataFile], root: str | os.PathLike) -> list[DataFile]:
    """The files that are absent under ``root`` (nothing is read or hashed)."""
    root = Path(root)
    return [f for f in files if not (root / f.path).is_file()]


def verify(files: Sequence[DataFile], root: str | os.PathLike) -> list[str]:
    """One message per file that is absent under ``root`` or whose size or sha256 is wrong."""
    root = Path(root)
    problems = []
    for f in files:
        problem = _check(f, root / f.path)
        if problem:
            problems.append(f"{f.path}: {problem}")
    return problems


def fetch(
    files: Sequence[DataFile],
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    progress: bool = False,
    timeout: float = 60.0,
    force: bool = False,
) -> list[Path]:
    """Download the absent or wrong ``files`` (every one with ``force``) into ``root/<path>``.

    Files already present with the right checksum are left alone. Returns the paths written,
    in the order of ``files``. Raises :class:`MinidmlError` on the first file that cannot be
    downloaded or does not match its checksum; the files written before it stay (they are
    verified), and nothing partial is left behind.
    """
    root = Path(root)
    if mirror is not None and urllib.parse.urlsplit(mirror).scheme not in ("https", "http",
                                                                           "file"):
        hint = (f"file://{Path(mirror).resolve()}" if "://" not in mirror
                else "https://…, http://… or file:///…")
        raise MinidmlError(f"--mirror {mirror}: not a URL; give {hint}")
    todo = [f for f in files if force or _check(f, root / f.path) is not None]
    sizes = [f.size for f in todo if f.size is not None]
    total = sum(sizes) if len(sizes) == len(todo) else None
    written = []
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
        desc="downloading", dynamic_ncols=True,
    ) as bar:
        for f in todo:
            bar.set_postfix_str(f.path, refresh=False)
            url = _url(f, mirror)
            _download(f, url, root / f.path, timeout=timeout, bar=bar)
            written.append(root / f.path)
    return written


def _url(f: DataFile, mirror: str | None) -> str:
    if mirror is None:
        return f.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(f.path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check(f: DataFile, path: Path) -> str | None:
    """What is wrong with ``path`` as a copy of ``f`` (None when it is right)."""
    try:
        if not path.is_file():
            return "missing"
        if f.size is not None and (n := path.stat().st_size) != f.size:
            return f"{n} bytes, expected {f.size}"
        actual = _sha256(path)
    except OSError as e:
        return f"cannot read it ({one_line(e.strerror or e)})"
    if actual != f.sha256:
        return f"sha256 {actual[:12]}... does not match the pinned {f.sha256[:12]}..."
    return None


def _network_error(f: DataFile, url: str, e: BaseException, timeout: float) -> MinidmlError:
    advice = "check the network and retry, or use --mirror with a copy of the data"
    if isinstance(e, urllib.error.HTTPError):
        why = f"HTTP {e.code} {one_line(e.reason)}"
        if 400 <= e.code < 500 and e.code not in (408, 429):
            advice = (
                "the file is not at that address: check it (a mirror must hold the data "
                "directory's layout), or use --mirror with a copy of the data"
            )
    elif isinstance(e, TimeoutError) or (
        isinstance(e, urllib.error.URLError) and isinstance(e.reason, TimeoutError)
    ):
        why = f"no answer within {timeout:g} s"
    elif isinstance(e, urllib.error.URLError):
        why = one_line(e.reason)
        if url.startswith("file:") and isinstance(e.reason, FileNotFoundError):
            why, advice = "no such file", ("the mirror lacks it: a mirror must hold the data "
                                           "directory's layout")
    elif isinstance(e, http.client.IncompleteRead):
        why = f"connection closed early ({len(e.partial)} bytes read)"
    else:
        why = describe(e)
    return MinidmlError(f"cannot download {f.path} from {url}: {why}; {advice}")


def _download(f: DataFile, url: str, dest: Path, *, timeout: float, bar: tqdm) -> None:
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"minidml/{__version__}"})
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, ValueError):  # urllib's answer to a malformed address
            raise MinidmlError(f"cannot download {f.path}: bad address {url!r} ({e})") from None
        raise _network_error(f, url, e, timeout) from None
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.strip().isdigit() else None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinidmlError(
                f"cannot create {dest.parent} for {f.path}: {one_line(e.strerror or e)}; "
                f"choose a writable data directory"
            ) from None
        h = hashlib.sha256()
        n = 0
        try:
            with atomic_open(dest, "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _network_error(f, url, e, timeout) from None
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
                expected_n = f.size if f.size is not None else announced
                if expected_n is not None and n != expected_n:
                    short = "truncated" if n < expected_n else "too long"
                    raise MinidmlError(
                        f"download of {f.path} from {url} is {short}: got {n} of {expected_n} "
                        f"bytes; retry, or use --mirror with a copy of the data"
                    )
                if announced is not None and n != announced:
                    raise MinidmlError(
                        f"download of {f.path} from {url} is truncated: got {n} of {announced} "
                        f"bytes announced by the server; retry, or use --mirror"
                    )
                actual = h.hexdigest()
                if actual != f.sha256:
                    raise MinidmlError(
                        f"checksum mismatch for {f.path} from {url}: sha256 {actual[:12]}... "
                        f"!= pinned {f.sha256[:12]}...; the download was corrupted or the "
                        f"source changed: retry, or use --mirror with a verified copy"
                    )
        except MinidmlError:
            raise
        except OSError as e:  # the local side: disk full, permissions
            raise MinidmlError(
                f"cannot write {dest}: {one_line(e.strerror or e)}; "
                f"free space or choose another data directory"
            ) from None
