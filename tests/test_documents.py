"""Sentence-aware documents: where lines are cut, that no text is lost or repeated, and what
the token stream and its cache make of them."""

from __future__ import annotations

import contextlib
import itertools
import lzma
import re
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidml import TrainConfig
from minidml import documents as documents_module
from minidml.data import read_lines, tokenize_corpus
from minidml.demo.grammar import write_corpus
from minidml.documents import documents, split_line
from minidml.errors import MinidmlError
from minidml.tokenizer import BOS_ID, EOS_ID, Tokenizer


@pytest.mark.parametrize("line, pieces", [
    ("*CHI: where's dolly? *MOT: here she is. *UNK: bye bye. *CHI: up.",
     ["*CHI: where's dolly?", "*MOT: here she is.", "*UNK: bye bye.", "*CHI: up."]),
    ("A: but I decided. B: Uh-huh. A: so I",
     ["A: but I decided.", "B: Uh-huh.", "A: so I"]),
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("He met J. K. Rowling. She wrote.", ["He met J. K. Rowling.", "She wrote."]),
    ("The U.S. Army won, e.g. In the war. Then peace.",
     ["The U.S. Army won, e.g. In the war.", "Then peace."]),
    ('"Yes!" she said. "Go." He went.', ['"Yes!" she said.', '"Go."', "He went."]),
    ("It rose 3.5 percent. In 2020 it fell.", ["It rose 3.5 percent.", "In 2020 it fell."]),
    ("Wait... What? Really?! (Yes.) Fine", ["Wait...", "What?", "Really?!", "(Yes.)", "Fine"]),
    ("what else? did he go", ["what else? did he go"]),  # no capital: no cut
    ("I saw the sun. Then it set.", ["I saw the sun.", "Then it set."]),
    ("Plan B: the sequel", ["Plan", "B: the sequel"]),  # a one-letter speaker tag, as written
    ("  spaced   out.   Like  this.  ", ["spaced   out.", "Like  this."]),
    ("", []),
])
def test_lines_are_cut_where_the_rules_say(line, pieces):
    assert split_line(line) == pieces


def test_speaker_tags_can_be_dropped():
    line = "*CHI: where's dolly? *MOT: here she is. Look! A: yes. *MOT:"
    assert split_line(line, "drop") == ["where's dolly?", "here she is.", "Look!", "yes."]
    assert split_line("*CHI:up. a*MOT: b", "drop") == ["*CHI:up. a*MOT: b"]  # not tags


WORDS = st.sampled_from(["the", "Dog", "ran", "Mr.", "Dr.", "J.", "U.S.", "e.g.", "3.5", "I",
                         "end.", "end!", "why?", '"Hi."', "(so.)", "*MOT:", "*CHI:", "A:",
                         "B:", "etc.", "no.", "Then", "2020", "...", "wow…", "'quoted.'"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(WORDS, max_size=40), gaps=st.lists(st.sampled_from([" ", "  ", "\t"]),
                                                         min_size=40, max_size=40))
def test_no_text_is_lost_or_repeated(words, gaps):
    line = "".join(w + g for w, g in zip(words, gaps, strict=False))
    pieces = split_line(line)
    assert all(p and p == p.strip() for p in pieces)
    # the pieces, in order, are the line's words: nothing lost, repeated or moved, and every
    # cut falls between words
    assert " ".join(pieces).split() == line.split()
    dropped = split_line(line, "drop")
    tags = {"*MOT:", "*CHI:", "A:", "B:"}
    assert " ".join(dropped).split() == [w for w in line.split() if w not in tags]


# the sentence-end rule as first written: quadratic on runs of end marks, so only for short
# texts, as the reference the linear rule must agree with
OLD_END = re.compile(r"([.!?\u2026]+)[\"'\u201d\u2019)\]]*(\s+)(?=[\"'\u201c\u2018(\[]*[A-Z0-9])")


def ends(pattern: re.Pattern, text: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [(m.span(1), m.span(2)) for m in pattern.finditer(text)]


def split_by_old_rule(line: str, speaker_tags: str = "keep") -> list[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(documents_module, "_END", OLD_END)
        return split_line(line, speaker_tags)


PUNCTUATED = st.lists(st.sampled_from(
    [".", "..", "!", "?", "\u2026", '"', "'", "\u201d", "\u2019", ")", "]", "\u201c", "\u2018",
     "(", "[", " ", "  ", "\t", "\n", "\u00a0", "A", "Z", "0", "9", "a", "x", "Mr", "J", "e.g",
     "U.S", "*MOT:", "B:", "end", "\u00c9"]), max_size=60).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=st.one_of(PUNCTUATED, st.lists(WORDS, max_size=30).map(" ".join)),
       speaker_tags=st.sampled_from(["keep", "drop"]))
def test_sentence_ends_are_those_of_the_first_rule(line, speaker_tags):
    assert ends(documents_module._END, line) == ends(OLD_END, line)
    assert split_line(line, speaker_tags) == split_by_old_rule(line, speaker_tags)


@pytest.mark.parametrize("name", ["bnc_spoken", "childes", "gutenberg", "open_subtitles",
                                  "simple_wiki", "switchboard"])
def test_real_text_is_split_as_by_the_first_rule(data_dir, name):
    path = data_dir / f"babylm-2024-100M-snippets/{name}.txt.xz"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    with lzma.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in itertools.islice(f, 3)]
    for line in lines:
        assert split_line(line) == split_by_old_rule(line)
    assert sum(len(split_line(line)) for line in lines) > 100  # real sentences were cut


LONG_LINES = {"dots": "." * 200_000, "marks": "!?\u2026" * 70_000 + "\u201d) a",
              "dot-space": ". " * 100_000, "dot-bracket": ".)" * 100_000,
              "dots-spaces": "." * 100_000 + " " * 100_000 + "x", "quotes": 'a. "' * 50_000,
              "titles": "Mr. " * 50_000 + "Then."}


@contextlib.contextmanager
def within(seconds: float):
    """Fails the block once it has run ``seconds`` (a regular expression is interrupted)."""
    def expire(*_):
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name", LONG_LINES)
def test_splitting_takes_linear_time(name):
    # 200,000 characters split in a few hundredths of a second; the first rule took 7.5 s on
    # 20,000 dots, and time growing with the square of a run's length (12 minutes here)
    line = LONG_LINES[name]
    with within(5.0):
        pieces = split_line(line)
    assert " ".join(pieces).split() == line.split()


def test_documents_by_line_and_by_sentence():
    lines = ["One. Two.", "   ", "", "Three"]
    assert list(documents(lines)) == ["One. Two.", "Three"]
    assert list(documents(lines, "sentence")) == ["One.", "Two.", "Three"]
    with pytest.raises(ValueError, match="documents 'para'"):
        list(documents(lines, "para"))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("c") / "g.txt", 2000, seed=0)
    return Tokenizer.train(read_lines([corpus]), vocab_size=300)


def test_sentence_documents_in_the_token_stream(tok, tmp_path):
    path = tmp_path / "c.txt"
    lines = ["*MOT: what is that? *CHI: a ball.", "", "The ball is red. Mr. Brown has a dog."]
    path.write_text("\n".join(lines) + "\n")
    by_line = np.asarray(tokenize_corpus([path], tok, tmp_path / "cache"))
    by_sentence = np.asarray(tokenize_corpus([path], tok, tmp_path / "cache", rule="sentence"))
    dropped = np.asarray(tokenize_corpus([path], tok, tmp_path / "cache", rule="sentence",
                                         speaker_tags="drop"))
    assert (by_line == BOS_ID).sum() == 2 and (by_sentence == BOS_ID).sum() == 4
    want = [t for d in documents(lines, "sentence", "drop")
            for t in (BOS_ID, *tok.encode(d), EOS_ID)]
    assert dropped.tolist() == want
    assert len(set(map(tuple, (by_line, by_sentence, dropped)))) == 3
    assert len(list((tmp_path / "cache").iterdir())) == 3  # one cache file per rule


def test_bad_splitting_options_are_one_line_errors():
    with pytest.raises(MinidmlError, match="--documents 'para': choose one of line, sentence"):
        TrainConfig(documents="para")
    with pytest.raises(MinidmlError, match="--speaker-tags 'hide'"):
        TrainConfig(speaker_tags="hide")
