"""A data-limited corpus: a seeded sample of whole lines of the shared BabyLM corpus.

    python docs/results/data-limited/subset.py runs/data-limited/subset.txt --words 1M

Every source file gives lines (10,000-word snippets) in proportion to its share of the
corpus's words, drawn by a seeded permutation, as long as they fit in the file's share of
``--words``; the sample keeps the corpus's mix of child-directed speech, dialogue, subtitles,
fiction and encyclopedia text. The lines are written in the order of their files, the
files' order and each file's sampled lines kept in their original order, so the same
command always writes the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from minidml.data import corpus_files, read_lines


def sample(files: list[Path], words: int, seed: int) -> list[str]:
    per_file = [[line for line in read_lines([f]) if line.strip()] for f in files]
    counts = [[len(line.split()) for line in lines] for lines in per_file]
    total = sum(map(sum, counts))
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for lines, n in zip(per_file, counts, strict=True):
        share = words * sum(n) / total
        taken, got = [], 0
        for i in rng.permutation(len(lines)):
            if got + n[i] > share:  # at most the share: the sample stays within --words
                continue
            taken.append(int(i))
            got += n[i]
        out.extend(lines[i] for i in sorted(taken))
    return out


def main() -> int:
    from minidml.cli.commands import Count  # the command line's 1M / 300k numbers

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--words", default="1M", help="words to sample (default 1M)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = os.environ.get("MINIDML_DATA_DIR")
    if not root:
        raise SystemExit("set MINIDML_DATA_DIR to the shared data directory")
    words = Count().convert(args.words, None, None)
    lines = sample(corpus_files([Path(root) / "babylm-2024-100M-snippets"]), words, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    n = sum(len(line.split()) for line in lines)
    print(f"{args.out}: {len(lines)} lines, {n:,} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
