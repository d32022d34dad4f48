"""Words as BabyLM counts them, and the limits of its tracks.

**Words** are the whitespace-separated words of the training text (``str.split``), counted
with repeats (:func:`minidml.data.count_words`). A run reads tokens, so it converts with its
corpus's own ratio: after ``s`` steps a model has seen ``⌊s · tokens_per_step · W / T⌋``
words, W being the corpus's words and T its tokens (BOS and EOS included), so one pass over
the corpus's token stream is exactly its W words. Every student of a run reads the same
tokens: the run's *total* is K times one model's words, plus, for ``kd``, what its teachers'
runs read to train them.

**Tracks** (the BabyLM 2025 and 2026 rules): ``strict-small`` allows a corpus of at most 10M
words and ``strict`` 100M, and at most 10 epochs over it. The FAQ adds that "the sum of all
text seen by all training can not surpass the amount of text allowed", which this module
reads as 10 epochs of the track's words: 100M words read for strict-small, 1B for strict.
``words_cap = "total"`` (the default) counts every model's reading against that amount (the
K students of a mutual-learning run each read their words; a kd run's teachers' training
counts too); ``"per-model"`` holds each model to it on its own, the reading of the paper's
"equal data", stated as such in the run's ``config.json``.

**Checkpoints by words** (:func:`track_milestones`): at 1M, 2M, … 10M words seen, then
every 10M up to 100M, then every 100M up to 1B, as far as the track's amount; each is the
first step whose words seen reach the count, or the run's last step where only the step
after it would (:meth:`WordCount.reach_step`: a run held to 10 epochs stops a fraction of
a step short of 100M words, and that step is its ``chck_100M``), named as the rules name
the revisions (:func:`revision_name`: ``chck_1M``, … ``chck_10M``, ``chck_20M``, …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .counts import format_count
from .errors import MinidmlError

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import Batches

TRACK_WORDS = {"strict-small": 10_000_000, "strict": 100_000_000}
TRACKS = tuple(TRACK_WORDS)
MAX_EPOCHS = 10
WORDS_CAPS = ("total", "per-model")
_M = 1_000_000


def track_milestones(track: str) -> tuple[int, ...]:
    """The word counts a track checkpoints at: 1M…10M, then every 10M to 100M, then every
    100M to 1B, up to 10 epochs of the track's words."""
    limit = MAX_EPOCHS * TRACK_WORDS[track]
    counts = [*range(_M, 10 * _M + 1, _M), *range(20 * _M, 100 * _M + 1, 10 * _M),
              *range(200 * _M, 1000 * _M + 1, 100 * _M)]
    return tuple(c for c in counts if c <= limit)


def revision_name(words: int) -> str:
    """The revision a checkpoint at ``words`` words seen is published as: ``chck_10M``."""
    for unit, suffix in ((_M, "M"), (1000, "k")):
        if words % unit == 0:
            return f"chck_{words // unit}{suffix}"
    return f"chck_{words}"


def format_words(value: float) -> str:
    """A count of words as the curves' axes write it (:func:`minidml.counts.format_count`):
    1000000 → "1M", 20000 → "20k", 2500000 → "2.5M", 999999 → "1M"."""
    return format_count(value)


@dataclass(frozen=True)
class WordCount:
    """How a run's steps turn into words: its corpus's words and tokens, the tokens of a
    step and the models reading them."""

    corpus_words: int
    corpus_tokens: int
    tokens_per_step: int
    models: int = 1  # the students, each reading every step's tokens
    teacher_words: int = 0  # what the teachers' runs read to train them (kd)

    @classmethod
    def of(cls, config: TrainConfig, batches: Batches, teacher_words: int = 0
           ) -> WordCount | None:
        """The count of a run of ``config`` on ``batches`` (None: the corpus's words are
        not known)."""
        if batches.corpus_words is None:
            return None
        return cls(batches.corpus_words, len(batches.tokens), config.tokens_per_step,
                   config.n_students, teacher_words)

    def per_model(self, step: int) -> int:
        """Words one model has seen after ``step`` steps."""
        return step * self.tokens_per_step * self.corpus_words // self.corpus_tokens

    def total(self, step: int) -> int:
        """Words every model of the run (and its teachers' training) has read by ``step``."""
        return self.models * self.per_model(step) + self.teacher_words

    def first_step(self, words: int) -> int:
        """The first step at which one model has seen ``words`` words."""
        return max(1, -(-words * self.corpus_tokens
                        // (self.tokens_per_step * self.corpus_words)))

    def last_step(self, words: int, per_model: bool = True) -> int:
        """The last step at which one model's (or, with ``per_model`` False, the run's
        total) reading stays within ``words``."""
        if not per_model:
            words = (words - self.teacher_words) // self.models
        return max(0, words) * self.corpus_tokens // (self.tokens_per_step * self.corpus_words)

    def reach_step(self, words: int, last: int) -> int | None:
        """The step of a run ending at step ``last`` that checkpoints ``words`` words seen:
        the first that reaches them, or ``last`` where only the step after it would (a run
        held to an amount stops within a step below it, its words rounded down: its last
        step is the checkpoint of that amount, "about" so many words as the rules name
        them); None where the run stops short of them."""
        step = self.first_step(words)
        return step if step <= last else last if step == last + 1 else None

    def milestone_steps(self, milestones: Iterable[int], last: int) -> dict[int, list[int]]:
        """For each step of a run ending at ``last`` that checkpoints some of ``milestones``
        (:meth:`reach_step`), those counts."""
        out: dict[int, list[int]] = {}
        for words in sorted(set(milestones)):
            step = self.reach_step(words, last)
            if step is not None:
                out.setdefault(step, []).append(words)
        return out


def step_limit(track: str | None, cap: str, count: WordCount) -> int | None:
    """The most steps a track allows this run: 10 epochs of its corpus per model, and the
    track's amount of text read, in total or per model (``cap``); None without a track."""
    if track is None:
        return None
    epochs = count.last_step(MAX_EPOCHS * count.corpus_words)
    amount = count.last_step(MAX_EPOCHS * TRACK_WORDS[track], per_model=cap == "per-model")
    return min(epochs, amount)


def check_corpus(track: str | None, words: int, files: Sequence[Path]) -> None:
    """A corpus over the track's words is refused, with one line."""
    if track is not None and words > TRACK_WORDS[track]:
        bigger = [t for t, n in TRACK_WORDS.items() if n >= words]
        fix = f"use --track {bigger[0]}" if bigger else "use a smaller corpus"
        raise MinidmlError(f"{', '.join(map(str, files))}: {words:,} words, over the "
                           f"{track} track's {TRACK_WORDS[track]:,}; {fix} or a smaller "
                           "corpus")


def milestones(config: TrainConfig) -> tuple[int, ...]:
    """The word counts a run checkpoints at: ``checkpoint_words``, else its track's."""
    if config.checkpoint_words:
        return tuple(sorted(set(config.checkpoint_words)))
    return track_milestones(config.track) if config.track is not None else ()


def check_plan(config: TrainConfig, count: WordCount, total_steps: int, fixed: bool,
               limit: int | None) -> int:
    """The steps a run plans under its track (``total_steps``, or ``limit``, the track's
    :func:`step_limit`, for a time budget that would pass it), after refusing with one line a
    fixed plan (``fixed``: steps, tokens or epochs) over ``limit`` or in which some
    ``--checkpoint-words`` count cannot be reached."""
    length = next((f"--{k}" for k in ("steps", "tokens", "epochs")
                   if getattr(config, k) is not None), "one epoch (the default length)")
    if limit is not None and total_steps > limit:
        if not fixed:
            return limit
        per, total = count.per_model(total_steps), count.total(total_steps)
        read = (f"{per:,} words per model" if config.words_cap == "per-model" or
                count.models == 1 and not count.teacher_words else f"{total:,} words in all "
                f"({count.models} models{' and their teachers' if count.teacher_words else ''})")
        fix = (" or --words-cap per-model" if config.words_cap == "total" and
               count.total(limit) != count.per_model(limit) else "")
        track = cast(str, config.track)  # a limit is the track's (step_limit): there is one
        raise MinidmlError(f"{length}: {total_steps:,} steps read {read}, over what the "
                           f"{track} track allows (10 epochs of the corpus, and "
                           f"{MAX_EPOCHS * TRACK_WORDS[track]:,} words read); use "
                           f"--steps {limit} or fewer{fix}")
    if fixed and config.checkpoint_words:
        unreachable = [w for w in config.checkpoint_words
                       if count.reach_step(w, total_steps) is None]
        if unreachable:
            raise MinidmlError(
                f"--checkpoint-words {unreachable[0]:,}: the run reads "
                f"{count.per_model(total_steps):,} words per model in its {total_steps:,} "
                f"steps ({length}); give counts up to that, or train longer")
    return total_steps
