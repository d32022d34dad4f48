"""Scoring protocols: which tokens of a text a zero-shot suite scores, written once each.

A choice to score is ``context + join + text`` (a minimal pair's sentence has no context; an
EWoK target follows its context after one space; an entity-tracking option follows its prefix
directly). Its score is the sum of the log-probabilities of its scored tokens, with no length
normalisation. Two rules decide which tokens those are:

``babylm-2026`` (the default): the official BabyLM 2026 strict pipeline
    (``babylm-org/babylm-eval``, ``strict/``, whose zero-shot scorer is the 2025 pipeline's).
    The whole sentence ``context + join + text`` is encoded as the exported tokenizer encodes
    it, special tokens included (minidml's: one BOS in front), and the scored tokens are the
    ones after the first whose character span ends past the start of the completion
    (``join + text`` when there is a context, else the whole sentence): a token that straddles
    the boundary is scored. The first token is never scored (it is only input). Texts are run
    whole, however long (rotary positions past the students' context, as the exported Llama
    computes them).

``lm-eval``: lm-evaluation-harness (and the BabyLM 2024 pipeline built on it). A sentence
    without context is ``" " + text`` after the BOS token (the harness's target delimiter);
    with a context, ``context + join + text`` is encoded jointly and the scored tokens are
    those beyond the tokens of the context alone (trailing spaces of the context move to the
    continuation first). A text longer than the students' context keeps its last ``context``
    positions.

Both pipelines put the correct choice first and take the first of equal scores, so **a tie
counts as correct** under either; each task still reports its ``ties``. Both average a
suite's tasks (BLiMP's paradigms, EWoK's domains, …) unweighted; suites with their own
aggregation (entity tracking's mean of its three files) say so themselves.

With a tokenizer that has the word boundary (:mod:`minidml.tokenizer`), a sentence's first
word is the same piece under both rules (``" Only"`` and ``"Only"`` encode alike); with an old
tokenizer the rules differ on the first word, and ``babylm-2026`` is what the official
pipeline measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import MinidmlError

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Request", "ScoringProtocol", "TextTokenizer",
           "get_protocol"]



class TextTokenizer(Protocol):
    """What scoring and the suites use of a tokenizer (:class:`minidml.Tokenizer` or
    :class:`minidml.hf.models.HFTokenizer`): ``bos_id`` is the prefix texts are scored
    after (lm-eval), ``encode_with_spans`` the tokens and character spans of a whole text as
    the tokenizer encodes it, special tokens included (babylm-2026); ``decode`` the text of
    tokens (the reading suite's pieces of a word)."""

    bos_id: int
    eos_id: int
    pad_id: int

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode_with_spans(self, texts: Sequence[str]
                          ) -> list[tuple[list[int], list[tuple[int, int]]]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Request(NamedTuple):
    """One text to score: token ids (the prefix token first), and the slice ``skip:stop`` of
    them whose log-probabilities are summed."""

    ids: list[int]
    skip: int
    stop: int


@dataclass(frozen=True)
class ScoringProtocol:
    """A rule for turning choices into :class:`Request` s (see the module docstring)."""

    name: str
    description: str
    truncate: bool  # keep the last `context` positions of a longer text

    def requests(self, tokenizer: TextTokenizer, texts: Sequence[str],
                 contexts: Sequence[str] | None = None, joins: Sequence[str] | None = None
                 ) -> list[Request]:
        texts = list(texts)
        contexts = [""] * len(texts) if contexts is None else list(contexts)
        joins = [" "] * len(texts) if joins is None else list(joins)
        if not len(contexts) == len(joins) == len(texts):
            raise ValueError(f"{len(contexts)} contexts and {len(joins)} joins for "
                             f"{len(texts)} texts")
        return self._requests(tokenizer, texts, contexts, joins)

    def _requests(self, tokenizer: TextTokenizer, texts: list[str], contexts: list[str],
                  joins: list[str]) -> list[Request]:
        raise NotImplementedError


class _LmEval(ScoringProtocol):
    def _requests(self, tokenizer: TextTokenizer, texts: list[str], contexts: list[str],
                  joins: list[str]) -> list[Request]:
        bos = tokenizer.bos_id
        out: list[Request] = [Request([], 0, 0)] * len(texts)
        plain = [i for i, c in enumerate(contexts) if not c]
        encoded = tokenizer.encode_batch([" " + texts[i] for i in plain])
        for i, ids in zip(plain, encoded, strict=True):
            out[i] = Request([bos, *ids], 1, 1 + len(ids))
        joint = [i for i, c in enumerate(contexts) if c]
        if joint:
            heads, tails = [], []
            for i in joint:
                head = contexts[i].rstrip()  # trailing spaces join the continuation
                heads.append(head)
                tails.append(contexts[i][len(head):] + joins[i] + texts[i])
            whole = tokenizer.encode_batch([h + t for h, t in zip(heads, tails, strict=True)])
            alone = tokenizer.encode_batch(heads)
            for i, w, a in zip(joint, whole, alone, strict=True):
                ids = [bos, *a, *w[len(a):]]
                out[i] = Request(ids, 1 + len(a), len(ids))
        return out


class _BabyLM2026(ScoringProtocol):
    def _requests(self, tokenizer: TextTokenizer, texts: list[str], contexts: list[str],
                  joins: list[str]) -> list[Request]:
        sentences, completions = [], []
        for text, context, join in zip(texts, contexts, joins, strict=True):
            completion = join + text if context else text
            sentences.append(context + completion)
            completions.append(completion)
        out = []
        for sentence, completion, (ids, spans) in zip(
                sentences, completions, tokenizer.encode_with_spans(sentences), strict=True):
            start = len(sentence) - len(completion) + (spans[0][0] if spans else 0)
            scored = [i for i in range(1, len(ids)) if spans[i][1] > start]
            if not scored:
                out.append(Request(list(ids), len(ids), len(ids)))
                continue
            if scored != list(range(scored[0], scored[-1] + 1)):
                raise MinidmlError(f"the tokenizer's character spans of {sentence[:40]!r} are "
                                   "out of order; it cannot be scored by the BabyLM rule")
            out.append(Request(list(ids), scored[0], scored[-1] + 1))
        return out


PROTOCOLS: dict[str, ScoringProtocol] = {
    "babylm-2026": _BabyLM2026(
        "babylm-2026", "the official BabyLM 2026 strict pipeline: the sentence as the "
        "tokenizer encodes it, the completion's tokens scored", truncate=False),
    "lm-eval": _LmEval(
        "lm-eval", "lm-evaluation-harness (BabyLM 2024): BOS, then ' ' + text; a context's "
        "continuation scored after it", truncate=True),
}
DEFAULT_PROTOCOL = "babylm-2026"


def get_protocol(name: str | ScoringProtocol) -> ScoringProtocol:
    """The protocol called ``name``; an unknown name is a one-line error naming
    ``--protocol``."""
    if isinstance(name, ScoringProtocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise MinidmlError(f"--protocol {name}: choose one of {', '.join(PROTOCOLS)}") from None
