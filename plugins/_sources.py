"""Pinned public sources of the evaluation data, read from ``sources.tsv`` beside this module.

Each row of the TSV (header ``path, url, sha256, bytes``) is one file under the data root, its
commit-pinned download address and the sha256 and size of its bytes as stored. Files rebuilt
locally without a public copy and the training corpora are not listed.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

from minidml.evaluation.fetch import DataFile

__all__ = ["sources"]

_COLUMNS = ["path", "url", "sha256", "bytes"]


@functools.lru_cache(maxsize=1)
def _all() -> tuple[DataFile, ...]:
    text = resources.files(__package__).joinpath("sources.tsv").read_text(encoding="utf-8")
    reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    if header != _COLUMNS:
        raise ValueError(f"sources.tsv: header is {header}, expected {_COLUMNS}")
    return tuple(
        DataFile(path=path, url=url, sha256=sha256, size=int(size) if size else None)
        for path, url, sha256, size in reader
    )


def sources(*prefixes: str) -> tuple[DataFile, ...]:
    """The pinned files whose path starts with any of ``prefixes`` (all files when none given).

    ``sources("babylm-eval/blimp_filtered/")`` gives the 67 filtered BLiMP paradigms.
    """
    rows = _all()
    if not prefixes:
        return rows
    return tuple(f for f in rows if f.path.startswith(prefixes))
