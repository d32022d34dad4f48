"""A sentencepiece model read from its own bytes: its pieces (text, score, type), its model
type and its text normalisation, without the ``protobuf`` package (the ``ModelProto``
fields read are few and stable). Exporting a tokenizer to other formats
(:mod:`minidml.hf.export`) starts here; :func:`with_dummy_prefix` is the one field minidml
writes (the word-boundary prefix of :class:`minidml.Tokenizer`)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

from .errors import MinidmlError


class SentencePieceModel(Protocol):
    """What :func:`spm_pieces` reads of a tokenizer (:class:`minidml.Tokenizer` has both)."""

    @property
    def vocab_size(self) -> int: ...

    def to_bytes(self) -> bytes: ...


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _raw_fields(buf: bytes) -> Iterator[tuple[int, int | bytes, bytes]]:
    """(field number, value, the field's own bytes) of a protobuf message, in order: varints
    as ints, the rest as bytes."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value, buf[start:i]
        elif wire in (1, 2, 5):
            if wire == 2:
                size, i = _varint(buf, i)
            else:
                size = 8 if wire == 1 else 4
            if i + size > len(buf):
                raise ValueError(f"field {number} runs past the end")
            yield number, buf[i:i + size], buf[start:i + size]
            i += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    for number, value, _ in _raw_fields(buf):
        yield number, value


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# ModelProto.trainer_spec and .normalizer_spec, and NormalizerSpec.add_dummy_prefix (a bool,
# default true)
_TRAINER, _NORMALIZER, _ADD_DUMMY_PREFIX = 2, 3, 3


def has_dummy_prefix(proto: bytes) -> bool:
    """Whether a sentencepiece model adds its dummy prefix (a ``▁`` before every text)."""
    try:
        for number, value in _fields(proto):
            if number == _NORMALIZER and isinstance(value, bytes):
                return bool(dict(_fields(value)).get(_ADD_DUMMY_PREFIX, 1))
    except ValueError:
        return False  # sentencepiece itself reports an unreadable model
    return True  # no normalizer spec: sentencepiece's defaults


def model_type(proto: bytes) -> str:
    """``unigram``, ``bpe``, ``word``, ``char`` (or ``unknown``) of a sentencepiece model."""
    try:
        for number, value in _fields(proto):
            if number == _TRAINER and isinstance(value, bytes):
                return _model_type(dict(_fields(value)))
    except ValueError:
        return "unknown"
    return "unigram"


def _model_type(trainer: dict[int, int | bytes]) -> str:
    return _MODEL_TYPES.get(int(trainer.get(3, 1)), "unknown")


def with_dummy_prefix(proto: bytes, on: bool) -> bytes:
    """The model's bytes with ``add_dummy_prefix`` set to ``on``; every other field is copied
    byte for byte."""
    out = bytearray()
    found = False
    for number, value, raw in _raw_fields(proto):
        if number == _NORMALIZER and isinstance(value, bytes):
            found = True
            inner = b"".join(r for n, _, r in _raw_fields(value) if n != _ADD_DUMMY_PREFIX)
            inner += _put_varint(_ADD_DUMMY_PREFIX << 3) + _put_varint(int(on))
            out += _put_varint(_NORMALIZER << 3 | 2) + _put_varint(len(inner)) + inner
        else:
            out += raw
    if not found:
        raise ValueError("the model has no normalizer spec")
    return bytes(out)


_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
# piece types of sentencepiece's ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def spm_pieces(tokenizer: SentencePieceModel) -> tuple[str, list[tuple[str, float, int]]]:
    """The model type and the (piece, score, type) list of a tokenizer's sentencepiece model,
    read from the model's protobuf bytes; a model whose text normalisation is not minidml's
    (identity, spaces kept, spaces as ``▁``, with or without the dummy prefix that
    :attr:`Tokenizer.boundary` reads) is refused."""
    try:
        pieces: list[tuple[str, float, int]] = []
        trainer: dict[int, int | bytes] = {}
        normalizer: dict[int, int | bytes] = {}
        for number, value in _fields(tokenizer.to_bytes()):
            if number == 1 and isinstance(value, bytes):
                piece = dict(_fields(value))
                score = piece.get(2, b"\0\0\0\0")
                pieces.append((bytes(piece.get(1, b"")).decode("utf-8"),
                               struct.unpack("<f", bytes(score))[0], int(piece.get(3, NORMAL))))
            elif number == _TRAINER and isinstance(value, bytes):
                trainer = dict(_fields(value))
            elif number == _NORMALIZER and isinstance(value, bytes):
                normalizer = dict(_fields(value))
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise MinidmlError(f"tokenizer model: unreadable sentencepiece model ({e})") from None
    mtype = _model_type(trainer)
    name = bytes(normalizer.get(1, b"nmt_nfkc")).decode("utf-8", "replace")
    plain = (name == "identity" and not normalizer.get(2) and normalizer.get(4, 1) == 0
             and normalizer.get(5, 1) == 1
             and not trainer.get(24, 0))
    if mtype not in ("unigram", "bpe") or not plain or len(pieces) != tokenizer.vocab_size:
        raise MinidmlError(f"tokenizer model: a {mtype} model with {name!r} "
                           "normalisation cannot be exported exactly; export a run whose "
                           "tokenizer minidml trained")
    if any(kind in (USER_DEFINED, UNUSED) for _, _, kind in pieces):
        raise MinidmlError("tokenizer model: user-defined or unused pieces cannot be exported "
                           "exactly; export a run whose tokenizer minidml trained")
    return mtype, pieces


def bpe_merges(pieces: list[tuple[str, float, int]]) -> list[tuple[str, str]]:
    """Merge rules equivalent to sentencepiece's BPE: a pair merges when the joined piece is in
    the vocabulary, higher-scoring joined pieces first."""
    ids = {p: i for i, (p, _, kind) in enumerate(pieces) if kind == NORMAL}
    ranked = []
    for piece, score, kind in pieces:
        if kind != NORMAL:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-score, ids[piece], ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
