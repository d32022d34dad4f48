"""The generated demo corpus, its recogniser and its minimal-pair evaluation suite."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from grammar_parser import is_grammatical

from minidml.demo import grammar
from minidml.demo.grammar import (
    DEMONSTRATIVES,
    LEXICON,
    NOUNS,
    PHENOMENA,
    PREPOSITIONS,
    REFLEXIVES,
    RELATIVIZER,
    VERBS,
    VOCABULARY,
    MinimalPair,
    Noun,
    Number,
    Selection,
    Verb,
    minimal_pairs,
    pluralize,
    reflexive,
    sentences,
    third_person_singular,
    write_corpus,
)

SAMPLE_SIZE = 20_000
SENTENCE_FORMAT = re.compile(r"[A-Z][a-z]*(?: [a-z]+)*\.")
NOUN_NUMBER = {noun.form(number): number for noun in NOUNS for number in Number}
AGREEING_PAIRS = {
    frozenset((p.singular, p.plural)) for p in (*VERBS, *grammar.COPULAS, *DEMONSTRATIVES)
}


def words(sentence: str) -> list[str]:
    """The lower-cased words of a sentence, without the final period."""
    return sentence[:-1].lower().split(" ")


def head_number(sentence: str) -> Number:
    """The number of the subject's head noun: the first noun of the sentence."""
    return next(NOUN_NUMBER[w] for w in words(sentence) if w in NOUN_NUMBER)


def differing_positions(pair: MinimalPair) -> list[int]:
    good, bad = words(pair.good), words(pair.bad)
    assert len(good) == len(bad)
    return [i for i, (g, b) in enumerate(zip(good, bad, strict=True)) if g != b]


@pytest.fixture(scope="module")
def sample() -> list[str]:
    return list(sentences(SAMPLE_SIZE, seed=0))


@pytest.fixture(scope="module")
def pairs() -> list[MinimalPair]:
    return minimal_pairs()


# ---------------------------------------------------------------------- lexicon


def test_lexical_categories_are_disjoint_apart_from_that():
    for (first, a), (second, b) in itertools.combinations(LEXICON.items(), 2):
        expected = {"that"} if {first, second} == {"determiner", "relativizer"} else set()
        assert a & b == expected, (first, second)


def test_lexicon_is_modest_and_covers_both_verb_kinds():
    assert 40 <= len(NOUNS) <= 80
    assert 30 <= len(VERBS) <= 60
    assert sum(v.is_transitive for v in VERBS) >= 10
    assert sum(not v.is_transitive for v in VERBS) >= 10
    assert len(VOCABULARY) < 400


@pytest.mark.parametrize(
    ("singular", "plural"),
    [
        ("dog", "dogs"),
        ("box", "boxes"),
        ("bus", "buses"),
        ("baby", "babies"),
        ("toy", "toys"),
        ("child", "children"),
        ("mouse", "mice"),
        ("man", "men"),
        ("knife", "knives"),
    ],
)
def test_pluralize(singular: str, plural: str):
    assert pluralize(singular) == plural


@pytest.mark.parametrize(
    ("base", "third_singular"),
    [("run", "runs"), ("watch", "watches"), ("kiss", "kisses"), ("cry", "cries")]
    + [("play", "plays"), ("have", "has")],
)
def test_third_person_singular(base: str, third_singular: str):
    assert third_person_singular(base) == third_singular


def _noun(word: str) -> Noun:
    return next(n for n in NOUNS if n.singular == word)


@pytest.mark.parametrize(
    ("word", "number", "expected"),
    [
        ("boy", Number.SINGULAR, "himself"),
        ("girl", Number.SINGULAR, "herself"),
        ("dog", Number.SINGULAR, "itself"),
        ("child", Number.SINGULAR, None),
        ("girl", Number.PLURAL, "themselves"),
        ("child", Number.PLURAL, "themselves"),
    ],
)
def test_reflexive(word: str, number: Number, expected: str | None):
    assert reflexive(_noun(word), number) == expected


def test_reflexive_verbs_must_take_animate_objects():
    with pytest.raises(ValueError, match="animate"):
        Verb("carries", "carry", Selection.INANIMATE, reflexive=True)


# -------------------------------------------------------------------- sentences


def test_sentences_are_deterministic_by_seed():
    assert list(sentences(300, seed=3)) == list(sentences(300, seed=3))
    assert list(sentences(300, seed=3)) != list(sentences(300, seed=4))


def test_a_shorter_run_is_a_prefix_of_a_longer_one():
    assert list(sentences(50, seed=9)) == list(sentences(400, seed=9))[:50]


def test_sentences_yields_exactly_n_one_at_a_time():
    stream = sentences(3, seed=0)
    assert isinstance(stream, Iterator)
    assert [next(stream) for _ in range(3)] == list(sentences(3, seed=0))
    assert next(stream, None) is None
    assert list(sentences(0)) == []


def test_a_negative_count_is_rejected_at_the_call():
    with pytest.raises(ValueError, match="non-negative"):
        sentences(-1)


def test_sentences_follow_the_corpus_format(sample: list[str]):
    malformed = [s for s in sample if not SENTENCE_FORMAT.fullmatch(s)]
    assert malformed == []


def test_sentences_use_exactly_the_lexicon(sample: list[str]):
    used = set().union(*(words(s) for s in sample))
    assert used <= VOCABULARY
    assert used == VOCABULARY, "every word of the lexicon should be reachable"


def test_generated_sentences_are_recognised(sample: list[str]):
    rejected = [s for s in sample if not is_grammatical(s)]
    assert rejected == []


def test_subjects_are_balanced_between_singular_and_plural(sample: list[str]):
    counts = Counter(head_number(s) for s in sample)
    assert counts[Number.SINGULAR] >= 0.25 * len(sample)
    assert counts[Number.PLURAL] >= 0.25 * len(sample)


def test_corpus_is_rich_in_agreement_structures(sample: list[str]):
    def share(predicate) -> float:
        return sum(map(predicate, map(words, sample))) / len(sample)

    def has_relative_clause(ws: list[str]) -> bool:
        return any(w == RELATIVIZER and prev in NOUN_NUMBER for prev, w in itertools.pairwise(ws))

    assert share(lambda ws: any(w in PREPOSITIONS for w in ws)) >= 0.25
    assert share(has_relative_clause) >= 0.15
    assert share(lambda ws: ws[-1] in REFLEXIVES) >= 0.08
    assert share(lambda ws: not LEXICON["copula"].isdisjoint(ws)) >= 0.1


def test_sentence_length_and_variety(sample: list[str]):
    lengths = [len(words(s)) for s in sample]
    assert 7 <= sum(lengths) / len(lengths) <= 10
    assert len(set(sample)) >= 0.95 * len(sample)


# ------------------------------------------------------------------- recogniser


@pytest.mark.parametrize(
    "sentence",
    [
        "The dog runs.",
        "These dogs run.",
        "Two geese swim quickly.",
        "That teacher sleeps under the table.",
        "Every child has the red ball.",
        "The dogs that the cat sees run.",
        "The dog that chases the cats sleeps.",
        "The cat that that boy likes is happy.",
        "The key near the dogs is old.",
        "The keys near the dog were old.",
        "The girl sees herself.",
        "The boys near the girl see themselves.",
        "The children wash themselves.",
    ],
)
def test_recogniser_accepts(sentence: str):
    assert is_grammatical(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        # agreement
        "The dog run.",
        "The dogs runs.",
        "This dogs run.",
        "These dog runs.",
        "The dogs that the cat sees runs.",
        "The dogs that the cat see run.",
        "The dog that chase the cats sleeps.",
        "The key near the dogs are old.",
        "The girl sees himself.",
        "The boys see himself.",
        "The child sees himself.",
        # subcategorisation and selection
        "The dog sleeps the cat.",
        "The dog chases.",
        "The dog finds itself.",
        "The key runs.",
        "The key is hungry.",
        "The red dog runs.",
        "The dog holds the cat.",
        # format
        "The dog runs",
        "the dog runs.",
        "The Dog runs.",
        "The dog  runs.",
        "The dog runs .",
        " The dog runs.",
        "The dog runs. The cat sleeps.",
        "",
        ".",
    ],
)
def test_recogniser_rejects(sentence: str):
    assert not is_grammatical(sentence)


# ---------------------------------------------------------------- minimal pairs


def test_each_phenomenon_has_the_requested_number_of_pairs(pairs: list[MinimalPair]):
    assert len(PHENOMENA) >= 4
    assert Counter(p.phenomenon for p in pairs) == dict.fromkeys(PHENOMENA, 200)
    assert [p.phenomenon for p in pairs] == sorted(
        (p.phenomenon for p in pairs), key=PHENOMENA.index
    )


def test_pairs_are_unique(pairs: list[MinimalPair]):
    assert len({(p.good, p.bad) for p in pairs}) == len(pairs)


def test_pairs_differ_in_exactly_one_word(pairs: list[MinimalPair]):
    for pair in pairs:
        assert pair.good != pair.bad
        assert len(differing_positions(pair)) == 1, pair


def test_good_sentences_are_grammatical_and_bad_ones_are_not(pairs: list[MinimalPair]):
    for pair in pairs:
        assert is_grammatical(pair.good), pair
        assert not is_grammatical(pair.bad), pair


def test_the_changed_word_is_the_agreeing_word_flipped_in_number(pairs: list[MinimalPair]):
    for pair in pairs:
        (position,) = differing_positions(pair)
        good, bad = words(pair.good)[position], words(pair.bad)[position]
        if pair.phenomenon == "reflexive_agreement":
            assert {good, bad} <= set(REFLEXIVES), pair
            assert position == len(words(pair.good)) - 1, pair
        else:
            assert frozenset((good, bad)) in AGREEING_PAIRS, pair
        if pair.phenomenon == "determiner_noun_agreement":
            assert frozenset((good, bad)) in {
                frozenset((d.singular, d.plural)) for d in DEMONSTRATIVES
            }


def test_attractors_have_the_opposite_number_to_the_head(pairs: list[MinimalPair]):
    attracted = ("subject_verb_agreement_attractor", "subject_verb_agreement_relative_clause")
    for pair in (p for p in pairs if p.phenomenon in attracted):
        (position,) = differing_positions(pair)
        nouns = [NOUN_NUMBER[w] for w in words(pair.good)[:position] if w in NOUN_NUMBER]
        assert nouns == [nouns[0], nouns[0].flipped], pair
        between = words(pair.good)[:position]
        marker = PREPOSITIONS if pair.phenomenon.endswith("attractor") else (RELATIVIZER,)
        assert any(w in marker for w in between[2:]), pair


def test_plain_subject_verb_pairs_have_the_head_next_to_the_verb(pairs: list[MinimalPair]):
    for pair in (p for p in pairs if p.phenomenon == "subject_verb_agreement"):
        (position,) = differing_positions(pair)
        assert words(pair.good)[position - 1] in NOUN_NUMBER, pair


def test_minimal_pairs_are_deterministic_by_seed():
    assert minimal_pairs(20, seed=5) == minimal_pairs(20, seed=5)
    assert minimal_pairs(20, seed=5) != minimal_pairs(20, seed=6)


def test_fewer_pairs_per_phenomenon_are_a_prefix_of_more():
    few, more = minimal_pairs(5, seed=2), minimal_pairs(15, seed=2)
    for phenomenon in PHENOMENA:
        some = [p for p in few if p.phenomenon == phenomenon]
        assert some == [p for p in more if p.phenomenon == phenomenon][:5]


def test_minimal_pairs_edge_cases():
    assert minimal_pairs(0) == []
    with pytest.raises(ValueError, match="non-negative"):
        minimal_pairs(-1)
    with pytest.raises(ValueError, match="unknown phenomenon"):
        MinimalPair("The dog runs.", "The dog run.", "word_order")


# ----------------------------------------------------------------- write_corpus


def test_write_corpus_writes_one_sentence_per_line(tmp_path: Path):
    target = tmp_path / "corpus.txt"
    assert write_corpus(target, 500, seed=3) == target
    expected = "".join(f"{s}\n" for s in sentences(500, seed=3))
    assert target.read_bytes() == expected.encode("utf-8")
    assert len(target.read_text(encoding="utf-8").splitlines()) == 500
    assert list(tmp_path.iterdir()) == [target]


def test_write_corpus_accepts_a_string_and_creates_directories(tmp_path: Path):
    target = tmp_path / "a" / "b" / "corpus.txt"
    assert write_corpus(str(target), 10) == target
    assert len(target.read_text(encoding="utf-8").splitlines()) == 10


def test_write_corpus_replaces_an_existing_file(tmp_path: Path):
    target = tmp_path / "corpus.txt"
    target.write_text("old\n", encoding="utf-8")
    write_corpus(target, 20, seed=1)
    assert target.read_text(encoding="utf-8").splitlines() == list(sentences(20, seed=1))
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def failing(n: int, seed: int = 0) -> Iterator[str]:
        yield "The dog runs."
        raise RuntimeError("generation failed")

    target = tmp_path / "corpus.txt"
    target.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(grammar, "sentences", failing)
    with pytest.raises(RuntimeError, match="generation failed"):
        write_corpus(target, 5)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_bad_count_writes_nothing(tmp_path: Path):
    with pytest.raises(ValueError):
        write_corpus(tmp_path / "corpus.txt", -1)
    assert list(tmp_path.iterdir()) == []


def test_the_complete_file_is_synced_before_it_replaces_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", fd))
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
        events.append(("replace", Path(source).read_text(encoding="utf-8").count("\n")))
        assert Path(source).parent == tmp_path
        assert Path(destination) == target
        real_replace(source, destination)

    target = tmp_path / "corpus.txt"
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_corpus(target, 40)
    kinds = [kind for kind, _ in events]
    assert "replace" in kinds
    assert "fsync" in kinds[: kinds.index("replace")]
    assert events[kinds.index("replace")][1] == 40
