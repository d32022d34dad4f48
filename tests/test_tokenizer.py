"""The shared sentencepiece tokenizer: round trips, special ids, training and long lines."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidml.errors import MinidmlError
from minidml.spm_model import _raw_fields
from minidml.tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_AUTO_VOCAB,
    MAX_PIECE_BYTES,
    MIN_AUTO_VOCAB,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    auto_vocab_size,
    cut_for_encoding,
    sample_pieces,
    split_long_line,
)

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "home", "café", "naïve", "über",
         "Ærø", "日本語", "中文", "テキスト", "😀", "🎉", "hello", "world", "1984", "it's", "ok."]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "pe", "di", "gu", "ba", "fo"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def word_lines(n: int, seed: int = 0, made_up: bool = True) -> list[str]:
    """``n`` lines of words from ``WORDS`` and, if ``made_up``, of made-up words of syllables."""
    rng = random.Random(seed)

    def word() -> str:
        if made_up and rng.random() < 0.5:
            return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))
        return rng.choice(WORDS)

    return [" ".join(word() for _ in range(rng.randint(2, 12))) for _ in range(n)]


@pytest.fixture(scope="module", params=["prefix", "none"])
def tok(request) -> Tokenizer:
    return Tokenizer.train(word_lines(1500), vocab_size=400, seed=0, num_threads=1,
                           boundary=request.param)


def decoded(tok: Tokenizer, text: str) -> str:
    """What decoding gives back: the text, less the one space that is the word boundary."""
    return text.removeprefix(" ") if tok.boundary == "prefix" else text


# "Ordinary" text: letters, marks, digits, punctuation, symbols and spaces of every script (no
# surrogates, no control characters), plus tabs, newlines and a few characters we want often.
ORDINARY = st.text(
    st.one_of(
        st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs")),
        st.sampled_from(list("\t\n  éüßñÅ日本語中文字😀🎉👍🏽") + ["\u2581"]),
    ),
    max_size=80,
)
WORD_TEXT = st.lists(st.sampled_from(WORDS + [" ", "\t", "\n", "  "]), max_size=30).map("".join)


def is_byte_piece(piece: str) -> bool:
    return re.fullmatch(r"<0x[0-9A-F]{2}>", piece) is not None


# ----------------------------------------------------------------------------- round trips
@FAST
@given(text=st.one_of(ORDINARY, WORD_TEXT))
def test_decode_encode_round_trips_ordinary_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == decoded(tok, text)
    # byte fallback: nothing is ever unknown, and no special id appears inside a text
    assert all(i > EOS_ID for i in ids)
    assert all(0 <= i < tok.vocab_size for i in ids)


@FAST
@given(text=st.text(max_size=40))  # any code points but surrogates, control characters too
def test_decode_encode_round_trips_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == decoded(tok, text)


@FAST
@given(text=st.one_of(ORDINARY, WORD_TEXT))
def test_the_first_word_is_encoded_as_in_running_text(tok, text):
    """With the boundary, a text and the same text after a space are the same tokens, and a
    text's tokens are those it has after another word (less that word's)."""
    text = text.lstrip(" ")
    if tok.boundary != "prefix" or not text:
        return
    assert tok.encode(text) == tok.encode(" " + text)
    words = text.split(" ")
    if words[0] and "\u2581" not in text:  # a whole word: the pieces do not cross spaces
        assert tok.encode(words[0]) == tok.encode("the " + words[0])[len(tok.encode("the")):]


def test_boundary_of_known_words(tok):
    first = [tok.id_to_piece(i) for i in tok.encode("cat sat")]
    assert first[0] == ("\u2581cat" if tok.boundary == "prefix" else "cat")
    assert first[-1] == "\u2581sat"
    assert tok.decode(tok.encode("cat sat")) == "cat sat"


def test_sentencepiece_space_symbol_in_text_is_kept(tok):
    # "▁" is how sentencepiece writes a space; a literal one in the text must not become a space
    for text in ["\u2581", "a\u2581b", "\u2581\u2581 x \u2581", "the\u2581cat"]:
        assert tok.decode(tok.encode(text)) == decoded(tok, text)
        assert tok.decode(tok.encode_batch([text])[0]) == decoded(tok, text)


def test_known_words_use_learned_pieces_not_bytes(tok):
    for word in ["the", "cat", "hello"]:
        pieces = [tok.id_to_piece(i) for i in tok.encode(word)]
        assert not any(is_byte_piece(p) for p in pieces), pieces
    # a character the corpus never had falls back to its UTF-8 bytes
    pieces = [tok.id_to_piece(i) for i in tok.encode("ж")]
    if tok.boundary == "prefix":  # the boundary comes first, as a piece of its own
        assert pieces.pop(0) == "\u2581"
    assert [int(p[3:5], 16) for p in pieces] == list("ж".encode())


# ----------------------------------------------------------------------------- special ids
def test_special_ids_are_fixed(tok):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    sp = spm.SentencePieceProcessor(model_proto=tok.to_bytes())
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert len(tok) == tok.vocab_size == sp.get_piece_size() == 400


@FAST
@given(text=WORD_TEXT)
def test_encode_bos_eos_flags(tok, text):
    ids = tok.encode(text)
    assert tok.encode(text, bos=True) == [BOS_ID, *ids]
    assert tok.encode(text, eos=True) == [*ids, EOS_ID]
    assert tok.encode(text, bos=True, eos=True) == [BOS_ID, *ids, EOS_ID]
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == decoded(tok, text)


@FAST
@given(texts=st.lists(st.one_of(ORDINARY, WORD_TEXT), max_size=8),
       bos=st.booleans(), eos=st.booleans())
def test_encode_batch_equals_encode_per_item(tok, texts, bos, eos):
    expected = [tok.encode(t, bos=bos, eos=eos) for t in texts]
    assert tok.encode_batch(texts, bos=bos, eos=eos) == expected
    assert tok.encode_batch(tuple(texts), bos=bos, eos=eos, num_threads=1) == expected


# ----------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.model"
    tok.save(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tok.sha256
    loaded = Tokenizer.load(path)
    assert loaded.sha256 == tok.sha256
    assert loaded.to_bytes() == tok.to_bytes()
    texts = word_lines(50, seed=7) + ["x\u2581y", "日本語 テキスト 😀", ""]
    assert loaded.encode_batch(texts, bos=True, eos=True) == tok.encode_batch(
        texts, bos=True, eos=True)
    assert [loaded.id_to_piece(i) for i in range(tok.vocab_size)] == [
        tok.id_to_piece(i) for i in range(tok.vocab_size)]
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.model"]  # no temp file left


def test_sha256_is_of_the_model_bytes(tok):
    assert tok.sha256 == hashlib.sha256(tok.to_bytes()).hexdigest()
    assert tok.sha256[:12] in repr(tok)


def test_load_missing_file(tmp_path):
    with pytest.raises(MinidmlError, match="cannot read tokenizer model"):
        Tokenizer.load(tmp_path / "nope.model")


def test_load_garbage(tmp_path):
    path = tmp_path / "garbage.model"
    path.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(MinidmlError, match="not a sentencepiece model"):
        Tokenizer.load(path)


def test_model_without_a_normalizer_spec_is_refused_naming_the_file(tok, tmp_path):
    # sentencepiece reads such a model (with its default normalisation, which is not
    # minidml's: it collapses runs of spaces), so it is minidml that must refuse it
    bare = b"".join(raw for number, _, raw in _raw_fields(tok.to_bytes()) if number != 3)
    assert spm.SentencePieceProcessor(model_proto=bare).get_piece_size() == tok.vocab_size
    path = tmp_path / "tokenizer.model"
    path.write_bytes(bare)
    with pytest.raises(MinidmlError) as err:
        Tokenizer.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "normalizer spec" in message, message
    assert "\n" not in message and "train it with minidml" in message


def test_foreign_model_with_other_special_ids_is_refused(tmp_path):
    import io

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(word_lines(300)), model_writer=out,
                                   vocab_size=60, minloglevel=2, num_threads=1)
    with pytest.raises(MinidmlError, match="special ids"):
        Tokenizer(out.getvalue())
    path = tmp_path / "foreign.model"
    path.write_bytes(out.getvalue())
    with pytest.raises(MinidmlError, match=f"^{re.escape(str(path))}: special ids"):
        Tokenizer.load(path)


# ----------------------------------------------------------------------------- training
def test_training_is_deterministic_for_a_seed():
    lines = word_lines(800, seed=3)
    a = Tokenizer.train(lines, vocab_size=400, seed=5)
    b = Tokenizer.train(iter(lines), vocab_size=400, seed=5)  # any iterable of lines
    assert a.sha256 == b.sha256
    # also when the reservoir keeps only part of the corpus, which the seed chooses
    c = Tokenizer.train(lines, vocab_size=400, seed=5, input_sentence_size=300)
    d = Tokenizer.train(lines, vocab_size=400, seed=5, input_sentence_size=300)
    assert c.sha256 == d.sha256


def test_bpe_model_type_round_trips():
    tok = Tokenizer.train(word_lines(800), vocab_size=400, model_type="bpe", num_threads=1)
    for text in word_lines(20, seed=9) + ["x\u2581 ж\t\n"]:
        assert tok.decode(tok.encode(text)) == text


def test_unknown_model_type():
    with pytest.raises(MinidmlError, match="unigram or bpe"):
        Tokenizer.train(word_lines(10), vocab_size=300, model_type="wordpiece")


@pytest.mark.parametrize("size", [1, 256, 299])
def test_vocab_below_300_is_refused(size):
    with pytest.raises(MinidmlError, match="at least 300"):
        Tokenizer.train(word_lines(500), vocab_size=size)


@pytest.mark.parametrize("lines", [[], [""], ["   ", "\t", "\r\n"]])
def test_empty_corpus_is_refused(lines):
    with pytest.raises(MinidmlError, match="no text"):
        Tokenizer.train(lines, vocab_size=300)


def test_vocab_too_large_suggests_a_size_that_works():
    lines = word_lines(1500)
    with pytest.raises(MinidmlError, match="too large") as err:
        Tokenizer.train(lines, vocab_size=5000, num_threads=1)
    m = re.search(r"--vocab-size (\d+) or less", str(err.value))
    assert m, str(err.value)
    suggested = int(m.group(1))
    assert 300 <= suggested < 5000
    assert Tokenizer.train(lines, vocab_size=suggested, num_threads=1).vocab_size == suggested


def test_corpus_too_small_for_any_allowed_vocab_does_not_suggest_a_refused_size():
    lines = ["the cat sat on the mat", "dog ran home"] * 50
    with pytest.raises(MinidmlError, match="too large") as err:
        Tokenizer.train(lines, vocab_size=300, num_threads=1)
    for size in re.findall(r"--vocab-size (\d+)", str(err.value)):
        assert int(size) >= 300, str(err.value)  # never a size that is refused
    assert "larger corpus" in str(err.value)
    tok = Tokenizer.train(lines, num_threads=1)  # the automatic size takes what there is
    assert 260 < tok.vocab_size < 300
    assert tok.decode(tok.encode(lines[0])) == lines[0]


def cjk_lines(n_chars: int) -> tuple[list[str], list[str]]:
    """(lines of ``n_chars`` CJK characters, all frequent; the characters)."""
    rng = random.Random(0)
    chars = [chr(0x4E00 + i) for i in range(n_chars)]
    return ["".join(rng.choice(chars) for _ in range(30)) for _ in range(2000)], chars


def test_vocab_too_small_for_the_characters_suggests_a_size_that_works():
    lines, chars = cjk_lines(400)
    with pytest.raises(MinidmlError, match="too small") as err:
        Tokenizer.train(lines, vocab_size=300, num_threads=1)
    assert str(err.value).startswith("--vocab-size 300: ")
    m = re.search(r"--vocab-size (\d+) or more", str(err.value))
    assert m, str(err.value)
    suggested = int(m.group(1))
    assert suggested > 400 + 4
    tok = Tokenizer.train(lines, vocab_size=suggested, num_threads=1)
    assert tok.vocab_size == suggested
    pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    assert set(chars) <= pieces  # every character got its own piece


def test_auto_vocab_grows_to_what_the_characters_need():
    lines, chars = cjk_lines(400)  # the automatic size of so few words is 512: too small
    _, words = sample_pieces(lines, 10**6, 0)
    assert auto_vocab_size(words) == MIN_AUTO_VOCAB == 512
    with pytest.raises(MinidmlError, match="too small") as err:
        Tokenizer.train(lines, vocab_size=MIN_AUTO_VOCAB, num_threads=1)
    suggested = int(re.search(r"--vocab-size (\d+) or more", str(err.value)).group(1))
    tok = Tokenizer.train(lines, num_threads=1)  # no size given: no error about one
    assert tok.vocab_size == suggested > MIN_AUTO_VOCAB
    assert set(chars) <= {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    assert tok.decode(tok.encode(lines[0])) == lines[0]


def test_auto_vocab_falls_back_to_what_the_corpus_supports():
    lines = word_lines(1500, made_up=False)
    _, words = sample_pieces(lines, 10**6, 0)
    assert auto_vocab_size(words) >= MIN_AUTO_VOCAB
    tok = Tokenizer.train(lines, num_threads=1)  # auto size is more than 23 words support
    assert 300 <= tok.vocab_size < auto_vocab_size(words)
    with pytest.raises(MinidmlError, match="too large"):
        Tokenizer.train(lines, vocab_size=tok.vocab_size + 1, num_threads=1)


# ----------------------------------------------------------------------------- auto size
@given(a=st.integers(0, 10**9), b=st.integers(0, 10**9))
@settings(max_examples=200, deadline=None)
def test_auto_vocab_size_grows_with_words_and_is_capped(a, b):
    lo, hi = sorted((a, b))
    assert auto_vocab_size(lo) <= auto_vocab_size(hi)
    v = auto_vocab_size(a)
    assert MIN_AUTO_VOCAB <= v <= MAX_AUTO_VOCAB
    assert v & (v - 1) == 0  # a power of two


def test_auto_vocab_size_documented_points():
    assert auto_vocab_size(0) == MIN_AUTO_VOCAB == 512
    assert auto_vocab_size(2_000_000) == 8192  # "about 8k for 2M words"
    assert auto_vocab_size(5_000_000) == MAX_AUTO_VOCAB == 16384  # "16k from about 5M words"
    assert auto_vocab_size(10**12) == MAX_AUTO_VOCAB
    assert auto_vocab_size(10_000_000) > auto_vocab_size(10_000)


# ----------------------------------------------------------------------------- long lines
def rejoins(pieces: list[str], line: str) -> bool:
    """Whether ``line`` is the pieces joined by separators that are each "" or " "."""
    memo: dict[tuple[int, int], bool] = {}

    def ok(k: int, pos: int) -> bool:
        if k == len(pieces):
            return pos == len(line)
        if (k, pos) not in memo:
            seps = [""] if k == 0 else ["", " "]
            memo[k, pos] = any(line.startswith(sep + pieces[k], pos)
                               and ok(k + 1, pos + len(sep) + len(pieces[k])) for sep in seps)
        return memo[k, pos]

    return ok(0, 0)


LONG_ALPHABET = st.sampled_from(["a", "b", "é", "日", "😀", " ", " ", "  "])


@settings(max_examples=150, deadline=None)
@given(chars=st.lists(LONG_ALPHABET, max_size=120), max_bytes=st.integers(4, 40))
def test_split_long_line_pieces_fit_and_rejoin(chars, max_bytes):
    line = "".join(chars)
    pieces = list(split_long_line(line, max_bytes))
    assert all(len(p.encode()) <= max_bytes for p in pieces)
    assert rejoins(pieces, line)
    if len(line.encode()) <= max_bytes:
        assert pieces == ([line] if line else [])


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.text(st.sampled_from("abé日😀"), min_size=1, max_size=5), max_size=40),
       max_bytes=st.integers(20, 60))
def test_split_long_line_at_spaces_is_greedy(words, max_bytes):
    # with every word short, the line is cut at spaces only, and each piece is as full as can be
    line = " ".join(words)
    pieces = list(split_long_line(line, max_bytes))
    assert " ".join(pieces) == line
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert len(a.encode()) + 1 + len(b.split(" ")[0].encode()) > max_bytes


@pytest.mark.parametrize("line", [
    " ".join(["жук"] * 5000),  # 19,999 characters, many words, no newline
    "ж" * 20_000,  # one 40,000-byte "word"
    "日本" * 10_000 + " end",
], ids=["words", "one-word", "word-then-short"])
def test_long_lines_are_split_not_lost(line):
    pieces = list(split_long_line(line))
    assert len(pieces) > 1
    assert all(len(p.encode()) <= MAX_PIECE_BYTES for p in pieces)
    assert rejoins(pieces, line)
    sample, words = sample_pieces([line + "\n"], 10**6, 0)
    assert sample == pieces and words == len(line.split())


@pytest.mark.parametrize("long_line", [" ".join(["жук"] * 5000), "ж" * 20_000],
                         ids=["words", "one-word"])
def test_character_only_in_a_long_line_is_learned(long_line):
    # sentencepiece drops sentences over max_sentence_length: unsplit, "ж" would be unknown
    lines = word_lines(300) + [long_line]
    tok = Tokenizer.train(lines, vocab_size=400, num_threads=1)
    pieces = [tok.id_to_piece(i) for i in tok.encode("ж")]
    assert pieces in (["\u2581", "ж"], ["\u2581ж"])  # the word boundary, then the character
    assert tok.decode(tok.encode(long_line)) == long_line


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.train(word_lines(1500), vocab_size=400, model_type="bpe", num_threads=1)


CUT_TEXT = st.lists(st.sampled_from(WORDS + [" ", "  ", "   ", "\t", "\n", "\u2581", "ж", "xyzzy"]),
                    max_size=80).map("".join)


@FAST
@given(text=CUT_TEXT, max_chars=st.integers(1, 40))
def test_text_cut_for_encoding_keeps_the_ids_of_the_whole(bpe, tok, text, max_chars):
    pieces = list(cut_for_encoding(text, max_chars))
    assert "".join(pieces) == text
    assert all(len(p) >= max_chars for p in pieces[:-1])
    for a, b in zip(pieces, pieces[1:], strict=False):  # cut before a space after a non-space
        assert a[-1] != " " and b[0] == " "
    if len(text) <= max_chars:
        assert pieces == [text]
    for model in (bpe, tok):
        assert [i for p in pieces for i in model.encode(p)] == model.encode(text)


def test_text_without_spaces_is_not_cut():
    assert list(cut_for_encoding("ж" * 50, 10)) == ["ж" * 50]
    assert list(cut_for_encoding("ab" + " " * 30 + "cd ef", 5)) == ["ab" + " " * 30 + "cd", " ef"]


# ----------------------------------------------------------------------------- sampling
def test_sample_pieces_keeps_everything_that_fits():
    lines = ["one two\r\n", "", "   ", "three\n", " four  five "]
    sample, words = sample_pieces(lines, 100, seed=1)
    assert sample == ["one two", "three", " four  five "]  # blank lines skipped, ends stripped
    assert words == 5


def test_sample_pieces_is_seeded_and_bounded():
    lines = [f"line {i}" for i in range(200)]
    a, words = sample_pieces(lines, 20, seed=4)
    assert words == 400
    assert len(a) == 20 and len(set(a)) == 20 and set(a) <= set(lines)
    assert sample_pieces(lines, 20, seed=4)[0] == a
    assert any(sample_pieces(lines, 20, seed=s)[0] != a for s in range(5, 10))


def test_sample_pieces_is_uniform():
    # a reservoir sample keeps each of 20 pieces with probability 5/20
    lines = [f"p{i}" for i in range(20)]
    counts = dict.fromkeys(lines, 0)
    trials = 600
    for seed in range(trials):
        for piece in sample_pieces(lines, 5, seed)[0]:
            counts[piece] += 1
    freqs = [c / trials for c in counts.values()]
    assert all(0.17 < f < 0.33 for f in freqs), freqs


# ----------------------------------------------------------------------------- word boundary
def test_the_boundary_lives_in_the_model_bytes(tok, tmp_path):
    """A loaded model keeps its boundary, and a sentencepiece processor of the same bytes
    adds the same ``▁`` (its dummy prefix) to a text that does not begin with a space."""
    tok.save(tmp_path / "t.model")
    assert Tokenizer.load(tmp_path / "t.model").boundary == tok.boundary
    sp = spm.SentencePieceProcessor(model_proto=tok.to_bytes())
    for text in ["the cat sat", "ok. hello world\nthe dog", "café über"]:
        assert sp.encode(text) == tok.encode(text)
        assert sp.decode(tok.encode(text)) == text


def test_unknown_boundary_is_one_line():
    with pytest.raises(MinidmlError, match="--tokenizer-boundary 'suffix'"):
        Tokenizer.train(word_lines(50), vocab_size=300, boundary="suffix")


def test_long_runs_without_spaces_are_sampled_within_a_bound():
    """A 2 MB line without a space would make training take minutes: at most
    LONG_RUN_SAMPLE_BYTES of such runs reach it; text with spaces is sampled as before."""
    from minidml import tokenizer as tk

    giant = "abcdefghij" * 200_000
    pieces, words = tk.sample_pieces([giant, "the cat sat on the mat"] * 3, 10**6, seed=0)
    runs = [p for p in pieces if " " not in p and len(p) > tk.LONG_RUN]
    assert sum(map(len, runs)) <= tk.LONG_RUN_SAMPLE_BYTES + tk.MAX_PIECE_BYTES
    assert pieces.count("the cat sat on the mat") == 3 and words == 3 * 7
    text = ["word " * 300] * 2000  # 3 MB of ordinary words: untouched
    assert sum(map(len, tk.sample_pieces(text, 10**6, seed=0)[0])) >= 2_990_000
