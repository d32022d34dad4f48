"""Documents: how the lines of a corpus become the ``BOS … EOS`` sequences students train on.

* ``line`` (the BabyLM pipeline's rule): every non-blank line is one document. The shared
  BabyLM snippets hold 10,000 words a line, so a student then sees a text start right after
  BOS once every ~13,000 tokens, while every zero-shot suite scores a sentence right after
  BOS.
* ``sentence``: each line is cut at utterance and sentence boundaries, and every piece is a
  document. The token stream still packs them back to back (``BOS s₁ EOS BOS s₂ EOS …``), so
  one training window holds several short documents.

The splitter is rule-based and deterministic (:data:`SPLITTER_VERSION` names the rules, for
caches):

1. **Speaker tags** start an utterance: CHILDES's ``*MOT:``, ``*CHI:`` (an asterisk, two to
   four capitals, a colon) and Switchboard's ``A:``/``B:`` (one capital and a colon), at the
   start of the text or after whitespace, followed by whitespace or the end. With
   ``speaker_tags="drop"`` the tags themselves are removed.
2. **Sentence ends**: a run of ``.``, ``!``, ``?`` or ``…``, then any closing quotes or
   brackets, then whitespace, then (after any opening quotes or brackets) a capital letter or
   a digit. A ``.`` does not end a sentence after a known abbreviation (``Mr.``, ``Dr.``,
   ``vs.``, …: :data:`ABBREVIATIONS`), after a single letter (an initial, as in
   ``J. K. Rowling``) or after a word with an inner period (``e.g.``, ``U.S.``).

Cutting happens only inside whitespace, and the pieces are the text between cuts with the
whitespace at the cut removed: joined with single spaces, the pieces of a line give the line
back (less its dropped tags and the whitespace at the cuts), so no text is lost or repeated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["RULES", "SPEAKER_TAGS", "SPLITTER_VERSION", "ABBREVIATIONS", "split_line",
           "documents"]

RULES = ("line", "sentence")
SPEAKER_TAGS = ("keep", "drop")
SPLITTER_VERSION = 1

# titles, ranks and reference words, lower-case and without their period; abbreviations that
# are also common words ("sun.", "sat.", "ed.", "no.") or often end a sentence ("etc.") are
# left out on purpose; abbreviations with an inner period ("e.g.", "U.S.") need no list
ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "capt", "lt",
    "sgt", "cpl", "pvt", "vs", "cf", "viz", "approx", "dept", "fig", "figs", "vol", "vols",
    "chap", "nos", "pp", "inc", "ltd", "corp", "bros", "assn", "univ", "jan", "feb", "apr",
    "jun", "jul", "aug", "sept", "oct", "nov", "tues", "thurs",
))

_TAG = re.compile(r"(?:(?<=\s)|^)(?:\*[A-Z]{2,4}|[A-Z]):(?=\s|$)")
# a sentence end: matched only from the first character of a run of end marks (the lookbehind)
# and without backtracking (the possessive quantifiers), so that splitting takes time linear in
# the line's length, however long its runs of punctuation
_END = re.compile(r"(?<![.!?\u2026])([.!?\u2026]++)[\"'\u201d\u2019)\]]*+(\s++)"
                  r"(?=[\"'\u201c\u2018(\[]*+[A-Z0-9])")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at ``text[dot]`` closes an abbreviation or an initial."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip("\"'(\u201c\u2018[")
    if len(word) == 1:
        return word.isalpha()  # an initial
    return "." in word or word.lower() in ABBREVIATIONS


def _sentences(text: str) -> Iterator[str]:
    start = 0
    for m in _END.finditer(text):
        if m.group(1) == "." and _is_abbreviation(text, m.start(1)):
            continue
        piece = text[start:m.start(2)].strip()
        if piece:
            yield piece
        start = m.end(2)
    piece = text[start:].strip()
    if piece:
        yield piece


def split_line(line: str, speaker_tags: str = "keep") -> list[str]:
    """The utterances and sentences of one line (see the module docstring)."""
    if speaker_tags not in SPEAKER_TAGS:
        raise ValueError(f"speaker_tags {speaker_tags!r}: choose from {SPEAKER_TAGS}")
    cuts = [m.start() for m in _TAG.finditer(line)]
    bounds = [0, *[c for c in cuts if c > 0], len(line)]
    out: list[str] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        utterance = line[a:b].strip()
        if speaker_tags == "drop":
            m = _TAG.match(utterance)
            if m is not None:
                utterance = utterance[m.end():].strip()
        out.extend(_sentences(utterance))
    return out


def documents(lines: Iterable[str], rule: str = "line",
              speaker_tags: str = "keep") -> Iterator[str]:
    """The documents of a stream of lines under ``rule`` (``line`` or ``sentence``); blank
    lines and pieces make none. ``speaker_tags`` applies to ``sentence`` only."""
    if rule not in RULES:
        raise ValueError(f"documents {rule!r}: choose from {RULES}")
    for line in lines:
        if rule == "line":
            if line.strip():
                yield line
        else:
            yield from split_line(line, speaker_tags)
