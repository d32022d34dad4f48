"""Corpus reading, streaming tokenisation with its cache, and the train/validation batches."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import json
import lzma
import os
import random
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minidml import _io, data
from minidml.data import (
    Batches,
    corpus_files,
    default_cache_dir,
    fingerprint,
    read_lines,
    token_dtype,
    tokenize_corpus,
)
from minidml.errors import MinidmlError
from minidml.tokenizer import BOS_ID, EOS_ID, Tokenizer

from _helpers import assert_one_line_error, run_cli

COMPRESS = {"plain": lambda b: b, "gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}
SOME = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "café", "日本語", "😀", "ran", "home", "dog"]
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "pe"]
    lines = [" ".join(rng.choice(words) if rng.random() < 0.5 else
                      "".join(rng.choices(syllables, k=rng.randint(1, 3)))
                      for _ in range(rng.randint(2, 10))) for _ in range(1000)]
    return Tokenizer.train(lines, vocab_size=400, num_threads=1)


def write(path: Path, payload: bytes, kind: str = "plain") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(COMPRESS[kind](payload))
    return path


def reference_lines(payload: bytes) -> list[str]:
    """Lines split at b"\\n" only, one trailing "\\r" removed, no phantom line after a final
    newline (str.splitlines would also split at \\x85, \\u2028, \\x0c ...)."""
    text = payload.decode("utf-8")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ----------------------------------------------------------------------------- corpus_files
def test_corpus_files_expands_directories_sorted_skipping_hidden(tmp_path):
    root = tmp_path / "corpus"
    for name in ["b.txt", "a.txt", "c.gz", ".hidden.txt", ".git/config", "sub/d.txt",
                 "sub/.e.txt", ".cache/f.txt"]:
        write(root / name, b"x\n")
    assert corpus_files([root]) == [root / "a.txt", root / "b.txt", root / "c.gz",
                                    root / "sub" / "d.txt"]
    single = write(tmp_path / "z.txt", b"z\n")
    # files and directories in the order given; a file is taken even if its name is hidden
    hidden = write(tmp_path / ".h.txt", b"h\n")
    assert corpus_files([single, str(root / "sub"), hidden]) == [
        single, root / "sub" / "d.txt", hidden]


def test_corpus_files_errors(tmp_path):
    with pytest.raises(MinidmlError, match="no path given"):
        corpus_files([])
    with pytest.raises(MinidmlError, match="no such file"):
        corpus_files([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinidmlError, match="holds no text files"):
        corpus_files([tmp_path / "empty"])
    write(tmp_path / "only-hidden" / ".x.txt", b"x\n")
    with pytest.raises(MinidmlError, match="only-hidden.*holds no text files"):
        corpus_files([tmp_path / "only-hidden"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(MinidmlError, match="not a regular file"):
        corpus_files([fifo])


# ----------------------------------------------------------------------------- read_lines
LINE = st.text(st.one_of(st.characters(codec="utf-8", exclude_characters="\n\x00"),
                         st.sampled_from(["\r", "\u2028", "\x85", "\x0c", "\x0b", "é", "日"])),
               max_size=20)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@SOME
@given(lines=st.lists(LINE, max_size=8), crlf=st.booleans(), final_newline=st.booleans(),
       kind=st.sampled_from(sorted(COMPRESS)))
def test_read_lines_matches_reference(scratch, lines, crlf, final_newline, kind):
    end = "\r\n" if crlf else "\n"
    text = end.join(lines) + (end if final_newline and lines else "")
    payload = text.encode()
    path = write(scratch / "corpus", payload, kind)
    assert list(read_lines([path])) == reference_lines(payload)


def test_read_lines_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path / "a.txt", b"one\r\n\r\ntwo\rstill two\r\n  \nlast")
    assert list(read_lines([path])) == ["one", "", "two\rstill two", "  ", "last"]


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_compression_is_detected_by_magic_bytes_not_extension(tmp_path, kind):
    payload = "héllo\nwörld\n日本語\n".encode()
    for name in ["corpus.txt", "corpus.gz", "corpus.xz", "corpus.bz2", "corpus"]:
        path = write(tmp_path / name, payload, kind)
        assert list(read_lines([path])) == ["héllo", "wörld", "日本語"], (name, kind)


@pytest.mark.parametrize("start", [b"BZh", b"BZh9", b"BZh91AY", b"\x1f", b"\xfd7zXZ"])
def test_text_that_starts_like_a_magic_number_is_text(tmp_path, start):
    payload = start + b" is how this line starts\nsecond\n"
    if not start.isascii():
        with pytest.raises(MinidmlError):  # not UTF-8 text either: an error, not garbage
            list(read_lines([write(tmp_path / "a.txt", payload)]))
        return
    assert list(read_lines([write(tmp_path / "a.txt", payload)])) == reference_lines(payload)


def test_read_lines_reads_files_in_turn(tmp_path):
    a = write(tmp_path / "a.txt", b"a1\na2")  # no final newline: still its own line
    b = write(tmp_path / "b.gz", b"b1\n", "gz")
    c = write(tmp_path / "c.txt", b"")
    d = write(tmp_path / "d.xz", b"d1\r\n\n", "xz")
    assert list(read_lines([a, b, c, d])) == ["a1", "a2", "b1", "d1", ""]


@pytest.mark.parametrize("kind", ["plain", "gz"])
def test_nul_byte_is_binary_with_its_offset(tmp_path, kind):
    payload = "first line\nsécond\nthird\x00line\n".encode()
    path = write(tmp_path / "bin.dat", payload, kind)
    with pytest.raises(MinidmlError, match=f"binary data \\(NUL byte at offset "
                                           f"{payload.index(0)}\\)"):
        list(read_lines([path]))


@pytest.mark.parametrize("payload", [
    "ok\nsécond\n".encode() + b"bad \xff byte\nmore\n",
    b"\xc3\n",  # a truncated two-byte sequence
    "ünïcode\n".encode() * 50 + b"x" * 1000 + b"\xe6\x97\n",
    b"\xed\xa0\x80\n",  # an encoded surrogate is not UTF-8
])
def test_invalid_utf8_names_the_byte_offset(tmp_path, payload):
    with pytest.raises(UnicodeDecodeError) as ref:
        payload.decode("utf-8")
    path = write(tmp_path / "bad.txt", payload)
    with pytest.raises(MinidmlError, match=f"invalid UTF-8 at byte offset {ref.value.start};"):
        list(read_lines([path]))


def test_encoding_errors_replace_and_ignore(tmp_path):
    payload = b"caf\xe9 au lait\nok\n"
    path = write(tmp_path / "latin1.txt", payload)
    assert list(read_lines([path], encoding_errors="replace")) == ["caf\ufffd au lait", "ok"]
    assert list(read_lines([path], encoding_errors="ignore")) == ["caf au lait", "ok"]
    with pytest.raises(MinidmlError, match="strict, replace or ignore"):
        list(read_lines([path], encoding_errors="backslashreplace"))


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2"])
def test_truncated_compressed_file_is_an_error(tmp_path, kind):
    payload = os.urandom(20_000).hex().encode() + b"\n"
    blob = COMPRESS[kind](payload)
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MinidmlError, match="damaged or truncated"):
        list(read_lines([path]))


def test_gzip_with_a_bad_checksum_is_an_error(tmp_path):
    blob = bytearray(gzip.compress(b"hello world\n" * 100))
    blob[-8] ^= 0xFF  # the CRC32 in the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(MinidmlError, match="damaged or truncated"):
        list(read_lines([path]))


def damaged(path: Path, kind: str) -> Path:
    """A compressed file at ``path`` whose header is intact and whose compressed data is not
    (for gzip, what zlib itself refuses, with an error that is not an OSError)."""
    rng = random.Random(0)
    payload = "".join(rng.choice("abcdefgh \n") for _ in range(40_000)).encode()
    blob = bytearray(COMPRESS[kind](payload))
    blob[len(blob) // 2] ^= 0xFF
    if kind == "gz":
        with pytest.raises(zlib.error):
            gzip.decompress(bytes(blob))
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize("kind", ["gz", "xz"])
def test_damaged_compressed_body_is_a_one_line_error(tmp_path, kind):
    path = damaged(tmp_path / f"damaged.{kind}", kind)
    with pytest.raises(MinidmlError, match=f"{re.escape(str(path))}: damaged or truncated"):
        list(read_lines([path]))


def test_a_damaged_gzip_corpus_is_one_line_on_the_command_line(tmp_path, capsys):
    path = damaged(tmp_path / "corpus.gz", "gz")
    code, _, err = run_cli("train", path, "--out", tmp_path / "run", "--steps", "2", "--quiet",
                           capsys=capsys)
    assert_one_line_error(code, err, f"{path}: damaged or truncated compressed file")
    assert "internal error" not in err


def test_real_compressed_corpus_matches_manifest(data_dir):
    rel = "babylm-2024-100M-snippets/switchboard.txt.xz"
    path = data_dir / rel
    if not path.is_file():
        pytest.skip(f"{rel} is not in {data_dir}")
    with open(data_dir / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        row = next(r for r in csv.DictReader(f, delimiter="\t") if r["path"] == rel)
    lines = list(read_lines(corpus_files([path])))
    assert len(lines) == int(row["lines"])
    assert sum(len(line.split()) for line in lines) == int(row["words(corpus files only)"])
    assert sum(len(line.encode()) + 1 for line in lines) == int(row["bytes_uncompressed"])
    assert fingerprint([path]) == hashlib.sha256(bytes.fromhex(row["sha256"])).hexdigest()


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_of_bytes_in_order(tmp_path):
    a = write(tmp_path / "a.txt", b"alpha\n")
    b = write(tmp_path / "b.txt", b"beta\n")
    expected = hashlib.sha256(hashlib.sha256(b"alpha\n").digest()
                              + hashlib.sha256(b"beta\n").digest()).hexdigest()
    assert fingerprint([a, b]) == expected
    assert fingerprint([b, a]) != expected
    renamed = tmp_path / "other-name.txt"
    shutil.copy(a, renamed)
    os.utime(renamed, (1, 1))
    assert fingerprint([renamed, b]) == expected  # names and times do not matter
    ab = write(tmp_path / "ab.txt", b"alpha\nbeta\n")
    assert fingerprint([ab]) != expected  # file boundaries do


# ----------------------------------------------------------------------------- tokenising
def test_token_dtype():
    assert token_dtype(400) == np.uint16
    assert token_dtype(1 << 16) == np.uint16  # ids up to 65535
    assert token_dtype((1 << 16) + 1) == np.uint32


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDML_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("MINIDML_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "minidml"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "minidml"


CORPUS_LINES = ["the cat sat on the mat", "", "   ", "\t", "café 日本語 😀 x\u2581y",
                "  leading and trailing  ", "dog ran home", "ж unknown chars ж"]


def corpus(tmp_path: Path) -> list[Path]:
    a = write(tmp_path / "corpus" / "a.txt", ("\r\n".join(CORPUS_LINES) + "\r\n").encode())
    b = write(tmp_path / "corpus" / "b.gz", "\n".join(CORPUS_LINES[::-1]).encode(), "gz")
    return [a, b]


def reference_tokens(tok: Tokenizer, files: list[Path]) -> list[int]:
    out: list[int] = []
    for line in read_lines(files):
        if line.strip():
            out += [BOS_ID, *tok.encode(line), EOS_ID]
    return out


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def test_tokenize_corpus_equals_reference(tok, tmp_path):
    files = corpus(tmp_path)
    tokens = tokenize_corpus(files, tok, cache_dir=tmp_path / "cache")
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == reference_tokens(tok, files)
    assert not tokens.flags.writeable
    assert tokens.tolist().count(BOS_ID) == 2 * sum(bool(s.strip()) for s in CORPUS_LINES)
    (path,) = cache_files(tmp_path / "cache")
    assert path.name.startswith("tokens-") and path.suffix == ".uint16"


def test_tokenize_corpus_chunking_does_not_change_tokens(tok, tmp_path, monkeypatch):
    files = corpus(tmp_path)
    expected = reference_tokens(tok, files)
    monkeypatch.setattr(data, "CHUNK_BYTES", 7)
    assert tokenize_corpus(files, tok, cache_dir=tmp_path / "small-chunks").tolist() == expected


@pytest.fixture(scope="module")
def bpe_tok(tok) -> Tokenizer:
    rng = random.Random(1)
    words = ["the", "cat", "sat", "on", "mat", "café", "日本語", "😀", "ran", "home", "dog"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) for _ in range(1000)]
    return Tokenizer.train(lines, vocab_size=300, model_type="bpe", num_threads=1)


@pytest.mark.parametrize("model", ["unigram", "bpe"])
def test_a_long_line_is_encoded_in_pieces_with_the_ids_of_the_whole(tok, bpe_tok, tmp_path,
                                                                    monkeypatch, model):
    tokenizer = tok if model == "unigram" else bpe_tok
    rng = random.Random(2)
    words = ["the", "cat", "sat", "on", "mat", "café", "日本語", "😀", "kalo", "mine", "x\u2581y"]
    gaps = [" ", " ", " ", "  ", " \t ", "   "]
    long_line = "".join(rng.choice(words) + rng.choice(gaps) for _ in range(3000)).strip()
    lines = ["short line", long_line, "", long_line[:150], "another short line"]
    path = write(tmp_path / "long.txt", "\n".join(lines).encode())
    monkeypatch.setattr(data, "CHUNK_BYTES", 100)
    encoded: list[str] = []  # every text handed to the encoder
    encode_batch = tokenizer.encode_batch

    def spy(texts, *args, **kwargs):
        encoded.extend(texts)
        return encode_batch(texts, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode_batch", spy)
    tokens = tokenize_corpus([path], tokenizer, cache_dir=tmp_path / "cache").tolist()
    assert tokens == reference_tokens(tokenizer, [path])  # the ids of encoding lines whole
    assert len(long_line) > 10_000
    assert max(map(len, encoded)) < 120  # memory: no text encoded at once is much longer
    assert "".join(encoded[1:-3]) == long_line  # the long line's pieces, in order
    assert tokens.count(BOS_ID) == tokens.count(EOS_ID) == 4  # one document each


def test_tokenize_corpus_reuses_its_cache(tok, tmp_path, monkeypatch):
    files = corpus(tmp_path)
    cache = tmp_path / "cache"
    first = np.array(tokenize_corpus(files, tok, cache_dir=cache))
    (path,) = cache_files(cache)
    stat = path.stat()

    def refuse(*args, **kwargs):
        raise AssertionError("the cached token file should have been reused")

    monkeypatch.setattr(tok, "encode_batch", refuse)
    second = tokenize_corpus(files, tok, cache_dir=cache)
    assert np.array_equal(first, second)
    assert cache_files(cache) == [path]
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)


def test_tokenize_corpus_cache_key(tok, tmp_path):
    files = corpus(tmp_path)
    cache = tmp_path / "cache"
    base = tokenize_corpus(files, tok, cache_dir=cache).tolist()
    # one byte of the corpus changed: a new cache file with the new tokens
    payload = bytearray(files[0].read_bytes())
    payload[payload.index(b"cat")] = ord("b")
    files[0].write_bytes(bytes(payload))
    changed = tokenize_corpus(files, tok, cache_dir=cache).tolist()
    assert len(cache_files(cache)) == 2
    assert changed != base and changed == reference_tokens(tok, files)
    # another reading option or another tokenizer: another file too
    tokenize_corpus(files, tok, cache_dir=cache, encoding_errors="replace")
    assert len(cache_files(cache)) == 3
    other = Tokenizer.train(CORPUS_LINES * 50, num_threads=1)
    assert other.sha256 != tok.sha256
    assert tokenize_corpus(files, other, cache_dir=cache).tolist() == reference_tokens(other, files)
    assert len(cache_files(cache)) == 4


def test_tokenize_corpus_default_cache_is_the_env_dir(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDML_CACHE_DIR", str(tmp_path / "env-cache"))
    files = corpus(tmp_path)
    tokens = tokenize_corpus(files, tok)
    (path,) = cache_files(tmp_path / "env-cache")
    assert Path(tokens.filename) == path


@pytest.mark.parametrize("payload", [b"", b"\n\n", b"   \n\t\r\n  "])
def test_empty_corpus_is_an_error(tok, tmp_path, payload):
    path = write(tmp_path / "empty.txt", payload)
    with pytest.raises(MinidmlError, match="contains no text"):
        tokenize_corpus([path], tok, cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []  # no empty token file is left to be reused


def test_failed_tokenization_leaves_no_cache_file(tok, tmp_path, monkeypatch):
    files = corpus(tmp_path)
    cache = tmp_path / "cache"
    with monkeypatch.context() as m:
        m.setattr(tok, "encode_batch", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            tokenize_corpus(files, tok, cache_dir=cache)
    assert cache_files(cache) == []
    assert tokenize_corpus(files, tok, cache_dir=cache).tolist() == reference_tokens(tok, files)


def test_a_full_disk_while_caching_is_one_line_and_caches_nothing(tok, tmp_path, monkeypatch):
    import errno

    from minidml import data

    files = corpus(tmp_path)
    cache = tmp_path / "cache"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(data, "_token_bytes", full)
        with pytest.raises(MinidmlError, match=r"cache: cannot write the token cache \(No space "
                                               r"left on device\); free space there or set "
                                               r"MINIDML_CACHE_DIR"):
            tokenize_corpus(files, tok, cache_dir=cache)
    assert cache_files(cache) == []


@pytest.mark.parametrize("kind", ["txt", "xz"])
def test_a_corpus_changed_while_read_caches_nothing(tok, tmp_path, monkeypatch, kind):
    """The cache key must name what was read: a file truncated mid-read (and restored
    afterwards, its time kept) is one line, nothing is cached, and the next run reads the
    whole file."""
    rng = random.Random(1)  # text that compresses no better than ~3x: xz reads it in pieces
    text = "\n".join(" ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=5))
                                for _ in range(8)) for _ in range(20_000)).encode()
    path = write(tmp_path / f"big.{kind}", text, "xz" if kind == "xz" else "plain")
    whole, stat = path.read_bytes(), path.stat()
    monkeypatch.setattr(data, "CHUNK_BYTES", 2048)
    calls = []
    encode = tok.encode_batch

    def truncating(*args, **kwargs):
        if not calls:  # the first chunk is being encoded: cut the file short under the reader
            with open(path, "r+b") as f:
                f.truncate(len(whole) // 3)
        calls.append(1)
        return encode(*args, **kwargs)

    monkeypatch.setattr(tok, "encode_batch", truncating)
    with pytest.raises(MinidmlError, match=rf"^{re.escape(str(path))}: changed while it was "
                                           "being read; nothing was cached"):
        tokenize_corpus([path], tok, cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []
    path.write_bytes(whole)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(tok, "encode_batch", encode)
    tokens = tokenize_corpus([path], tok, cache_dir=tmp_path / "cache")
    assert tokens.tolist() == reference_tokens(tok, [path])


def test_temporary_files_of_dead_writers_are_removed(tok, tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = write(cache / f".tokens-abc.uint16.{dead}-x1y2.tmp", b"half")
    alive = write(cache / f".tokens-def.uint16.{os.getppid()}-z3.tmp", b"busy")
    tokenize_corpus(corpus(tmp_path), tok, cache_dir=cache)
    assert not orphan.exists() and alive.exists()


def test_unwritable_cache_dir_is_an_error(tok, tmp_path):
    files = corpus(tmp_path)
    blocker = write(tmp_path / "a-file", b"")
    with pytest.raises(MinidmlError, match="MINIDML_CACHE_DIR"):
        tokenize_corpus(files, tok, cache_dir=blocker / "cache")


def test_large_vocabulary_uses_uint32(tmp_path):
    class BigTokenizer:  # only what tokenize_corpus uses
        vocab_size, sha256 = 70_000, "big"

        def encode_batch(self, texts, bos, eos):
            return [[BOS_ID, 69_999, 65_536 + len(t), EOS_ID] for t in texts]

    path = write(tmp_path / "c.txt", b"a\nbb\n")
    tokens = tokenize_corpus([path], BigTokenizer(), cache_dir=tmp_path / "cache")
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == [2, 69_999, 65_537, 3, 2, 69_999, 65_538, 3]


# ----------------------------------------------------------------------------- batches
def val_mask(b: Batches, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for s, e in b.val_blocks:
        assert not mask[s:e].any()  # validation blocks are disjoint
        mask[s:e] = True
    return mask


def window_positions(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Positions of each window's tokens when the token stream is ``arange(n)``."""
    return torch.cat([x, y[:, -1:]], dim=1).numpy()


def held_out_mask(b: Batches, n: int, draws: int = 50) -> np.ndarray:
    """Positions that held-out windows (for the bi-level outer loop) were seen to cover."""
    mask = np.zeros(n, dtype=bool)
    for i in range(draws):
        mask[window_positions(*b.holdout(i))] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(context=st.integers(1, 24), extra=st.integers(0, 3000), batch=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1), val_fraction=st.floats(0.01, 0.4))
def test_training_never_touches_validation_or_held_out_data(context, extra, batch, seed,
                                                             val_fraction):
    n = 4 * (context + 1) + extra
    b = Batches(np.arange(n), context, batch, val_fraction=val_fraction, seed=seed)
    val = val_mask(b, n)
    held = held_out_mask(b, n)
    assert b.n_val_tokens == val.sum() and 0 < b.n_val_tokens < n
    assert b.n_train_tokens + b.n_val_tokens + b.n_holdout_tokens == n
    assert not (held & val).any()
    for index in (0, 1, 17, 10**6):
        x, y = b.train(index)
        assert x.shape == y.shape == (batch, context) and x.dtype == torch.int64
        pos = window_positions(x, y)
        assert np.array_equal(pos, pos[:, :1] + np.arange(context + 1))  # contiguous windows
        assert pos.max() < n and not val[pos].any() and not held[pos].any()
    for x, y in b.validation():
        assert val[window_positions(x, y)].all()


@pytest.mark.parametrize("n", [200, 210])  # 210: the last block takes the remainder
def test_training_windows_are_exactly_the_windows_inside_training_blocks(n):
    context, block = 4, 20
    b = Batches(np.arange(n), context, 16, val_fraction=0.2, holdout_fraction=0.1, seed=3,
                block_tokens=block, sampling="uniform")
    n_blocks = n // block

    def block_of(p):
        return min(p // block, n_blocks - 1)

    val_blocks = {block_of(s) for s, _ in b.val_blocks}
    held_blocks = {block_of(s) for i in range(100) for s in b.holdout(i)[0][:, 0].tolist()}
    assert len(val_blocks) == round(n_blocks * 0.2) and len(held_blocks) == 1
    assert not val_blocks & held_blocks

    def windows_in(blocks):
        return {s for s in range(n - context)
                if block_of(s) == block_of(s + context) and block_of(s) in blocks}

    training = set(range(n_blocks)) - val_blocks - held_blocks
    seen: dict[int, int] = {}
    for i in range(300):
        for s in b.train(i)[0][:, 0].tolist():
            seen[s] = seen.get(s, 0) + 1
    assert set(seen) == windows_in(training)  # nothing outside, and (4800 draws) all inside
    counts = np.array(list(seen.values()))
    assert counts.min() > 0.3 * counts.mean()  # roughly uniform
    held = {s for i in range(100) for s in b.holdout(i)[0][:, 0].tolist()}
    assert held == windows_in(held_blocks)


@pytest.mark.parametrize("n", [200, 210, 217])  # 210, 217: the last block is longer
def test_each_epoch_visits_every_training_window_once(n):
    """epochs: every non-overlapping window of the training blocks once per epoch, in an
    order of its own; batches that straddle two epochs take the end of one and the start of
    the next, and any batch is a function of (seed, index) alone."""
    context, block, batch = 4, 20, 3
    b = Batches(np.arange(n), context, batch, val_fraction=0.2, holdout_fraction=0.1, seed=3,
                block_tokens=block)
    n_blocks = n // block

    def block_of(p):
        return min(p // block, n_blocks - 1)

    val, held = val_mask(b, n), held_out_mask(b, n)
    training = {k for k in range(n_blocks) if not val[k * block] and not held[k * block]}
    lengths = [(n - k * block if k == n_blocks - 1 else block) for k in sorted(training)]
    w = b._epochs.n_windows
    assert w == sum((length - 1) // context for length in lengths)
    assert b.epoch_tokens == w * context
    starts = [s for i in range(3 * w // batch + 2) for s in b.train(i)[0][:, 0].tolist()]
    epochs = [starts[e * w:(e + 1) * w] for e in range(3)]
    for ep in epochs:
        assert len(set(ep)) == w  # each window once
        assert all(block_of(s) == block_of(s + context) and block_of(s) in training for s in ep)
    assert len({tuple(ep) for ep in epochs}) == 3  # a fresh order each epoch
    again = Batches(np.arange(n), context, batch, val_fraction=0.2, holdout_fraction=0.1,
                    seed=3, block_tokens=block)
    for i in reversed(range(3 * w // batch)):
        assert again.train(i)[0][:, 0].tolist() == starts[i * batch:(i + 1) * batch]


def test_epoch_offsets_move_the_cuts_between_epochs():
    b = Batches(np.arange(20_000), 16, 8, seed=5)
    w = b._epochs.n_windows
    per_epoch = [{s % 16 for s in b._epochs.starts(e * w, w).tolist()} for e in range(6)]
    assert len(set(map(frozenset, per_epoch))) > 1


def test_train_batches_are_a_function_of_seed_and_index():
    tokens = np.arange(5000)
    b = Batches(tokens, 16, 8, seed=11)
    x3, y3 = b.train(3)
    again = Batches(tokens.copy(), 16, 8, seed=11)
    assert torch.equal(again.train(3)[0], x3) and torch.equal(again.train(3)[1], y3)
    assert torch.equal(b.train(3)[0], x3)
    assert not torch.equal(b.train(4)[0], x3)
    assert len({tuple(b.train(i)[0][:, 0].tolist()) for i in range(20)}) == 20
    assert not torch.equal(Batches(tokens, 16, 8, seed=12).train(3)[0], x3)
    h3 = b.holdout(3)[0]
    assert torch.equal(again.holdout(3)[0], h3) and not torch.equal(h3, x3)
    assert b.holdout(3, batch_size=5)[0].shape == (5, 16)


def test_targets_are_inputs_shifted_by_one(tmp_path):
    n = 3000
    values = np.random.default_rng(0).integers(0, 1 << 16, n, dtype=np.uint16)
    path = tmp_path / "tokens.uint16"
    values.tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    b = Batches(tokens, 12, 4, seed=0)
    # a stream whose values are positions tells where each window is
    where = Batches(np.arange(n), 12, 4, seed=0)
    for i in range(5):
        x, y = b.train(i)
        pos = window_positions(*where.train(i))
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert np.array_equal(x.numpy(), values[pos[:, :-1]].astype(np.int64))
        assert np.array_equal(y.numpy(), values[pos[:, 1:]].astype(np.int64))


def test_validation_split_is_a_function_of_the_seed():
    tokens = np.arange(20_000)
    splits = [Batches(tokens, 8, 4, seed=s, val_fraction=0.1).val_blocks for s in range(6)]
    assert splits[0] == Batches(tokens, 8, 4, seed=0, val_fraction=0.1).val_blocks
    assert len({tuple(s) for s in splits}) > 1
    assert all(len(s) == len(splits[0]) for s in splits)


@pytest.mark.parametrize("context", [1, 5, 16])
def test_validation_predicts_each_held_out_token_once(context):
    n = 4000
    b = Batches(np.arange(n), context, 7, val_fraction=0.1, seed=1)
    batches = list(b.validation())
    assert all(len(x) == 7 for x, _ in batches[:-1]) and 1 <= len(batches[-1][0]) <= 7
    targets = np.concatenate([y.numpy().ravel() for _, y in batches])
    assert len(targets) == len(set(targets.tolist()))
    expected = []
    for s, e in b.val_blocks:
        k = (e - s - 1) // context  # whole windows in the block
        expected += range(s + 1, s + 1 + k * context)
    assert sorted(targets.tolist()) == sorted(expected)
    again = [(x.clone(), y.clone()) for x, y in b.validation()]
    assert all(torch.equal(x, x2) and torch.equal(y, y2)
               for (x, y), (x2, y2) in zip(batches, again, strict=True))


@pytest.mark.parametrize("max_tokens", [1, 10, 100, 10**9])
def test_validation_max_tokens(max_tokens):
    context = 10
    b = Batches(np.arange(4000), context, 4, val_fraction=0.1, seed=1)
    available = sum(len(x) for x, _ in b.validation())
    windows = sum(len(x) for x, _ in b.validation(max_tokens))
    assert windows == min(available, max(1, max_tokens // context))
    full = torch.cat([x for x, _ in b.validation()])
    chosen = torch.cat([x for x, _ in b.validation(max_tokens)])
    # whole windows of the split, in order, each once
    rows = [next(i for i in range(len(full)) if torch.equal(full[i], row)) for row in chosen]
    assert rows == sorted(set(rows))
    if 1 < windows < available:  # spread from the split's first window to its last
        assert rows[0] == 0 and rows[-1] == available - 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 2000), context=st.integers(1, 2000))
def test_context_longer_than_data_error_suggests_a_context_that_works(n, context):
    assume(n < 4 * (context + 1))
    with pytest.raises(MinidmlError, match=f"only {n} tokens") as err:
        Batches(np.arange(n), context, 2)
    suggested = int(re.search(r"use --context (\d+) or less", str(err.value)).group(1))
    assert suggested < context
    b = Batches(np.arange(n), suggested, 2)
    x, y = b.train(0)
    assert x.shape == (2, suggested)


@pytest.mark.parametrize("n", range(8))
@pytest.mark.parametrize("context", [1, 2, 64])
def test_a_corpus_too_small_for_any_context_is_said_to_be(n, context):
    with pytest.raises(MinidmlError) as err:
        Batches(np.arange(n), context, 2)
    message = str(err.value)
    assert message.startswith(f"the corpus: only {n} tokens, too few to train on with any "
                              "--context"), message
    assert message.endswith("give a larger corpus") and "use --context" not in message
    Batches(np.arange(8), 1, 2).train(0)  # 8 tokens are enough for context 1


def test_a_tiny_corpus_is_named_and_refused(tmp_path, capsys):
    path = write(tmp_path / "tiny.txt", b"a b\n")
    for context in ("1", "16"):
        code, _, err = run_cli("train", path, "--out", tmp_path / "run", "--context", context,
                               "--steps", "2", "--quiet", capsys=capsys)
        assert_one_line_error(code, err, f"corpus {path}: only ", "too few to train on",
                              "give a larger corpus")
        assert "--context 1 or less" not in err
        assert not (tmp_path / "run").exists()


def test_batches_argument_errors():
    tokens = np.arange(1000)
    with pytest.raises(MinidmlError, match="--context and --batch-size"):
        Batches(tokens, 0, 4)
    with pytest.raises(MinidmlError, match="--context and --batch-size"):
        Batches(tokens, 8, 0)
    for frac in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(MinidmlError, match="--val-fraction"):
            Batches(tokens, 8, 4, val_fraction=frac)
    for frac in (0.0, 1.0):
        with pytest.raises(MinidmlError, match="holdout fraction"):
            Batches(tokens, 8, 4, holdout_fraction=frac)
    with pytest.raises(MinidmlError, match="shorter than context"):
        Batches(tokens, 8, 4, block_tokens=8)
    with pytest.raises(MinidmlError, match="too long to split"):
        Batches(np.arange(40), 9, 4, val_fraction=0.9)  # 4 blocks, all for validation


# ----------------------------------------------------------------------------- atomic writes
# (the token cache above and every file of a run directory are written through minidml._io)
class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_open_keeps_the_old_file_when_the_body_raises(tmp_path, error):
    path = tmp_path / "state.json"
    path.write_bytes(b"old contents")
    with pytest.raises(error), _io.atomic_open(path) as f:
        f.write(b"half of the new con")
        raise error()
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_atomic_open_creates_nothing_when_the_body_raises(tmp_path):
    with pytest.raises(Boom), _io.atomic_open(tmp_path / "new.bin") as f:
        f.write(b"x")
        raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_replaces_on_success(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with _io.atomic_open(path, "w") as f:
        f.write("new ✓")
        assert path.read_text() == "old"  # readers see the old file until the end
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_json_and_write_bytes(tmp_path):
    _io.write_json(tmp_path / "a.json", {"b": [1, 2.5], "a": None})
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"a": None, "b": [1, 2.5]}
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    _io.write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_prefetch_keeps_order_raises_producer_errors_and_stops_early():
    from minidml.data import prefetch

    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise MinidmlError("bad line 2")

    got = []
    with pytest.raises(MinidmlError, match="bad line 2"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]

    closed = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()  # the consumer stops: the producer must stop and release its source
    assert closed == [True]


def test_unigram_entropy_is_exact_and_chunking_changes_nothing():
    from minidml.data import unigram_entropy

    assert unigram_entropy(np.array([5, 5, 5], dtype=np.uint16)) == 0.0
    assert unigram_entropy(np.array([0, 1, 2, 3], dtype=np.uint16)) == pytest.approx(np.log(4))
    tokens = np.random.default_rng(0).zipf(1.5, 10_000).clip(max=60_000).astype(np.uint16)
    _, counts = np.unique(tokens, return_counts=True)
    p = counts / counts.sum()
    want = float(-(p * np.log(p)).sum())
    assert unigram_entropy(tokens) == pytest.approx(want, rel=1e-12)
    assert unigram_entropy(tokens, chunk=7) == pytest.approx(want, rel=1e-12)
