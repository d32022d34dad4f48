"""From corpus files to batches: reading, streaming tokenisation, the validation split.

* :func:`corpus_files` expands paths (text, ``.gz``, ``.xz``, or directories of them).
* :func:`read_lines` streams text lines, telling compressed from plain files by their magic
  bytes, and stops at the first binary or invalid UTF-8 input with a one-line error.
* :func:`tokenize_corpus` encodes the corpus in bounded-size chunks into a flat token file
  (``uint16`` when the vocabulary fits), cached by the corpus's bytes and the tokenizer, and
  returns it memory-mapped. Every document (a non-blank line, or each of its sentences:
  :mod:`minidml.documents`) becomes ``BOS tokens EOS``.
* :class:`Batches` splits the token stream into contiguous blocks, holds a seeded subset of
  them out for validation, and draws training windows as a pure function of ``(seed, index)``,
  so sampling is reproducible and resumes from a saved index.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from queue import Empty, Full, Queue
from typing import IO, Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from . import _io
from .documents import SPLITTER_VERSION, documents
from .errors import MinidmlError
from .tokenizer import Tokenizer, cut_for_encoding

T = TypeVar("T")
FORMAT_VERSION = 2  # 2: documents over CHUNK_BYTES encoded in pieces (cut_for_encoding)
SAMPLINGS = ("epochs", "uniform")
CHUNK_BYTES = 1 << 20  # text encoded per call: bounds memory on corpora with huge lines
MIN_TOKENS = 4 * 2  # the fewest any run trains on: 4 windows of context+1 tokens at context 1
_MAGIC: dict[bytes, Callable[[IO[bytes]], io.BufferedIOBase]] = {
    b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f), b"\xfd7zXZ\x00": lzma.LZMAFile,
    # bzip2: "BZh", the block size, then the first block's magic (or the end-of-stream
    # magic when empty); "BZh" alone is text that a plain file may well start with
    **{b"BZh%d%s" % (n, m): bz2.BZ2File for n in range(1, 10)
       for m in (b"1AY&SY", b"\x17rE8P\x90")}}


# --------------------------------------------------------------------------- reading
def corpus_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files named by ``paths``; directories contribute their non-hidden files, sorted."""
    if not paths:
        raise MinidmlError("corpus: no path given; name a text file, .gz/.xz file or directory")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise MinidmlError(f"{p}: directory holds no text files; "
                                   "add .txt, .gz or .xz files to it")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise MinidmlError(f"{p}: not a regular file; give a text file or a directory")
        else:
            raise MinidmlError(f"{p}: no such file or directory; check the corpus path")
    return files


class _Hashing(io.RawIOBase):
    """A file read through this adds every byte it hands out to ``digest``, in order; its
    ``tell`` counts them (what progress measures)."""

    def __init__(self, raw: io.BufferedIOBase, digest: Any):
        self.raw, self.digest, self.count = raw, digest, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
            self.count += n
        return n

    def tell(self) -> int:
        return self.count

    def drain(self) -> None:
        """Read (and hash) what the decoder left of the file."""
        buffer = bytearray(1 << 20)
        while self.readinto(buffer):
            pass

    def close(self) -> None:
        self.raw.close()
        super().close()


def _open_binary(path: Path) -> tuple[_Hashing, io.BufferedIOBase]:
    """(the raw file, hashing what is read of it; the decompressed stream)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        raise MinidmlError(f"{path}: cannot read ({e.strerror})") from None
    head = raw.read(10)
    raw.seek(0)
    hashed = _Hashing(raw, hashlib.sha256())
    buffered = io.BufferedReader(hashed, 1 << 16)
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return hashed, opener(buffered)
    return hashed, buffered


def read_lines(files: Sequence[Path], encoding_errors: str = "strict",
               progress: tqdm | None = None, digests: list[bytes] | None = None
               ) -> Iterator[str]:
    """Text lines (without their line ending) of every file in turn.

    A NUL byte marks a binary file; undecodable UTF-8 is an error naming the byte offset
    unless ``encoding_errors`` is ``"replace"`` or ``"ignore"``. ``digests`` receives the
    sha256 of each file's bytes as they were read, once the file is done (what
    :func:`file_digests` gives for a file that did not change meanwhile).
    """
    if encoding_errors not in ("strict", "replace", "ignore"):
        raise MinidmlError(f"--encoding-errors {encoding_errors!r}: choose strict, replace "
                           "or ignore")
    for path in files:
        raw, stream = _open_binary(path)
        size = os.fstat(raw.raw.fileno()).st_size
        offset = 0
        last = 0
        try:
            for line in stream:
                if b"\x00" in line:
                    raise MinidmlError(
                        f"{path}: binary data (NUL byte at offset {offset + line.index(0)}); "
                        "give a UTF-8 text file")
                try:
                    text = line.decode("utf-8", errors=encoding_errors)
                except UnicodeDecodeError as e:
                    raise MinidmlError(
                        f"{path}: invalid UTF-8 at byte offset {offset + e.start}; fix the "
                        "file or pass --encoding-errors replace") from None
                offset += len(line)
                if progress is not None:
                    pos = raw.tell()
                    progress.update(pos - last)
                    last = pos
                yield text.rstrip("\n").removesuffix("\r")
            if digests is not None:
                raw.drain()
                digests.append(raw.digest.digest())
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:  # zlib: a bad .gz body
            try:
                changed = os.stat(path).st_size != size
            except OSError:  # gone meanwhile
                changed = True
            if changed:
                raise MinidmlError(f"{path}: changed while it was being read; nothing was "
                                   "cached; run again once the corpus stays as it is") from None
            raise MinidmlError(f"{path}: damaged or truncated compressed file ({e})") from None
        finally:
            stream.close()
            raw.close()


def file_digests(files: Sequence[Path]) -> list[bytes]:
    """The sha256 of each file's raw bytes."""
    out = []
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out.append(h.digest())
    return out


def fingerprint(files: Sequence[Path], digests: Sequence[bytes] | None = None) -> str:
    """sha256 over the raw bytes of ``files`` in order (names and times do not matter), from
    their ``digests`` if given (:func:`file_digests`)."""
    total = hashlib.sha256()
    for d in digests if digests is not None else file_digests(files):
        total.update(d)
    return total.hexdigest()


# --------------------------------------------------------------------------- tokenising
def count_words(files: Sequence[Path], encoding_errors: str = "strict",
                cache_dir: str | os.PathLike | None = None) -> int:
    """Whitespace-separated words of the corpus ``files``, counted once and cached beside
    the token cache (keyed by the files' fingerprint and the reading options): what BabyLM counts
    (:mod:`minidml.words`). The count is cached under the fingerprint of the bytes it counted,
    so a file that changed meanwhile never lends its count to another content."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def cached(digests: Sequence[bytes] | None) -> Path:
        return cache / f"words-{fingerprint(files, digests)}-{encoding_errors}.json"

    try:
        return int(json.loads(cached(None).read_text(encoding="utf-8"))["words"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    read: list[bytes] = []  # each file's digest as counting read it
    words = sum(len(line.split()) for line in read_lines(files, encoding_errors, None, read))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _io.write_json(cached(read), {"words": words, "files": [str(f) for f in files]})
    except OSError:  # an unwritable cache only costs counting again next time
        pass
    return words


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def default_cache_dir() -> Path:
    """``$MINIDML_CACHE_DIR``, else ``$XDG_CACHE_HOME/minidml``, else ``~/.cache/minidml``."""
    if env := os.environ.get("MINIDML_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minidml"


def _pieces(docs: Iterator[str], max_chars: int) -> Iterator[tuple[str, bool, bool]]:
    """``(text, first, last)``: each document whole (first and last), or when longer than
    ``max_chars`` in the pieces of :func:`~minidml.tokenizer.cut_for_encoding`."""
    for doc in docs:
        if len(doc) <= max_chars:  # (the common case, without a generator's cost)
            yield doc, True, True
            continue
        pieces = cut_for_encoding(doc, max_chars)
        piece, first = next(pieces), True
        for following in pieces:
            yield piece, first, False
            piece, first = following, False
        yield piece, first, True


def _chunks(pieces: Iterator[tuple[str, bool, bool]], chunk_bytes: int
            ) -> Iterator[list[tuple[str, bool, bool]]]:
    chunk: list[tuple[str, bool, bool]] = []
    size = 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece[0])
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encode(tokenizer: Tokenizer, chunk: list[tuple[str, bool, bool]]) -> list[list[int]]:
    """The ids of a chunk's pieces: ``BOS`` before a document's first piece, ``EOS`` after its
    last."""
    ids = tokenizer.encode_batch([text for text, _, _ in chunk], bos=True, eos=True)
    for k, (_, first, last) in enumerate(chunk):
        if not (first and last):  # a piece of a longer document
            ids[k] = ids[k][0 if first else 1:None if last else -1]
    return ids


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    Reading and decompressing the next chunk then overlaps with encoding this one. An
    exception in the producer is raised here, in the consumer; a consumer that stops early
    (or fails) stops the producer.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((done, None))
        except BaseException as e:  # handed over to the consumer
            queue.put((done, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator: release its files now
                close()

    worker = threading.Thread(target=produce, name="minidml-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(Empty):
            while True:  # unblock a producer waiting on a full queue
                queue.get_nowait()
        worker.join()


def _token_bytes(ids: list[list[int]], dtype: np.dtype) -> bytes:
    """The concatenation of the id lists as ``dtype`` bytes (one conversion per chunk)."""
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype,
                       count=sum(map(len, ids))).tobytes()


def tokenize_corpus(
    files: Sequence[Path],
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike | None = None,
    encoding_errors: str = "strict",
    progress: bool = False,
    rule: str = "line",
    speaker_tags: str = "keep",
) -> np.memmap:
    """Token ids of the whole corpus as a read-only memory map, computed once and cached.

    Every document (:func:`minidml.documents.documents` under ``rule`` and
    ``speaker_tags``: a non-blank line, or each of its sentences and utterances) becomes
    ``BOS tokens EOS``. The cache key is the corpus's bytes, the tokenizer, the reading
    options and the splitting rule, so a second call with the same inputs opens the existing
    file. Memory use is bounded by ``CHUNK_BYTES`` of text being encoded (beyond the line being
    read), whatever the corpus size: a longer document is encoded in pieces cut before spaces
    (:func:`~minidml.tokenizer.cut_for_encoding`, which says when the ids are those of the
    whole document); only text over ``CHUNK_BYTES`` characters long without a space is
    encoded whole. A corpus of no text, or of too few tokens to train on whatever the context
    (:func:`check_enough_tokens`), is an error that names it.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dtype = token_dtype(tokenizer.vocab_size)
    split = "" if rule == "line" else f"|{rule}:{speaker_tags}:{SPLITTER_VERSION}"
    expected = file_digests(files)
    key = hashlib.sha256(
        f"{FORMAT_VERSION}|{tokenizer.sha256}|{encoding_errors}|{fingerprint(files, expected)}"
        f"{split}".encode()).hexdigest()[:32]
    path = cache / f"tokens-{key}.{dtype.name}"
    if not path.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinidmlError(f"{cache}: cannot create the token cache ({e.strerror}); "
                               "set MINIDML_CACHE_DIR to a writable directory") from None
        _io.remove_orphans(cache)  # what killed tokenisations left behind
        total = sum(f.stat().st_size for f in files)
        read: list[bytes] = []  # each file's digest as tokenising read it
        with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing",
                  disable=not progress, leave=False) as bar, _io.atomic_open(path) as out:
            docs = documents(read_lines(files, encoding_errors, bar, read), rule, speaker_tags)
            for chunk in prefetch(_chunks(_pieces(docs, CHUNK_BYTES), CHUNK_BYTES)):
                try:
                    out.write(_token_bytes(_encode(tokenizer, chunk), dtype))
                except OSError as e:  # a full disk, say: nothing is cached (atomic_open)
                    raise MinidmlError(f"{cache}: cannot write the token cache "
                                       f"({e.strerror or e}); free space there or set "
                                       "MINIDML_CACHE_DIR to another directory") from None
            # the key must name what was read: a file that changed meanwhile caches nothing
            changed = next((f for f, a, b in zip(files, expected, read, strict=False)
                            if a != b), files[len(read)] if len(read) < len(files) else None)
            if changed is not None:
                raise MinidmlError(f"{changed}: changed while it was being read; nothing was "
                                   "cached; run again once the corpus stays as it is")
    corpus = f"corpus {', '.join(map(str, files))}"
    if path.stat().st_size == 0:
        with contextlib.suppress(OSError):
            path.unlink()
        raise MinidmlError(f"{corpus}: contains no text; give a non-empty corpus")
    tokens = np.memmap(path, dtype=dtype, mode="r")
    check_enough_tokens(len(tokens), corpus)
    return tokens


def check_enough_tokens(n: int, corpus: str = "the corpus") -> None:
    """Refuses a corpus of ``n`` tokens too small to train on whatever the context: fewer than
    ``MIN_TOKENS``, the 4 windows of 2 tokens that :class:`Batches` needs at ``context=1``."""
    if n < MIN_TOKENS:
        raise MinidmlError(f"{corpus}: only {n} tokens, too few to train on with any --context "
                           f"(at least {MIN_TOKENS} are needed); give a larger corpus")


# --------------------------------------------------------------------------- batches
class _Windows:
    """Uniform sampling of windows of ``context + 1`` tokens inside a set of blocks."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, context: int):
        self.starts = starts
        self.cum = np.cumsum(ends - starts - context)  # valid window starts, cumulated per block
        self.n_tokens = int((ends - starts).sum())

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.integers(0, self.cum[-1], size=n)
        block = np.searchsorted(self.cum, u, side="right")
        before = np.where(block > 0, self.cum[block - 1], 0)
        return self.starts[block] + (u - before)


class _Epochs:
    """Epochs of non-overlapping windows of ``context + 1`` tokens inside a set of blocks.

    A block of L tokens holds m = (L − 1) // context windows, at a stride of ``context``
    from an offset that each epoch draws afresh (up to the block's slack, L − 1 − m·context,
    so that windows' cuts move between epochs); each epoch visits every window once, in a
    seeded permutation of its own. Window number g of the run lies in epoch g // n_windows.
    """

    def __init__(self, starts: np.ndarray, ends: np.ndarray, context: int, seed: int):
        per_block = (ends - starts - 1) // context
        block = np.repeat(np.arange(len(starts)), per_block)
        first = np.repeat(np.cumsum(per_block) - per_block, per_block)
        self.base = starts[block] + (np.arange(len(block)) - first) * context
        self.slack = (ends - starts - 1 - per_block * context)[block]
        self.n_windows = len(self.base)
        self.context, self.seed = context, seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, 3, epoch])
            offset = rng.integers(0, self.context) % (self.slack + 1)
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = (rng.permutation(self.n_windows), offset)
        return self._cache[epoch]

    def starts(self, first: int, n: int) -> np.ndarray:
        """Starts of the run's windows number ``first`` … ``first + n − 1``."""
        g = np.arange(first, first + n)
        out = np.empty(n, dtype=np.int64)
        epochs = g // self.n_windows
        for e in np.unique(epochs):
            perm, offset = self._epoch(int(e))
            w = perm[g[epochs == e] % self.n_windows]
            out[epochs == e] = self.base[w] + offset[w]
        return out


class Batches:
    """Training, validation and held-out windows of ``context + 1`` tokens over one stream.

    The stream is cut into contiguous blocks. A seeded permutation of the blocks gives the
    validation split (``val_fraction``, for reporting), the held-out split (``holdout_fraction``,
    for the outer loop of bi-level optimisation) and the training split (the rest); no window
    crosses a block boundary, so no validation or held-out token is ever trained on.

    ``sampling`` chooses the training windows: ``epochs`` (each epoch a seeded permutation of
    the training split's non-overlapping windows, at an offset drawn per epoch: every token
    once per epoch) or ``uniform`` (windows at uniformly random positions, with replacement).
    Either way :meth:`train` computes batch ``index`` from ``(seed, index)`` alone: any batch
    can be re-drawn, which is what makes resumption exact.
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, *,
                 val_fraction: float = 0.02, holdout_fraction: float = 0.01, seed: int = 0,
                 block_tokens: int | None = None, sampling: str = "epochs",
                 words: int | None = None):
        if context < 1 or batch_size < 1:
            raise MinidmlError("--context and --batch-size must be positive")
        if sampling not in SAMPLINGS:
            raise MinidmlError(f"--sampling {sampling!r}: choose one of {', '.join(SAMPLINGS)}")
        if not 0 < val_fraction < 1:
            raise MinidmlError(f"--val-fraction {val_fraction}: must be between 0 and 1")
        if not 0 < holdout_fraction < 1:
            raise MinidmlError(f"holdout fraction {holdout_fraction}: must be between 0 and 1")
        n, window = len(tokens), context + 1
        check_enough_tokens(n)
        if n < 4 * window:
            raise MinidmlError(
                f"--context {context}: the corpus has only {n} tokens, fewer than 4 windows of "
                f"context+1; use --context {max(1, n // 4 - 1)} or less, or a larger corpus")
        block = block_tokens or min(32 * window, max(window, n // 64))
        if block < window:
            raise MinidmlError(f"block of {block} tokens is shorter than context+1 = {window}")
        starts = np.arange(0, n - block + 1, block)
        ends = np.append(starts[1:], n)  # the last block takes the remainder
        n_val = max(1, round(len(starts) * val_fraction))
        n_hold = max(1, round(len(starts) * holdout_fraction))
        if len(starts) - n_val - n_hold < 1:
            raise MinidmlError(f"--context {context}: too long to split this corpus into "
                               "training, validation and held-out parts; use a shorter context")
        order = np.random.default_rng([seed, 0x5EED]).permutation(len(starts))
        split = np.zeros(len(starts), dtype=np.int8)  # 0 train, 1 validation, 2 held out
        split[order[:n_val]] = 1
        split[order[n_val:n_val + n_hold]] = 2
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.corpus_words = words  # the corpus's words (count_words), if known
        self.val_blocks = list(zip(starts[split == 1].tolist(), ends[split == 1].tolist(),
                                   strict=True))
        self._train = _Windows(starts[split == 0], ends[split == 0], context)
        self._epochs = _Epochs(starts[split == 0], ends[split == 0], context, seed)
        self._holdout = _Windows(starts[split == 2], ends[split == 2], context)
        self.sampling = sampling
        self.n_train_tokens = self._train.n_tokens
        self.n_holdout_tokens = self._holdout.n_tokens
        self.n_val_tokens = n - self.n_train_tokens - self.n_holdout_tokens

    def _windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + np.arange(self.context + 1)
        w = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))
        return w[:, :-1], w[:, 1:]

    @property
    def epoch_tokens(self) -> int:
        """Tokens of one epoch: the training windows' (``epochs``), or the training split's."""
        if self.sampling == "epochs":
            return self._epochs.n_windows * self.context
        return self.n_train_tokens

    def train(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch number ``index``: inputs and next-token targets, each [B, context]."""
        if self.sampling == "epochs":
            return self._windows(self._epochs.starts(index * self.batch_size, self.batch_size))
        return self._windows(self._train.draw(np.random.default_rng([self.seed, 1, index]),
                                              self.batch_size))

    def holdout(self, index: int, batch_size: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out batch number ``index`` (for the outer loop; never trained on)."""
        return self._windows(self._holdout.draw(np.random.default_rng([self.seed, 2, index]),
                                                batch_size or self.batch_size))

    def validation(self, max_tokens: int | None = None
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation split as batches of non-overlapping windows, in a fixed order.

        With ``max_tokens``, about that many tokens' windows, evenly spaced over the whole
        split (not its first windows, which all lie in the corpus's first files: a corpus
        of several sources would be judged on one of them)."""
        window = self.context + 1
        starts = np.concatenate([np.arange(s, e - window + 1, self.context)
                                 for s, e in self.val_blocks])
        if max_tokens is not None:
            k = min(len(starts), max(1, max_tokens // self.context))
            starts = starts[np.unique(np.linspace(0, len(starts) - 1, k).round().astype(int))]
        for i in range(0, len(starts), self.batch_size):
            yield self._windows(starts[i:i + self.batch_size])


def unigram_entropy(tokens: np.ndarray, chunk: int = 1 << 24) -> float:
    """Entropy (nats/token) of the token frequencies: the loss of a model that knows only how
    often each token occurs, the first yardstick a language model must beat. Counted in
    chunks, so a memory-mapped token file is never loaded whole."""
    counts = np.zeros(1, dtype=np.int64)
    for i in range(0, len(tokens), chunk):
        c = np.bincount(np.asarray(tokens[i:i + chunk], dtype=np.int64))
        counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
        counts[:len(c)] += c
    p = counts[counts > 0] / max(1, counts.sum())
    return float(-(p * np.log(p)).sum())
