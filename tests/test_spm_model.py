"""Reading a sentencepiece model's bytes: the pieces sentencepiece itself reports, and a
model that cannot be exported exactly refused in one line."""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from minidml.demo.grammar import write_corpus
from minidml.errors import MinidmlError
from minidml.spm_model import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    bpe_merges,
    has_dummy_prefix,
    spm_pieces,
    with_dummy_prefix,
)
from minidml.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    path = write_corpus(tmp_path_factory.mktemp("spm") / "corpus.txt", 3000, seed=0)
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_pieces_are_what_sentencepiece_reports(lines, kind):
    tok = Tokenizer.train(lines, vocab_size=400, model_type=kind, num_threads=1)
    sp = spm.SentencePieceProcessor(model_proto=tok.to_bytes())
    model_type, pieces = spm_pieces(tok)
    assert model_type == kind
    assert len(pieces) == sp.get_piece_size() == tok.vocab_size
    for i, (piece, score, type_) in enumerate(pieces):
        assert piece == sp.id_to_piece(i)
        assert score == pytest.approx(sp.get_score(i), abs=1e-6)
        expected = (CONTROL if sp.is_control(i) else UNKNOWN if sp.is_unknown(i)
                    else BYTE if sp.is_byte(i) else NORMAL)
        assert type_ == expected, (i, piece)
    assert sum(t == BYTE for _, _, t in pieces) == 256


def test_bpe_merges_rebuild_every_piece_by_score(lines):
    tok = Tokenizer.train(lines, vocab_size=400, model_type="bpe", num_threads=1)
    _, pieces = spm_pieces(tok)
    score = {p: s for p, s, t in pieces if t == NORMAL}
    merges = bpe_merges(pieces)
    joined = [left + right for left, right in merges]
    assert all(j in score and left in score and right in score
               for j, (left, right) in zip(joined, merges, strict=True))
    ranks = [score[j] for j in joined]
    assert ranks == sorted(ranks, reverse=True)  # higher-scoring merges first
    # every multi-character piece can be made by some merge
    assert {p for p in score if len(p) > 1} <= set(joined)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 100])
def test_truncated_model_is_one_line(lines, cut):
    """Whatever the cut, a truncated model is refused: no field may run past the end (a
    silently shortened normaliser spec would pass the checks that follow)."""
    tok = Tokenizer.train(lines, vocab_size=400, num_threads=1)

    class Damaged(Tokenizer):
        def to_bytes(self) -> bytes:
            return tok.to_bytes()[:-cut]

    damaged = Damaged.__new__(Damaged)
    with pytest.raises(MinidmlError, match="unreadable sentencepiece model") as e:
        spm_pieces(damaged)
    assert "\n" not in str(e.value)


def test_other_normalisation_is_refused(lines):
    """sentencepiece's defaults (NFKC, a dummy prefix) change the text before it is split:
    no export could reproduce that exactly."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out,
                                   vocab_size=300, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                                   num_threads=1, minloglevel=2)
    with pytest.raises(MinidmlError, match="cannot be exported exactly"):
        spm_pieces(Tokenizer(out.getvalue()))


def test_dummy_prefix_is_set_and_cleared_and_nothing_else_changes(lines):
    base = Tokenizer.train(lines, vocab_size=300, seed=0, num_threads=1, boundary="none")
    proto = base.to_bytes()
    assert not has_dummy_prefix(proto)
    on = with_dummy_prefix(proto, True)
    assert has_dummy_prefix(on) and not has_dummy_prefix(with_dummy_prefix(on, False))
    assert Tokenizer(on).boundary == "prefix"
    assert spm_pieces(Tokenizer(on)) == spm_pieces(base)
    sp_on, sp_off = (spm.SentencePieceProcessor(model_proto=p) for p in (on, proto))
    assert sp_on.encode("the cat") == sp_off.encode(" the cat") != sp_off.encode("the cat")
    # the bytes of every other field are kept, so clearing again gives an equal model
    again = spm.SentencePieceProcessor(model_proto=with_dummy_prefix(on, False))
    assert [again.id_to_piece(i) for i in range(300)] == [sp_off.id_to_piece(i)
                                                          for i in range(300)]
