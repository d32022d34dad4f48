"""A sentencepiece tokenizer that every student of a run shares.

Training streams the corpus once, splits lines that are too long for sentencepiece (which
silently skips any sentence longer than ``max_sentence_length`` bytes) into whitespace-bounded
pieces, and keeps a seeded reservoir sample of at most ``input_sentence_size`` pieces, so
training time and memory stay bounded however large the corpus is. Normalisation is the
identity and ``byte_fallback`` is on (a literal ``▁``, sentencepiece's space symbol, is encoded
as its bytes so that it is not read as a space).

**The word boundary.** By default (``boundary="prefix"``) a text that does not begin with a
space is encoded as if it did, so its first word is the same piece as the same word in running
text (``Only`` → ``▁Only``, as mid-sentence) whether the text is scored as it is (the BabyLM
2026 pipeline) or after one space (lm-evaluation-harness). This is the rule of the Hugging
Face ``Metaspace`` pre-tokenizer (prepend ``▁`` unless the text already starts with one), and
the sentencepiece model stores it as its dummy prefix, so the exported ``tokenizer.json`` and
``tokenizer.model`` reproduce it. Decoding drops that one boundary space:
``decode(encode(text)) == text`` for every text that does not begin with a space, and a text
that does decodes without its first space (``"Only"`` and ``" Only"`` are the same tokens).
Models trained before the boundary existed (``boundary="none"``: no dummy prefix) encode text
exactly as given and decode every text exactly; a loaded model's own bytes say which it is.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from . import _io
from .errors import MinidmlError, one_line
from .spm_model import has_dummy_prefix, model_type, with_dummy_prefix

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MAX_PIECE_BYTES = 1024  # well under sentencepiece's default max_sentence_length of 4192 bytes
# text without spaces over LONG_RUN characters (no language written with spaces has such
# words) costs sentencepiece's training time superlinearly: at most this much of it is
# sampled (on the 2-core CPU, 256 KB of it trains in seconds, 2 MB took over a minute)
LONG_RUN, LONG_RUN_SAMPLE_BYTES = 256, 256 * 1024
MIN_AUTO_VOCAB, MAX_AUTO_VOCAB = 512, 16384
MIN_VOCAB = 300  # 256 byte pieces and 4 special ids come first
BOUNDARIES = ("prefix", "none")  # the word boundary at the start of a text (module docstring)
# sentencepiece reads this character in text as a space; it is encoded as its UTF-8 bytes
META = "\u2581"


def auto_vocab_size(n_words: int) -> int:
    """A vocabulary size suited to a corpus of ``n_words`` words: a power of two near 6·√words.

    About 8k for 2M words and 16k (the cap) from about 5M words on, the sizes small BabyLM
    models use.
    """
    target = 6.0 * math.sqrt(max(n_words, 1))
    return int(min(MAX_AUTO_VOCAB, max(MIN_AUTO_VOCAB, 2 ** round(math.log2(target)))))


def split_long_line(line: str, max_bytes: int = MAX_PIECE_BYTES) -> Iterator[str]:
    """Split ``line`` into pieces of at most ``max_bytes`` UTF-8 bytes, at spaces where possible.

    Joining the pieces with single spaces gives ``line`` back when it was split at spaces; a run
    of text without spaces longer than ``max_bytes`` is cut between characters.
    """
    if len(line.encode("utf-8")) <= max_bytes:
        if line:
            yield line
        return
    piece: list[str] = []
    size = 0
    for word in line.split(" "):
        wbytes = len(word.encode("utf-8"))
        if wbytes > max_bytes:  # a giant "word": flush, then cut it by characters
            if piece:
                yield " ".join(piece)
                piece, size = [], 0
            chunk: list[str] = []
            csize = 0
            for ch in word:
                cb = len(ch.encode("utf-8"))
                if csize + cb > max_bytes:
                    yield "".join(chunk)
                    chunk, csize = [], 0
                chunk.append(ch)
                csize += cb
            if chunk:
                piece, size = ["".join(chunk)], csize
            continue
        extra = wbytes + (1 if piece else 0)
        if size + extra > max_bytes:
            yield " ".join(piece)
            piece, size = [word], wbytes
        else:
            piece.append(word)
            size += extra
    if piece:
        yield " ".join(piece)


# a space after a non-space: no sentencepiece piece spans it (see cut_for_encoding)
_CUT = re.compile(r"(?<=[^ ]) ")


def cut_for_encoding(text: str, max_chars: int) -> Iterator[str]:
    """``text`` in consecutive pieces to encode one at a time, each of at least ``max_chars``
    characters (but the last), cut just before a space that follows a non-space.

    The pieces join back to ``text``, and encoding them one by one gives the ids of the whole
    text, concatenated: every piece but the first begins with a space, so no word boundary is
    added to it, and no piece of minidml's vocabulary spans such a cut (sentencepiece keeps
    ``▁`` only at the start of a piece, or in pieces of nothing but ``▁``, unless trained
    with ``split_by_whitespace`` off, which minidml never does). That holds exactly for a BPE
    model. For a unigram model it holds but for near-ties: sentencepiece sums piece scores
    along the whole text in float32, so where two segmentations of a word score within the
    rounding error of that running sum (which grows with the text), a long text and its
    pieces can pick different ones (in 3.7 MB of Simple Wikipedia as one line, cut into
    pieces of 1,000 characters to 1 MiB: about 70 of 1.2 million tokens). Text without such
    a space over ``max_chars`` characters long is not cut.
    """
    start = 0
    while len(text) - start > max_chars:
        cut = _CUT.search(text, start + max(1, max_chars))
        if cut is None:
            break
        yield text[start:cut.start()]
        start = cut.start()
    yield text[start:]


def sample_pieces(lines: Iterable[str], size: int, seed: int) -> tuple[list[str], int]:
    """Reservoir-sample at most ``size`` training pieces from ``lines``; also count the words.

    Memory is bounded by ``size`` pieces of at most ``MAX_PIECE_BYTES`` bytes each; of runs
    without spaces longer than ``LONG_RUN`` characters, only the first
    ``LONG_RUN_SAMPLE_BYTES`` are taken (they would make training take minutes).
    """
    rng = random.Random(seed)
    reservoir: list[str] = []
    seen = words = long_runs = 0
    for line in lines:
        line = line.rstrip("\r\n")
        words += len(line.split())
        for piece in split_long_line(line):
            if not piece.strip():
                continue
            if len(piece) > LONG_RUN and " " not in piece:  # see LONG_RUN_SAMPLE_BYTES
                long_runs += len(piece)
                if long_runs > LONG_RUN_SAMPLE_BYTES:
                    continue
            if len(reservoir) < size:
                reservoir.append(piece)
            else:
                k = rng.randrange(seen + 1)
                if k < size:
                    reservoir[k] = piece
            seen += 1
    return reservoir, words


class Tokenizer:
    """Sentencepiece model with fixed special ids: pad 0, unk 1, bos 2, eos 3."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes, source: str = "tokenizer model"):
        """The tokenizer of a sentencepiece model's bytes; ``source`` names them in errors
        (:meth:`load` gives the file)."""
        self._proto = bytes(model_proto)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        except RuntimeError:
            raise MinidmlError(f"{source}: not a sentencepiece model; retrain the run's "
                               "tokenizer") from None
        if (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id()) != (
            PAD_ID, UNK_ID, BOS_ID, EOS_ID,
        ):
            raise MinidmlError(f"{source}: special ids must be pad=0 unk=1 bos=2 eos=3; "
                               "train it with minidml")
        #: ``"prefix"`` (a text's first word is encoded as in running text) or ``"none"``
        self.boundary = "prefix" if has_dummy_prefix(self._proto) else "none"
        # encoding goes through a copy without the dummy prefix: the boundary is added here,
        # only where the text does not already begin with a space (see the module docstring)
        try:
            self._bare = self._sp if self.boundary == "none" else spm.SentencePieceProcessor(
                model_proto=with_dummy_prefix(self._proto, False))
        except ValueError as e:  # e.g. no normalizer spec: not a model minidml trained
            raise MinidmlError(f"{source}: a sentencepiece model minidml cannot use ({e}); "
                               "train it with minidml") from None
        self._unigram = model_type(self._proto) == "unigram"

    # ---------------------------------------------------------------- construction
    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        vocab_size: int | None = None,
        model_type: str = "unigram",
        seed: int = 0,
        input_sentence_size: int = 300_000,
        num_threads: int | None = None,
        boundary: str = "prefix",
    ) -> Tokenizer:
        """Train on an iterable of text lines (e.g. :func:`minidml.data.read_lines`).

        ``vocab_size=None`` picks :func:`auto_vocab_size` of the corpus's word count, capped
        at what the corpus supports and raised to what its characters need (each character
        is a piece). An explicit size the corpus cannot support is an error that suggests a
        size that works. ``boundary``: ``"prefix"`` (a text's first word is encoded as in
        running text) or ``"none"`` (see the module docstring).
        """
        if model_type not in ("unigram", "bpe"):
            raise MinidmlError(f"--tokenizer-type {model_type!r}: choose unigram or bpe")
        if boundary not in BOUNDARIES:
            raise MinidmlError(f"--tokenizer-boundary {boundary!r}: choose prefix or none")
        if vocab_size is not None and vocab_size < MIN_VOCAB:
            raise MinidmlError(f"--vocab-size {vocab_size}: must be at least {MIN_VOCAB} "
                               "(256 byte pieces and 4 special ids come first)")
        pieces, words = sample_pieces(lines, input_sentence_size, seed)
        if not pieces:
            raise MinidmlError("corpus: no text to train the tokenizer on; give a non-empty corpus")
        if boundary == "prefix":  # train on the texts as they will be encoded
            pieces = [_with_boundary(p) for p in pieces]
        size = vocab_size or auto_vocab_size(words)

        def train(size: int) -> Tokenizer:
            proto = _train_proto(pieces, size, model_type, seed, num_threads)
            return cls(with_dummy_prefix(proto, True) if boundary == "prefix" else proto)

        tried: set[int] = set()
        while True:
            try:
                return train(size)
            except RuntimeError as e:
                error = str(e)
            tried.add(size)
            most = _number(r"value <= (\d+)", error)  # the most pieces the corpus supports
            need = _number(r"required_chars\. \d+ vs (\d+)", error)  # what its characters need
            enough = None if need is None else need + 64  # and room for longer pieces
            fits = most if most is not None else enough
            if vocab_size is not None or fits is None or fits in tried:
                break
            size = fits  # an automatic size becomes what this corpus needs or supports
        if vocab_size is None:
            raise MinidmlError(f"tokenizer training failed at the automatic vocabulary size "
                               f"{size}: {one_line(error)}; give --vocab-size")
        if most is not None and most < MIN_VOCAB:  # below the smallest size we accept
            raise MinidmlError(
                f"--vocab-size {vocab_size}: too large for this corpus, which supports only "
                f"{most}; give a larger corpus or leave --vocab-size out")
        if most is not None:
            raise MinidmlError(f"--vocab-size {vocab_size}: too large for this corpus; "
                               f"use --vocab-size {most} or less")
        if need is not None:
            raise MinidmlError(
                f"--vocab-size {vocab_size}: too small for the {need} characters and special "
                f"pieces of this corpus; use --vocab-size {enough} or more")
        raise MinidmlError(f"tokenizer training failed: {one_line(error)}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise MinidmlError(f"{path}: cannot read tokenizer model ({e.strerror})") from None
        return cls(data, source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        _io.write_bytes(path, self._proto)

    def to_bytes(self) -> bytes:
        return self._proto

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._proto).hexdigest()

    # ---------------------------------------------------------------- use
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of one string, optionally with BOS before and EOS after."""
        if META in text:
            return self._encode_meta(text, bos, eos)
        return self._bare.encode(self._marked(text), add_bos=bos, add_eos=eos)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False,
                     num_threads: int = -1) -> list[list[int]]:
        """Token ids of many strings at once (sentencepiece's multithreaded batch encoder)."""
        texts = list(texts)
        out = self._bare.encode([self._marked(t) for t in texts], add_bos=bos, add_eos=eos,
                                num_threads=num_threads)
        for i, text in enumerate(texts):
            if META in text:
                out[i] = self._encode_meta(text, bos, eos)
        return out

    def _marked(self, text: str) -> str:
        """The text as the bare model encodes it: with the word boundary where it applies."""
        return _with_boundary(text) if self.boundary == "prefix" else text

    def _encode_meta(self, text: str, bos: bool, eos: bool) -> list[int]:
        """Ids of a text holding ``META``, each ``META`` as its byte pieces, so it decodes back
        (the word boundary, where it applies, comes first, as for any text)."""
        meta = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in META.encode("utf-8")]
        ids = [BOS_ID] if bos else []
        for k, part in enumerate(text.split(META)):
            if k == 0 and self.boundary == "prefix" and not part.startswith(" "):
                part = " " + part  # the text begins here, even when it begins with META
            ids += (meta if k else []) + self._bare.encode(part)
        return ids + ([EOS_ID] if eos else [])

    def encode_with_spans(self, texts: Sequence[str]
                          ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Per text, its ids with BOS in front (as the exported tokenizer encodes a text) and
        each token's character span ``(start, end)`` in the text, as the Hugging Face
        tokenizer's offsets give them: BOS is ``(0, 0)``; the word boundary belongs to the
        first character; a character's byte pieces each have the character's span, and in a
        unigram model (which spells a run of unknown characters as one unknown, then its
        bytes) the whole run's."""
        texts = list(texts)
        return [([BOS_ID, *ids], [(0, 0), *self._spans(text, ids)])
                for text, ids in zip(texts, self.encode_batch(texts), strict=True)]

    def _spans(self, text: str, ids: Sequence[int]) -> list[tuple[int, int]]:
        # the characters the pieces spell (a space or the boundary as META), with their spans
        chars = [(META, (0, 1))] if self._marked(text) != text else []
        chars += [(META if c == " " else c, (j, j + 1)) for j, c in enumerate(text)]
        spans, k, pending = [], 0, 0
        for i in ids:
            if self._sp.is_byte(int(i)):
                if pending == 0:  # the first byte of a character
                    pending = len(chars[k][0].encode("utf-8"))
                spans.append(chars[k][1])
                pending -= 1
                if pending == 0:
                    k += 1
                continue
            n = len(self._sp.id_to_piece(int(i)))
            spans.append((chars[k][1][0], chars[k + n - 1][1][1]))
            k += n
        if self._unigram:
            run = 0
            for j in range(len(ids) + 1):
                if j < len(ids) and self._sp.is_byte(int(ids[j])):
                    continue
                if j > run + 1:  # bytes at run .. j-1
                    whole = (spans[run][0], spans[j - 1][1])
                    spans[run:j] = [whole] * (j - run)
                run = j + 1
        return spans

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special ids (pad, bos, eos) are dropped, and so is the word
        boundary in front of the first piece."""
        return self._sp.decode([int(i) for i in ids if i > UNK_ID and i != EOS_ID])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, boundary={self.boundary!r}, "
                f"sha256={self.sha256[:12]})")


def _number(pattern: str, text: str) -> int | None:
    """The integer that ``pattern``'s group captures in ``text``, if it matches."""
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def _with_boundary(text: str) -> str:
    """``text`` with one space in front unless it is empty or already begins with a space."""
    return text if not text or text.startswith(" ") else " " + text


def _train_proto(pieces: list[str], vocab_size: int, model_type: str, seed: int,
                 num_threads: int | None) -> bytes:
    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(pieces),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=0.9995,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentence_length=4 * MAX_PIECE_BYTES,
        input_sentence_size=0,  # sampling is done (reproducibly) by sample_pieces
        shuffle_input_sentence=False,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        num_threads=num_threads or max(1, os.cpu_count() or 1),
        minloglevel=2,
    )
    return out.getvalue()
