"""A small probabilistic English grammar: the built-in demo corpus and its evaluation suite.

The grammar generates English-like sentences that are dense in number agreement,
so that a tiny language model trained on them for a few minutes learns the
agreement rules, and a minimal-pair suite built from the same grammar can test
what it learned (a grammatical sentence against a minimally different
ungrammatical one, in the style of BLiMP).

Grammar (every word comes from the lexicon defined in this module)::

    Sentence  -> Subject Predicate "."
    Subject   -> NP [PP | Relative]
    NP        -> Det [Adj] Noun
    PP        -> Prep NP
    Relative  -> "that" NP TransVerb       object relative: "the dogs that the cat sees"
               | "that" TransVerb NP       subject relative: "the dog that chases the cats"
    Predicate -> IntransVerb [PP | Adverb]
               | TransVerb NP
               | TransVerb Reflexive
               | Copula Adj

Agreement in number:

* a determiner agrees with its noun ("this dog", "these dogs", "the dog(s)");
* the verb or copula of the predicate agrees with the head noun of the subject,
  never with the noun of a prepositional phrase or relative clause in between;
* the verb of a relative clause agrees with its own subject: the inner noun
  phrase of an object relative, the head noun of a subject relative;
* a reflexive agrees in number and gender with the subject's head noun
  ("the girl sees herself", "the dogs see themselves"); singular nouns of
  unspecified gender ("child", "teacher") take no reflexive.

Selection keeps sentences plausible: only animate nouns are subjects of verbs
(inanimate ones only of the copula), some verbs and adjectives take only
animate or only inanimate nouns, and only some verbs take a reflexive object.

Lexical categories are disjoint (apart from "that", a determiner and the
relativizer), which makes the grammar LL(1): the tests decide membership with
a deterministic recursive-descent parser (``tests/grammar_parser.py``) that
accepts exactly the sentences `sentences` can generate.
"""

from __future__ import annotations

import os
import random
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import partial
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar

from .._io import atomic_open

__all__ = [
    "ADJECTIVES",
    "ADVERBS",
    "COPULAS",
    "DEMONSTRATIVES",
    "DETERMINERS",
    "LEXICON",
    "NOUNS",
    "PHENOMENA",
    "PREPOSITIONS",
    "REFLEXIVES",
    "RELATIVIZER",
    "VERBS",
    "VOCABULARY",
    "Adjective",
    "Gender",
    "MinimalPair",
    "Noun",
    "Number",
    "Paradigm",
    "Selection",
    "Verb",
    "minimal_pairs",
    "pluralize",
    "reflexive",
    "sentences",
    "third_person_singular",
    "write_corpus",
]

PHENOMENA: tuple[str, ...] = (
    "determiner_noun_agreement",
    "subject_verb_agreement",
    "subject_verb_agreement_attractor",
    "subject_verb_agreement_relative_clause",
    "reflexive_agreement",
)
"""The agreement dependencies tested by `minimal_pairs`, in the order it returns them."""


# --------------------------------------------------------------------------- types


class Number(Enum):
    """Grammatical number."""

    SINGULAR = "singular"
    PLURAL = "plural"

    @property
    def flipped(self) -> Number:
        """The other number."""
        return Number.PLURAL if self is Number.SINGULAR else Number.SINGULAR


class Gender(Enum):
    """Gender of a noun, as far as a singular reflexive pronoun needs it."""

    MASCULINE = "masculine"
    FEMININE = "feminine"
    NEUTER = "neuter"


class Selection(Enum):
    """Which nouns a verb accepts as object, or an adjective as the noun it describes."""

    ANY = "any"
    ANIMATE = "animate"
    INANIMATE = "inanimate"

    def admits(self, animate: bool) -> bool:
        """Whether a noun that is (or is not) `animate` satisfies this restriction."""
        if self is Selection.ANY:
            return True
        return animate == (self is Selection.ANIMATE)


@dataclass(frozen=True)
class Paradigm:
    """A word that inflects for number: a noun, a verb, a copula or a demonstrative."""

    singular: str
    plural: str

    def form(self, number: Number) -> str:
        """The form of the word for `number`."""
        return self.singular if number is Number.SINGULAR else self.plural


@dataclass(frozen=True)
class Noun(Paradigm):
    """A count noun. `gender` is None for people of unspecified gender ("child")."""

    animate: bool
    gender: Gender | None


@dataclass(frozen=True)
class Verb(Paradigm):
    """A present-tense verb: `singular` is the third-person singular, `plural` the base form.

    `object_selection` is None for intransitive verbs; `reflexive` says whether
    the verb takes a reflexive pronoun as its object.
    """

    object_selection: Selection | None
    reflexive: bool = False

    def __post_init__(self) -> None:
        if self.reflexive and self.object_selection not in (Selection.ANY, Selection.ANIMATE):
            raise ValueError(f"reflexive verb {self.base!r} must accept animate objects")

    @property
    def base(self) -> str:
        """The base form, which is also the plural."""
        return self.plural

    @property
    def is_transitive(self) -> bool:
        """Whether the verb takes an object."""
        return self.object_selection is not None

    def takes_object(self, animate: bool) -> bool:
        """Whether a noun that is (or is not) `animate` can be the object of this verb."""
        return self.object_selection is not None and self.object_selection.admits(animate)


@dataclass(frozen=True)
class Adjective:
    """An adjective and the nouns it can describe."""

    word: str
    selection: Selection


@dataclass(frozen=True)
class MinimalPair:
    """A grammatical sentence and an ungrammatical one that differs from it in one word."""

    good: str
    bad: str
    phenomenon: str

    def __post_init__(self) -> None:
        if self.phenomenon not in PHENOMENA:
            raise ValueError(f"unknown phenomenon {self.phenomenon!r}; expected one of {PHENOMENA}")


# ---------------------------------------------------------------------- morphology

_IRREGULAR_PLURALS: Mapping[str, str] = MappingProxyType(
    {
        "child": "children",
        "goose": "geese",
        "knife": "knives",
        "leaf": "leaves",
        "man": "men",
        "mouse": "mice",
        "person": "people",
        "wife": "wives",
        "wolf": "wolves",
        "woman": "women",
    }
)
_IRREGULAR_THIRD_PERSON_SINGULARS: Mapping[str, str] = MappingProxyType({"have": "has"})

_SINGULAR_REFLEXIVES: Mapping[Gender, str] = MappingProxyType(
    {Gender.MASCULINE: "himself", Gender.FEMININE: "herself", Gender.NEUTER: "itself"}
)
_PLURAL_REFLEXIVE = "themselves"


def _add_s(word: str) -> str:
    """Attach the English -s suffix with its regular spelling changes ("box" -> "boxes")."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def pluralize(noun: str) -> str:
    """The plural of a singular noun in the lexicon ("dog" -> "dogs", "mouse" -> "mice")."""
    return _IRREGULAR_PLURALS.get(noun) or _add_s(noun)


def third_person_singular(verb: str) -> str:
    """The third-person singular present of a base verb ("cry" -> "cries", "have" -> "has")."""
    return _IRREGULAR_THIRD_PERSON_SINGULARS.get(verb) or _add_s(verb)


def reflexive(noun: Noun, number: Number) -> str | None:
    """The reflexive pronoun bound by `noun` in `number`, or None if there is none."""
    if number is Number.PLURAL:
        return _PLURAL_REFLEXIVE
    return None if noun.gender is None else _SINGULAR_REFLEXIVES[noun.gender]


# ------------------------------------------------------------------------- lexicon


def _nouns(words: Iterable[str], *, animate: bool, gender: Gender | None) -> tuple[Noun, ...]:
    return tuple(Noun(word, pluralize(word), animate, gender) for word in words)


def _verbs(
    bases: Iterable[str], object_selection: Selection | None, *, reflexive: bool = False
) -> tuple[Verb, ...]:
    return tuple(
        Verb(third_person_singular(base), base, object_selection, reflexive) for base in bases
    )


def _adjectives(words: Iterable[str], selection: Selection) -> tuple[Adjective, ...]:
    return tuple(Adjective(word, selection) for word in words)


NOUNS: tuple[Noun, ...] = (
    *_nouns(
        ("boy", "man", "king", "prince", "brother", "father", "uncle", "son"),
        animate=True,
        gender=Gender.MASCULINE,
    ),
    *_nouns(
        ("girl", "woman", "queen", "princess", "sister", "mother", "aunt", "daughter", "wife"),
        animate=True,
        gender=Gender.FEMININE,
    ),
    *_nouns(
        ("child", "baby", "person", "teacher", "doctor", "student", "farmer", "friend"),
        animate=True,
        gender=None,
    ),
    *_nouns(
        ("dog", "cat", "mouse", "goose", "wolf", "fox")
        + ("horse", "bird", "rabbit", "duck", "cow", "frog"),
        animate=True,
        gender=Gender.NEUTER,
    ),
    *_nouns(
        ("key", "book", "box", "ball", "cup", "chair", "table", "door", "window", "bag", "toy")
        + ("hat", "coat", "shoe", "letter", "picture", "bottle", "knife", "leaf", "stone")
        + ("car", "boat", "bus"),
        animate=False,
        gender=Gender.NEUTER,
    ),
)

VERBS: tuple[Verb, ...] = (
    *_verbs(
        ("run", "sleep", "sing", "dance", "laugh", "smile", "cry", "wait", "swim", "jump", "walk")
        + ("talk", "rest", "shout", "play", "hide", "sit", "listen", "hurry", "worry", "yawn")
        + ("arrive",),
        None,
    ),
    *_verbs(
        ("see", "like", "love", "hate", "watch", "wash", "touch"), Selection.ANY, reflexive=True
    ),
    *_verbs(("find", "remember", "notice", "push", "want", "need"), Selection.ANY),
    *_verbs(("help", "teach", "hug"), Selection.ANIMATE, reflexive=True),
    *_verbs(
        ("chase", "meet", "visit", "follow", "greet", "thank", "kiss", "call"), Selection.ANIMATE
    ),
    *_verbs(("carry", "hold", "drop", "bring", "lose", "have"), Selection.INANIMATE),
)

ADJECTIVES: tuple[Adjective, ...] = (
    *_adjectives(
        ("old", "new", "big", "small", "dirty", "clean", "wet", "heavy"),
        Selection.ANY,
    ),
    *_adjectives(("red", "blue", "green", "broken", "empty"), Selection.INANIMATE),
    *_adjectives(
        ("happy", "sad", "hungry", "tired", "angry", "brave", "clever", "lazy", "young")
        + ("friendly", "busy"),
        Selection.ANIMATE,
    ),
)

_EITHER = frozenset(Number)
_SINGULAR = frozenset({Number.SINGULAR})
_PLURAL = frozenset({Number.PLURAL})

DETERMINERS: Mapping[str, frozenset[Number]] = MappingProxyType(
    {
        "the": _EITHER,
        "my": _EITHER,
        "our": _EITHER,
        "your": _EITHER,
        "this": _SINGULAR,
        "that": _SINGULAR,
        "every": _SINGULAR,
        "each": _SINGULAR,
        "these": _PLURAL,
        "those": _PLURAL,
        "many": _PLURAL,
        "some": _PLURAL,
        "several": _PLURAL,
        "two": _PLURAL,
        "three": _PLURAL,
    }
)
"""Each determiner and the numbers of the nouns it combines with."""

DEMONSTRATIVES: tuple[Paradigm, ...] = (Paradigm("this", "these"), Paradigm("that", "those"))
COPULAS: tuple[Paradigm, ...] = (Paradigm("is", "are"), Paradigm("was", "were"))
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "under", "above", "with", "without")
ADVERBS: tuple[str, ...] = (
    "quickly",
    "slowly",
    "quietly",
    "loudly",
    "happily",
    "again",
    "today",
    "outside",
)
REFLEXIVES: tuple[str, ...] = (*_SINGULAR_REFLEXIVES.values(), _PLURAL_REFLEXIVE)
RELATIVIZER = "that"


def _forms(paradigms: Iterable[Paradigm]) -> frozenset[str]:
    return frozenset(p.form(number) for p in paradigms for number in Number)


LEXICON: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "determiner": frozenset(DETERMINERS),
        "adjective": frozenset(a.word for a in ADJECTIVES),
        "noun": _forms(NOUNS),
        "verb": _forms(VERBS),
        "copula": _forms(COPULAS),
        "preposition": frozenset(PREPOSITIONS),
        "adverb": frozenset(ADVERBS),
        "reflexive": frozenset(REFLEXIVES),
        "relativizer": frozenset({RELATIVIZER}),
    }
)
"""The words of each lexical category, in lower case."""

VOCABULARY: frozenset[str] = frozenset().union(*LEXICON.values())
"""Every word the grammar uses, in lower case (sentences capitalise their first word)."""


# ------------------------------------------------------------------ lookup tables

_T = TypeVar("_T")
_P = TypeVar("_P", bound=Paradigm)


# Sampling pools; tuples, so that choices do not depend on string hashing.
_ANIMATE_NOUNS = tuple(n for n in NOUNS if n.animate)
_GENDERED_ANIMATE_NOUNS = tuple(n for n in _ANIMATE_NOUNS if n.gender is not None)
_NOUNS_ADMITTED_BY: Mapping[Selection, tuple[Noun, ...]] = MappingProxyType(
    {s: tuple(n for n in NOUNS if s.admits(n.animate)) for s in Selection}
)
_INTRANSITIVE_VERBS = tuple(v for v in VERBS if not v.is_transitive)
_TRANSITIVE_VERBS = tuple(v for v in VERBS if v.is_transitive)
_REFLEXIVE_VERBS = tuple(v for v in VERBS if v.reflexive)
_TRANSITIVE_VERBS_BY_OBJECT_ANIMACY: Mapping[bool, tuple[Verb, ...]] = MappingProxyType(
    {
        animate: tuple(v for v in _TRANSITIVE_VERBS if v.takes_object(animate))
        for animate in (True, False)
    }
)
_ADJECTIVES_BY_NOUN_ANIMACY: Mapping[bool, tuple[Adjective, ...]] = MappingProxyType(
    {
        animate: tuple(a for a in ADJECTIVES if a.selection.admits(animate))
        for animate in (True, False)
    }
)


def _determiners_besides_the(number: Number) -> tuple[str, ...]:
    return tuple(d for d, numbers in DETERMINERS.items() if number in numbers and d != "the")


_SINGULAR_DETERMINERS_BESIDES_THE = _determiners_besides_the(Number.SINGULAR)
_PLURAL_DETERMINERS_BESIDES_THE = _determiners_besides_the(Number.PLURAL)


# ---------------------------------------------------------------------- generation


class _PredicateKind(Enum):
    """The four predicate rules of the grammar."""

    INTRANSITIVE = "intransitive"
    TRANSITIVE = "transitive"
    COPULAR = "copular"
    REFLEXIVE = "reflexive"


class _Modifier(Enum):
    """What may follow the noun phrase of a subject."""

    NONE = "none"
    PREPOSITIONAL = "prepositional"
    OBJECT_RELATIVE = "object_relative"
    SUBJECT_RELATIVE = "subject_relative"


@dataclass(frozen=True)
class _Menu(Generic[_T]):
    """Options with cumulative weights, sampled with a single uniform draw."""

    options: tuple[_T, ...]
    cumulative_weights: tuple[float, ...]

    @classmethod
    def of(cls, weights: Mapping[_T, float]) -> _Menu[_T]:
        return cls(tuple(weights), tuple(accumulate(weights.values())))

    def pick(self, rng: random.Random) -> _T:
        total = self.cumulative_weights[-1]
        return self.options[bisect(self.cumulative_weights, rng.random() * total)]


_PREDICATE_KIND_MENU = _Menu.of(
    {
        _PredicateKind.INTRANSITIVE: 0.30,
        _PredicateKind.TRANSITIVE: 0.35,
        _PredicateKind.COPULAR: 0.20,
        _PredicateKind.REFLEXIVE: 0.15,
    }
)
_MODIFIER_WEIGHTS: Mapping[_Modifier, float] = MappingProxyType(
    {
        _Modifier.NONE: 0.35,
        _Modifier.PREPOSITIONAL: 0.35,
        _Modifier.OBJECT_RELATIVE: 0.15,
        _Modifier.SUBJECT_RELATIVE: 0.15,
    }
)

_ModifierMenus = Mapping[bool, _Menu[_Modifier]]
"""Menus of post-nominal modifiers for an animate (True) or inanimate (False) head noun."""


def _modifier_menu(allowed: Iterable[_Modifier], head_animate: bool) -> _Menu[_Modifier]:
    """The `allowed` modifiers a head can take: the head of a subject relative is its subject,
    so it must be animate."""
    usable = (m for m in allowed if head_animate or m is not _Modifier.SUBJECT_RELATIVE)
    return _Menu.of({m: _MODIFIER_WEIGHTS[m] for m in usable})


def _modifier_menus(*allowed: _Modifier) -> _ModifierMenus:
    return MappingProxyType(
        {animate: _modifier_menu(allowed, animate) for animate in (True, False)}
    )


_ANY_MODIFIER = _modifier_menus(*_Modifier)
_NO_MODIFIER = _modifier_menus(_Modifier.NONE)
_PREPOSITIONAL_MODIFIER = _modifier_menus(_Modifier.PREPOSITIONAL)
_RELATIVE_MODIFIER = _modifier_menus(_Modifier.OBJECT_RELATIVE, _Modifier.SUBJECT_RELATIVE)

_P_PLURAL = 0.5
_P_THE = 0.45
_P_ADJECTIVE = 0.3
_P_PAST_COPULA = 0.25
_P_INTRANSITIVE_PP = 0.45
_P_INTRANSITIVE_ADVERB = 0.3


class _NounPhrase(NamedTuple):
    """A noun phrase with its head noun and the head's number."""

    words: tuple[str, ...]
    noun: Noun
    number: Number


class _Predicate(NamedTuple):
    """A predicate: the verb or copula agreeing with the subject, and what follows it."""

    head: Paradigm
    complement: tuple[str, ...]

    def words(self, number: Number) -> tuple[str, ...]:
        return (self.head.form(number), *self.complement)


class _Clause(NamedTuple):
    """A whole sentence, before rendering."""

    subject: _NounPhrase
    predicate: _Predicate

    @property
    def words(self) -> tuple[str, ...]:
        return self.subject.words + self.predicate.words(self.subject.number)

    @property
    def verb_index(self) -> int:
        """Position of the word that agrees with the subject."""
        return len(self.subject.words)


def _object_pool(verb: Verb) -> tuple[Noun, ...]:
    """The nouns a transitive verb takes as objects."""
    if verb.object_selection is None:
        raise ValueError(f"{verb.base!r} takes no object")
    return _NOUNS_ADMITTED_BY[verb.object_selection]


def _sample_number(rng: random.Random) -> Number:
    return Number.PLURAL if rng.random() < _P_PLURAL else Number.SINGULAR


def _sample_determiner(rng: random.Random, number: Number) -> str:
    if rng.random() < _P_THE:
        return "the"
    if number is Number.SINGULAR:
        return rng.choice(_SINGULAR_DETERMINERS_BESIDES_THE)
    return rng.choice(_PLURAL_DETERMINERS_BESIDES_THE)


def _sample_noun_phrase(
    rng: random.Random, pool: tuple[Noun, ...], number: Number, determiner: str | None = None
) -> _NounPhrase:
    """Det [Adj] Noun, with the noun drawn from `pool`."""
    noun = rng.choice(pool)
    words = [determiner or _sample_determiner(rng, number)]
    if rng.random() < _P_ADJECTIVE:
        words.append(rng.choice(_ADJECTIVES_BY_NOUN_ANIMACY[noun.animate]).word)
    words.append(noun.form(number))
    return _NounPhrase(tuple(words), noun, number)


def _sample_prepositional_phrase(rng: random.Random, number: Number) -> tuple[str, ...]:
    return (rng.choice(PREPOSITIONS), *_sample_noun_phrase(rng, NOUNS, number).words)


def _sample_modifier_words(
    rng: random.Random, modifier: _Modifier, head: _NounPhrase, inner_number: Number
) -> tuple[str, ...]:
    """The words of a post-nominal modifier whose own noun phrase has `inner_number`."""
    match modifier:
        case _Modifier.NONE:
            return ()
        case _Modifier.PREPOSITIONAL:
            return _sample_prepositional_phrase(rng, inner_number)
        case _Modifier.OBJECT_RELATIVE:
            inner = _sample_noun_phrase(rng, _ANIMATE_NOUNS, inner_number)
            verb = rng.choice(_TRANSITIVE_VERBS_BY_OBJECT_ANIMACY[head.noun.animate])
            return (RELATIVIZER, *inner.words, verb.form(inner_number))
        case _Modifier.SUBJECT_RELATIVE:
            verb = rng.choice(_TRANSITIVE_VERBS)
            inner = _sample_noun_phrase(rng, _object_pool(verb), inner_number)
            return (RELATIVIZER, verb.form(head.number), *inner.words)


def _sample_subject(
    rng: random.Random,
    pool: tuple[Noun, ...],
    number: Number,
    modifiers: _ModifierMenus = _ANY_MODIFIER,
    mismatched: bool = False,
) -> _NounPhrase:
    """A subject: a noun phrase, maybe followed by a PP or a relative clause.

    With `mismatched`, the noun phrase inside the modifier has the opposite
    number to the head (an agreement attractor); otherwise its number is random.
    """
    head = _sample_noun_phrase(rng, pool, number)
    modifier = modifiers[head.noun.animate].pick(rng)
    if modifier is _Modifier.NONE:
        return head
    inner_number = number.flipped if mismatched else _sample_number(rng)
    return head._replace(
        words=head.words + _sample_modifier_words(rng, modifier, head, inner_number)
    )


def _subject_pool(kind: _PredicateKind, number: Number) -> tuple[Noun, ...]:
    """The nouns that can head the subject of a predicate of `kind`."""
    if kind is _PredicateKind.COPULAR:
        return NOUNS
    if kind is _PredicateKind.REFLEXIVE and number is Number.SINGULAR:
        return _GENDERED_ANIMATE_NOUNS
    return _ANIMATE_NOUNS


def _sample_intransitive_predicate(rng: random.Random) -> _Predicate:
    verb = rng.choice(_INTRANSITIVE_VERBS)
    draw = rng.random()
    if draw < _P_INTRANSITIVE_PP:
        return _Predicate(verb, _sample_prepositional_phrase(rng, _sample_number(rng)))
    if draw < _P_INTRANSITIVE_PP + _P_INTRANSITIVE_ADVERB:
        return _Predicate(verb, (rng.choice(ADVERBS),))
    return _Predicate(verb, ())


def _sample_transitive_predicate(
    rng: random.Random, object_number: Number, determiner: str | None = None
) -> _Predicate:
    verb = rng.choice(_TRANSITIVE_VERBS)
    obj = _sample_noun_phrase(rng, _object_pool(verb), object_number, determiner)
    return _Predicate(verb, obj.words)


def _sample_copular_predicate(rng: random.Random, subject: Noun) -> _Predicate:
    copula = COPULAS[1] if rng.random() < _P_PAST_COPULA else COPULAS[0]
    return _Predicate(copula, (rng.choice(_ADJECTIVES_BY_NOUN_ANIMACY[subject.animate]).word,))


def _required_reflexive(noun: Noun, number: Number) -> str:
    pronoun = reflexive(noun, number)
    if pronoun is None:
        raise ValueError(f"{noun.form(number)!r} cannot bind a reflexive")
    return pronoun


def _sample_reflexive_predicate(rng: random.Random, subject: _NounPhrase) -> _Predicate:
    verb = rng.choice(_REFLEXIVE_VERBS)
    return _Predicate(verb, (_required_reflexive(subject.noun, subject.number),))


def _sample_predicate(rng: random.Random, kind: _PredicateKind, subject: _NounPhrase) -> _Predicate:
    match kind:
        case _PredicateKind.INTRANSITIVE:
            return _sample_intransitive_predicate(rng)
        case _PredicateKind.TRANSITIVE:
            return _sample_transitive_predicate(rng, _sample_number(rng))
        case _PredicateKind.COPULAR:
            return _sample_copular_predicate(rng, subject.noun)
        case _PredicateKind.REFLEXIVE:
            return _sample_reflexive_predicate(rng, subject)


def _sample_predicate_kind(rng: random.Random) -> _PredicateKind:
    return _PREDICATE_KIND_MENU.pick(rng)


def _sample_clause(
    rng: random.Random,
    kind: _PredicateKind,
    modifiers: _ModifierMenus = _ANY_MODIFIER,
    mismatched: bool = False,
    pool: tuple[Noun, ...] | None = None,
) -> _Clause:
    """A sentence's words as a subject and a predicate of `kind`.

    `pool` narrows the subject's head nouns; it must be a subset of those
    `_subject_pool` allows, so the clause stays one `sentences` can produce.
    """
    number = _sample_number(rng)
    head_pool = pool or _subject_pool(kind, number)
    subject = _sample_subject(rng, head_pool, number, modifiers, mismatched)
    return _Clause(subject, _sample_predicate(rng, kind, subject))


def _render(words: tuple[str, ...]) -> str:
    """Join words into a sentence: capitalised first letter, single spaces, final period."""
    text = " ".join(words)
    return f"{text[0].upper()}{text[1:]}."


def _generate(n: int, rng: random.Random) -> Iterator[str]:
    for _ in range(n):
        yield _render(_sample_clause(rng, _sample_predicate_kind(rng)).words)


def sentences(n: int, seed: int = 0) -> Iterator[str]:
    """Yield `n` grammatical sentences, one per call to next().

    The output is a function of (n, seed) alone; sentences(m, seed) is a prefix
    of sentences(n, seed) for m <= n.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return _generate(n, random.Random(seed))


def write_corpus(path: str | os.PathLike[str], n_sentences: int = 60_000, seed: int = 0) -> Path:
    """Write `sentences(n_sentences, seed)` to `path`, one per line, and return the path.

    The file is UTF-8 with '\\n' line endings. It is written atomically: the
    text goes to a temporary file in the same directory, which is flushed,
    synced and then renamed over `path`, so an existing file is only ever
    replaced by a complete corpus. Missing parent directories are created.
    """
    target = Path(path)
    lines = sentences(n_sentences, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as handle:
        handle.writelines(f"{line}\n".encode() for line in lines)
    return target


# ------------------------------------------------------------------- minimal pairs


class _Draft(NamedTuple):
    """A grammatical sentence's words and the one-word change that breaks agreement."""

    words: tuple[str, ...]
    position: int  # of the word to change (not "index", which would hide tuple.index)
    replacement: str

    def to_pair(self, phenomenon: str) -> MinimalPair:
        bad = self.words[: self.position] + (self.replacement,) + self.words[self.position + 1 :]
        return MinimalPair(_render(self.words), _render(bad), phenomenon)


def _determiner_noun_draft(rng: random.Random) -> _Draft:
    """A demonstrative before a transitive verb's object, flipped in number."""
    number = _sample_number(rng)
    subject = _sample_subject(rng, _subject_pool(_PredicateKind.TRANSITIVE, number), number)
    demonstrative = rng.choice(DEMONSTRATIVES)
    object_number = _sample_number(rng)
    predicate = _sample_transitive_predicate(rng, object_number, demonstrative.form(object_number))
    clause = _Clause(subject, predicate)
    return _Draft(clause.words, clause.verb_index + 1, demonstrative.form(object_number.flipped))


def _subject_verb_draft(rng: random.Random, modifiers: _ModifierMenus, mismatched: bool) -> _Draft:
    """The verb or copula agreeing with the subject, flipped in number."""
    clause = _sample_clause(rng, _sample_predicate_kind(rng), modifiers, mismatched)
    wrong = clause.predicate.head.form(clause.subject.number.flipped)
    return _Draft(clause.words, clause.verb_index, wrong)


def _reflexive_draft(rng: random.Random) -> _Draft:
    """The reflexive object, flipped in number; heads of unspecified gender are avoided."""
    clause = _sample_clause(rng, _PredicateKind.REFLEXIVE, pool=_GENDERED_ANIMATE_NOUNS)
    subject = clause.subject
    wrong = _required_reflexive(subject.noun, subject.number.flipped)
    return _Draft(clause.words, len(clause.words) - 1, wrong)


_DRAFTERS: Mapping[str, Callable[[random.Random], _Draft]] = MappingProxyType(
    {
        "determiner_noun_agreement": _determiner_noun_draft,
        "subject_verb_agreement": partial(
            _subject_verb_draft, modifiers=_NO_MODIFIER, mismatched=False
        ),
        "subject_verb_agreement_attractor": partial(
            _subject_verb_draft, modifiers=_PREPOSITIONAL_MODIFIER, mismatched=True
        ),
        "subject_verb_agreement_relative_clause": partial(
            _subject_verb_draft,
            modifiers=_RELATIVE_MODIFIER,
            mismatched=True,
        ),
        "reflexive_agreement": _reflexive_draft,
    }
)
_MAX_DRAWS_PER_PAIR = 100


def _distinct_pairs(phenomenon: str, rng: random.Random, count: int) -> list[MinimalPair]:
    """`count` different pairs for `phenomenon`, in the order they were first drawn."""
    draft = _DRAFTERS[phenomenon]
    found: dict[MinimalPair, None] = {}
    for _ in range(count * _MAX_DRAWS_PER_PAIR):
        if len(found) == count:
            break
        found.setdefault(draft(rng).to_pair(phenomenon))
    if len(found) < count:
        raise RuntimeError(f"could only draw {len(found)} distinct {phenomenon} pairs")
    return list(found)


def minimal_pairs(n_per_phenomenon: int = 200, seed: int = 1) -> list[MinimalPair]:
    """Grammatical/ungrammatical sentence pairs, `n_per_phenomenon` for each of PHENOMENA.

    The bad sentence differs from the good one in exactly one word: the word
    that agrees in number (determiner, verb, copula or reflexive) is replaced
    by its form for the other number. The good sentence is one `sentences`
    can generate and the bad one never is. Pairs come grouped by phenomenon in
    the order of PHENOMENA, without duplicates; each phenomenon draws from its
    own generator seeded by (seed, phenomenon), so the result is deterministic.
    """
    if n_per_phenomenon < 0:
        raise ValueError(f"n_per_phenomenon must be non-negative, got {n_per_phenomenon}")
    pairs: list[MinimalPair] = []
    for phenomenon in PHENOMENA:
        rng = random.Random(f"{seed}/{phenomenon}")
        pairs.extend(_distinct_pairs(phenomenon, rng, n_per_phenomenon))
    return pairs
