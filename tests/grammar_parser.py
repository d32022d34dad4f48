"""A recogniser for the demo grammar (:mod:`minidml.demo.grammar`): ``is_grammatical`` decides
whether a sentence is one that ``sentences`` can generate. Test code: it proves the
generator and the agreement suite's minimal pairs right."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TypeVar

from minidml.demo.grammar import (
    ADJECTIVES,
    ADVERBS,
    COPULAS,
    DETERMINERS,
    NOUNS,
    PREPOSITIONS,
    REFLEXIVES,
    RELATIVIZER,
    VERBS,
    Adjective,
    Noun,
    Number,
    Paradigm,
    Verb,
    reflexive,
)

_T = TypeVar("_T")
_P = TypeVar("_P", bound=Paradigm)


def _index(entries: Iterable[tuple[str, _T]]) -> Mapping[str, _T]:
    """A read-only word -> entry map; a word listed twice is an error in the lexicon."""
    index: dict[str, _T] = {}
    for word, entry in entries:
        if word in index:
            raise ValueError(f"word {word!r} appears twice in the lexicon")
        index[word] = entry
    return MappingProxyType(index)


def _inflections(paradigms: Iterable[_P]) -> Iterator[tuple[str, tuple[_P, Number]]]:
    """Each form of each paradigm, with the paradigm and the number it expresses."""
    for paradigm in paradigms:
        for number in Number:
            yield paradigm.form(number), (paradigm, number)


_NOUN_INDEX: Mapping[str, tuple[Noun, Number]] = _index(_inflections(NOUNS))
_VERB_INDEX: Mapping[str, tuple[Verb, Number]] = _index(_inflections(VERBS))
_COPULA_INDEX: Mapping[str, tuple[Paradigm, Number]] = _index(_inflections(COPULAS))
_ADJECTIVE_INDEX: Mapping[str, Adjective] = _index((a.word, a) for a in ADJECTIVES)
_PREPOSITION_SET = frozenset(PREPOSITIONS)
_ADVERB_SET = frozenset(ADVERBS)
_REFLEXIVE_SET = frozenset(REFLEXIVES)



# ---------------------------------------------------------------------- recogniser
#
# Each parser takes the sentence's tokens and a start position and returns the
# position after the phrase, or None when no such phrase starts there. Because
# lexical categories are disjoint, the next token always decides which rule
# applies, so no backtracking is needed.


def _token(tokens: tuple[str, ...], position: int) -> str:
    """The token at `position`, or "" past the end (which matches no lexical entry)."""
    return tokens[position] if position < len(tokens) else ""


def _parse_noun_phrase(tokens: tuple[str, ...], start: int) -> tuple[int, Noun, Number] | None:
    """Det [Adj] Noun, returning the end position, the noun and its number."""
    allowed_numbers = DETERMINERS.get(_token(tokens, start))
    if allowed_numbers is None:
        return None
    position = start + 1
    adjective = _ADJECTIVE_INDEX.get(_token(tokens, position))
    if adjective is not None:
        position += 1
    entry = _NOUN_INDEX.get(_token(tokens, position))
    if entry is None:
        return None
    noun, number = entry
    if number not in allowed_numbers:
        return None
    if adjective is not None and not adjective.selection.admits(noun.animate):
        return None
    return position + 1, noun, number


def _parse_prepositional_phrase(tokens: tuple[str, ...], start: int) -> int | None:
    if _token(tokens, start) not in _PREPOSITION_SET:
        return None
    phrase = _parse_noun_phrase(tokens, start + 1)
    return None if phrase is None else phrase[0]


def _parse_relative_clause(
    tokens: tuple[str, ...], start: int, head: Noun, head_number: Number
) -> int | None:
    """An object relative ("that the cat sees") or a subject relative ("that sees the cat")."""
    if _token(tokens, start) != RELATIVIZER:
        return None
    inner = _parse_noun_phrase(tokens, start + 1)
    if inner is not None:
        end, subject, subject_number = inner
        entry = _VERB_INDEX.get(_token(tokens, end))
        if entry is None:
            return None
        verb, verb_number = entry
        agrees = verb_number is subject_number
        return end + 1 if agrees and subject.animate and verb.takes_object(head.animate) else None
    entry = _VERB_INDEX.get(_token(tokens, start + 1))
    if entry is None:
        return None
    verb, verb_number = entry
    if verb_number is not head_number or not head.animate:
        return None
    obj = _parse_noun_phrase(tokens, start + 2)
    return obj[0] if obj is not None and verb.takes_object(obj[1].animate) else None


def _parse_subject(tokens: tuple[str, ...], start: int) -> tuple[int, Noun, Number] | None:
    """A noun phrase with an optional PP or relative clause; returns its head noun and number."""
    phrase = _parse_noun_phrase(tokens, start)
    if phrase is None:
        return None
    position: int | None
    position, noun, number = phrase
    following = _token(tokens, position)
    if following in _PREPOSITION_SET:
        position = _parse_prepositional_phrase(tokens, position)
    elif following == RELATIVIZER:
        position = _parse_relative_clause(tokens, position, noun, number)
    return None if position is None else (position, noun, number)


def _parse_predicate(
    tokens: tuple[str, ...], start: int, subject: Noun, number: Number
) -> int | None:
    """A predicate agreeing with a subject headed by `subject` in `number`."""
    word = _token(tokens, start)
    copula = _COPULA_INDEX.get(word)
    if copula is not None:
        adjective = _ADJECTIVE_INDEX.get(_token(tokens, start + 1))
        fits = adjective is not None and adjective.selection.admits(subject.animate)
        return start + 2 if copula[1] is number and fits else None
    entry = _VERB_INDEX.get(word)
    if entry is None or entry[1] is not number or not subject.animate:
        return None
    verb = entry[0]
    position = start + 1
    following = _token(tokens, position)
    if not verb.is_transitive:
        if following in _ADVERB_SET:
            return position + 1
        if following in _PREPOSITION_SET:
            return _parse_prepositional_phrase(tokens, position)
        return position
    if following in _REFLEXIVE_SET:
        return position + 1 if verb.reflexive and following == reflexive(subject, number) else None
    obj = _parse_noun_phrase(tokens, position)
    return obj[0] if obj is not None and verb.takes_object(obj[1].animate) else None


def _tokenize(sentence: str) -> tuple[str, ...] | None:
    """Lower-cased words of a sentence in the corpus format, or None if it breaks the format."""
    if not sentence.endswith("."):
        return None
    words = sentence[:-1].split(" ")
    first = words[0]
    if not first[:1].isupper():
        return None
    return (first[0].lower() + first[1:], *words[1:])


def is_grammatical(sentence: str) -> bool:
    """Whether `sentence` is one that `sentences` can generate, format included."""
    tokens = _tokenize(sentence)
    if tokens is None:
        return False
    subject = _parse_subject(tokens, 0)
    if subject is None:
        return False
    position, noun, number = subject
    return _parse_predicate(tokens, position, noun, number) == len(tokens)
