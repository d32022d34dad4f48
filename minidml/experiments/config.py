"""What a comparison runs: its arms, the ablation's variants, and the settings they share
(:class:`CompareConfig`, given to :func:`minidml.experiments.compare.compare`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..config import TrainConfig, default_alpha, default_temperature
from ..errors import MinidmlError
from .scores import MACRO

ARMS = ("single", "kd", "dml", "wml")
TEACHER = "teacher"
DEFAULT_SUITES = ("blimp", "blimp-supplement", "ewok")
EVAL_STUDENTS = ("all", "champion")  # which models of an arm the suites score
# what "equal data" holds equal: every model's reading (the paper's framing), or the reading of
# an arm's models together (BabyLM's rule that all text seen by all training counts)
WORDS = ("per-model", "total")


def reading_shares(arm: str, k: int, words: str) -> tuple[Fraction, Fraction]:
    """(each student's, kd's teacher's) share of the tokens T that a model reads under
    ``per-model``: all of T for every model; under ``total`` an arm's models read T together:
    the single student T, kd's teacher and student half each, dml's and wml's K students T/K
    each (they read the same batches). Exact, so that shares of T steps floor to whole steps
    that together never pass T."""
    one, none = Fraction(1), Fraction(0)
    if words == "per-model":
        return one, one
    return {"single": (one, none), "kd": (Fraction(1, 2), Fraction(1, 2))}.get(
        arm, (Fraction(1, k), none))
OUTER = ("hypergrad", "unroll", "outer_every", "outer_lr", "outer_lr_schedule",
         "outer_objective", "outer_batch_size")  # only wml has an outer loop
# what a variant may change; the rest (data, tokenizer, students, tokens) keeps arms comparable
VARIABLE = ("alpha", "alpha_warmup", "temperature", "lr", "min_lr_ratio", "warmup_steps",
            "weight_decay", "grad_clip", *OUTER)


@dataclass(frozen=True)
class Variant:
    """An extra arm: ``arm`` with the training setting ``key`` changed to ``value``."""

    arm: str
    key: str
    value: Any

    @property
    def name(self) -> str:
        """How the report names it, e.g. ``wml alpha=0.25``."""
        return f"{self.arm} {self.key}={self.value}"

    @classmethod
    def parse(cls, text: str) -> tuple[Variant, ...]:
        """``[ARM:]KEY=V1[,V2...]`` (ARM defaults to wml; KEY as in TrainConfig, ``-`` or
        ``_``): one variant per value."""
        arm, _, rest = text.rpartition(":")
        key, eq, values = rest.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key or not values.strip():
            raise MinidmlError(f"--vary {text!r}: write [ARM:]KEY=VALUE[,VALUE...], e.g. "
                               "alpha=0.25,0.75 or wml:hypergrad=fd")
        return tuple(cls(arm.strip() or "wml", key,
                         TrainConfig.parse_value(key, v.strip(), f"--vary {text!r}"))
                     for v in values.split(","))


def arm_dir_name(name: str) -> str:
    """The directory of an arm under ``seed-S/``: ``wml alpha=0.25`` -> ``wml-alpha=0.25``."""
    return name.replace(" ", "-")


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison runs; ``train`` holds every training setting the arms share (its
    ``students``, ``mode``, ``teachers`` and ``budget`` are set per arm)."""

    budget: int
    students: int = 4
    seeds: int = 1
    arms: tuple[str, ...] = ARMS
    suites: tuple[str, ...] = DEFAULT_SUITES
    teacher_params: int | None = None  # kd's teacher; default: the whole budget N
    eval_limit: int | None = None  # at most this many examples per task
    eval_batch_size: int = 64
    # which models the suites score: all (every student and the ensemble) or champion (each
    # arm's champion only: on a CPU, GLUE fine-tunes every model it scores)
    eval_students: str = "all"
    # suite-specific options given to every evaluation, e.g. GLUE's {"tasks": "rte,boolq",
    # "max_train_examples": 2000, "epochs": 3} (minidml eval's --glue-tasks and caps)
    suite_options: dict[str, Any] = field(default_factory=dict)
    eval_points: int | None = 10  # validation this many times per run (None: eval_every)
    words: str = "per-model"  # WORDS: what equal data holds equal
    # the learning curves (minidml.experiments.curves): the suites each arm's champion is
    # scored on at its checkpoints by words seen (none: no curves), at these counts of words
    # in the accounting of ``words`` (none: 1M, 2M, … as far as the arms read)
    curve_suites: tuple[str, ...] = ()
    curve_words: tuple[int, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: tuple[Variant, ...] = ()  # ablation arms, run after the arms they vary

    def __post_init__(self) -> None:
        if self.students < 2:
            raise MinidmlError(f"--students {self.students}: mutual learning needs at least 2")
        if self.seeds < 1:
            raise MinidmlError(f"--seeds {self.seeds}: must be at least 1")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise MinidmlError(f"--arms {','.join(self.arms)}: choose each of "
                               f"{', '.join(ARMS)} at most once")
        if self.teacher_params is not None and self.teacher_params < 1:
            raise MinidmlError("--teacher-params: must be a positive number")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise MinidmlError("--limit: must be at least 1")
        if MACRO in self.suites:
            raise MinidmlError(f"--suites: {MACRO} is the report's mean of the suites, not a "
                               "suite; leave it out")
        if self.eval_students not in EVAL_STUDENTS:
            raise MinidmlError(f"--eval-students {self.eval_students}: choose "
                               f"{' or '.join(EVAL_STUDENTS)}")
        if self.words not in WORDS:
            raise MinidmlError(f"--words {self.words}: choose {' or '.join(WORDS)}")
        if any(not isinstance(w, int) or w < 1 for w in self.curve_words):
            raise MinidmlError(f"--curve-words {','.join(map(str, self.curve_words))}: give "
                               "positive counts of words, e.g. 1M,2M,5M")
        if self.curve_words and not self.curve_suites:
            raise MinidmlError("--curve-words: the curves need their suites; add "
                               "--curve-suites, e.g. babylm-fast")
        if self.eval_points is not None and self.eval_points < 1:
            raise MinidmlError("--eval-points: must be at least 1")
        for v in self.variants:
            self._check_variant(v)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise MinidmlError("--vary: " + next(n for n in names if names.count(n) > 1)
                               + " is asked for twice; give each variant once")

    def _check_variant(self, v: Variant) -> None:
        where = f"--vary {v.arm}:{v.key}={v.value}"
        if v.arm not in self.arms:
            raise MinidmlError(f"{where}: a variant is compared with its arm; add {v.arm} to "
                               f"--arms (choose from {', '.join(self.arms)})")
        if v.key not in VARIABLE:
            raise MinidmlError(f"{where}: {v.key} cannot vary (it would change the data or "
                               f"the students); choose from {', '.join(VARIABLE)}")
        TrainConfig.checked({v.key: v.value}, where)  # the type, from Python callers too
        if v.key in OUTER and v.arm != "wml":
            raise MinidmlError(f"{where}: only wml learns ω; vary {v.key} on wml")
        if v.key in ("alpha", "alpha_warmup", "temperature") and v.arm == "single":
            raise MinidmlError(f"{where}: a single student has no KL term; vary it on kd, "
                               "dml or wml")
        own = getattr(self.train, v.key)
        if v.key == "temperature" and own is None:
            own = default_temperature(v.arm)
        if v.key == "alpha" and own is None:
            own = default_alpha(v.arm)
        if own == v.value:
            raise MinidmlError(f"{where}: that is the {v.arm} arm's own setting; choose "
                               "another value")
        try:
            self.train.replace(**{v.key: v.value})
        except MinidmlError as e:
            raise MinidmlError(f"{where}: {e}") from None

    def arm_specs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, arm, changed settings)`` of every arm, the variants last."""
        return ([(a, a, {}) for a in self.arms]
                + [(v.name, v.arm, {v.key: v.value}) for v in self.variants])

    def check_train(self, given: Sequence[str]) -> None:
        """Refuse training settings that the arms set themselves (``given``: the keys a
        user set, e.g. in a TOML file)."""
        fixed = [k for k in ("students", "budget", "budget_scheme", "mode", "teachers")
                 if k in given]
        if self.eval_points is not None and "eval_every" in given:
            fixed.append("eval_every")
        if fixed:
            raise MinidmlError(f"compare: {', '.join(fixed)} cannot be set: each arm sets "
                               "it (use --budget, --students, --arms"
                               + (", --eval-points" if "eval_every" in fixed else "") + ")")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"] = self.train.to_dict()
        return out


__all__ = ["ARMS", "DEFAULT_SUITES", "MACRO", "OUTER", "TEACHER", "VARIABLE", "CompareConfig",
           "Variant", "arm_dir_name"]
