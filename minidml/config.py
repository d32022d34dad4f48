"""Training settings: one typed dataclass, loadable from TOML or JSON with strict checking.

Precedence: dataclass defaults < a TOML file (``--config``) < command-line options.
:meth:`TrainConfig.from_dict` refuses unknown keys, wrong types and impossible values, naming
the offending key, so a damaged or hostile ``config.json`` cannot start a run.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import SAMPLINGS
from .documents import RULES, SPEAKER_TAGS
from .errors import MinidmlError
from .model import Shape
from .runtime import COMPILE_MODES as COMPILES
from .runtime import device_problem
from .tokenizer import BOUNDARIES, MIN_VOCAB
from .words import MAX_EPOCHS, TRACKS, WORDS_CAPS

MODES = ("single", "dml", "wml", "kd")
HYPERGRADS = ("exact", "first-order", "fd")
UNROLLS = ("sgd", "adam")
OPTIMIZERS = ("adamw", "muon")
OUTER_OBJECTIVES = ("ensemble", "sum-ce")
PRECISIONS = ("auto", "fp32", "bf16")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # minidml.tracking
RECIPE = "results/recipe/README.md"  # the studies that set defaults, under docs/
COMPARISON = "results/comparison.md"
BOUNDARY = "results/boundary/results.md"
TIME_TO_QUALITY = "results/time-to-quality/README.md"
PERFORMANCE = "performance.md"
METHOD = "method.md"
PARTICIPANTS = "babylm.md"


def default_temperature(mode: str) -> float:
    """T when none is given: BabyLlama's 2 for ``kd``, 1 for mutual learning."""
    return 2.0 if mode == "kd" else 1.0


def default_alpha(mode: str) -> float:
    """α when none is given: BabyLlama's 0.5 for ``kd``; 0.25 for mutual learning, which
    gave the lower validation loss in the recipe study and the ablation."""
    return 0.5 if mode == "kd" else 0.25


@dataclass(frozen=True)
class Setting:
    """How one :class:`TrainConfig` field is explained, checked and offered as an option.

    The field's default and this record are the only place a setting is written: the
    command line's options (:func:`minidml.cli.options.config_option`), the option table of
    ``docs/cli.md`` (:func:`settings_table`) and :meth:`TrainConfig.validate` are made from
    them."""

    help: str
    choices: tuple[str, ...] = ()
    lo: float | None = None  # the smallest value allowed (None: no bound)
    hi: float | None = None
    open_lo: bool = False  # lo itself is not allowed
    open_hi: bool = False
    flag: str | None = ""  # "": --the-field-name; None: config files only
    kind: str = ""  # count (20M), counts (1M,2M), duration (60m), trackers (a,b), paths
    shown: str = ""  # how a default that is computed reads (the field holds None)
    why: str = ""  # the range's error, where the general one does not fit
    see: str = ""  # the study under docs/ that set the default
    brief: str = ""  # a few words for the guide's short table (only the main settings)

    def option(self, name: str) -> str | None:
        """The command-line option, or None for a setting of config files only."""
        if self.flag is None:
            return None
        return self.flag or "--" + name.replace("_", "-")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if self.choices:
            return None if value in self.choices else f"choose one of {', '.join(self.choices)}"
        if self.lo is None and self.hi is None:
            return None
        integer = isinstance(value, int)
        if not integer and not math.isfinite(value):
            return self.why or self._range(integer)
        low = self.lo is None or (value > self.lo if self.open_lo else value >= self.lo)
        high = self.hi is None or (value < self.hi if self.open_hi else value <= self.hi)
        return None if low and high else self.why or self._range(integer)

    def _range(self, integer: bool) -> str:
        lo, hi = (f"{b:g}" if b is not None else None for b in (self.lo, self.hi))
        if hi is not None and not (self.open_lo or self.open_hi):
            return f"must be between {lo} and {hi}"
        if hi is not None:
            return (f"must be {'above' if self.open_lo else 'at least'} {lo} and "
                    f"{'below' if self.open_hi else 'at most'} {hi}")
        if self.open_lo and self.lo == 0:
            return "must be a positive number"
        if self.lo == 0:
            return "must be 0 or a positive integer" if integer else "must be zero or positive"
        if self.lo == 1 and integer:
            return "must be a positive integer"
        return f"must be at least {lo}"


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            factory: Any = dataclasses.MISSING, **how: Any) -> Any:
    """A :class:`TrainConfig` field with its :class:`Setting`."""
    return field(default=default, default_factory=factory, metadata={"setting": Setting(help,
                                                                                       **how)})


def _int(**how: Any) -> dict[str, Any]:
    """A whole number, at least 1 unless ``lo`` says otherwise."""
    return {"lo": 1, **how}


# settings that no longer exist, still read (and ignored) in the config.json of older runs
RETIRED = {"head_loss": "0.2: every run takes its loss from the final hidden states"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the device aside, results are reproducible).

    Each field's :class:`Setting` says what it means; ``docs/cli.md`` lists them all."""

    students: tuple[Shape, ...] = setting(
        factory=lambda: (Shape(4, 256, 4),) * 4, flag=None,
        help="One shape per student (layers, width, heads, MLP ratio); K is their number. "
             "On the command line: --students, --layers, --width, --heads, --mlp-ratio.")
    budget: int | None = setting(
        None, "A parameter budget N: the K students' shapes are searched for N/2, N/3, … "
              "(or N/K each) once the vocabulary is known.", kind="count", lo=1, see=METHOD,
        brief="search the students' shapes for this many parameters")
    budget_scheme: str = setting("harmonic", "--budget's targets: N/2, N/3, … or N/K each.",
                                 choices=("harmonic", "equal"), flag=None)
    mode: str = setting(
        "wml", "single: independent students; dml: equal fixed peer weights; wml: peer "
               "weights learned by bi-level optimisation; kd: each student distilled from "
               "--teacher runs.", choices=MODES,
        brief="independent, equal ω, learned ω, or distilled")
    alpha: float | None = setting(
        None, "Weight of the mutual (or teacher) KL against the cross-entropy.", lo=0, hi=1,
        shown=f"{default_alpha('wml')}; {default_alpha('kd')} for kd", see=RECIPE,
        brief="weight of the peer (or teacher) term")
    alpha_warmup: int = setting(
        0, "Steps over which α rises linearly from 0 (0: α from the start).", **_int(lo=0))
    temperature: float | None = setting(
        None, "Softmax temperature T.", lo=0, open_lo=True,
        shown=f"{default_temperature('wml'):g}; {default_temperature('kd'):g} for kd",
        see=COMPARISON, brief="softmax temperature T")
    teachers: tuple[str, ...] = setting(
        (), "kd: a trained run whose champion student teaches (repeat for an ensemble, whose "
            "probabilities are averaged).", flag="--teacher", kind="paths")
    hypergrad: str = setting(
        "exact", "wml: how the hypergradient differentiates through the unrolled step.",
        choices=HYPERGRADS, see=COMPARISON, brief="how ω's hypergradient is taken")
    unroll: str = setting(
        "sgd", "wml: the inner step the hypergradient unrolls: θ − lr·g, or the AdamW step "
               "about to be taken, its preconditioner held constant.", choices=UNROLLS,
        see=COMPARISON)
    outer_every: int = setting(10, "wml: inner steps per ω update.",
                               brief="inner steps per ω update", **_int())
    outer_lr: float = setting(1.0, "wml: the mirror-descent step size.", lo=0, open_lo=True)
    outer_lr_schedule: str = setting(
        "constant", "wml: the outer step size constant, or decayed like the inner lr.",
        choices=("constant", "cosine"), flag=None)
    outer_objective: str = setting(
        "ensemble", "wml: the held-out loss ω minimises: the ensemble's cross-entropy, or the "
                    "ω-weighted sum of the students' (the paper's code).",
        choices=OUTER_OBJECTIVES)
    outer_batch_size: int | None = setting(
        None, "wml: held-out sequences per outer step.", shown="the batch size", flag=None,
        **_int())
    holdout_fraction: float = setting(
        0.01, "Share of the corpus held out for the outer loop.", lo=0, hi=0.5, open_lo=True,
        open_hi=True, flag=None)
    vocab_size: int | None = setting(
        None, "Sentencepiece vocabulary size.", shown="suits the corpus",
        **_int(lo=MIN_VOCAB), brief="sentencepiece vocabulary")
    tokenizer_type: str = setting("unigram", "Sentencepiece model type.",
                                  choices=("unigram", "bpe"))
    tokenizer_boundary: str = setting(
        "prefix", "prefix: a text's first word is the same piece as in running text, as the "
                  "BabyLM 2026 pipeline needs; none: texts as given (tokenizers made before).",
        choices=BOUNDARIES, see=BOUNDARY, brief="a first word encoded as in running text")
    context: int = setting(128, "Context length in tokens.", see=RECIPE,
                           brief="tokens per sequence", **_int())
    batch_size: int = setting(32, "Sequences per micro-batch.", see=RECIPE,
                              brief="sequences per step", **_int())
    grad_accum: int = setting(1, "Micro-batches per optimiser step.", **_int())
    val_fraction: float = setting(0.02, "Share of the corpus's blocks kept for validation.",
                                  lo=0, hi=0.5, open_lo=True, open_hi=True, flag=None)
    encoding_errors: str = setting("strict", "Invalid UTF-8: stop with an error, replace or "
                                             "drop it.", choices=("strict", "replace", "ignore"))
    documents: str = setting(
        "line", "line: each non-blank line is a BOS…EOS document (the BabyLM pipeline's "
                "rule); sentence: lines cut at sentences and speaker turns.", choices=RULES,
        see=RECIPE, brief="one document per line, or per sentence")
    speaker_tags: str = setting(
        "keep", "--documents sentence: keep or drop speaker tags such as *MOT: and A:.",
        choices=SPEAKER_TAGS)
    sampling: str = setting(
        "epochs", "Training windows: each epoch a fresh seeded permutation of them, or random "
                  "positions with replacement.", choices=SAMPLINGS)
    steps: int | None = setting(None, "Optimiser steps.", shown="one epoch", kind="count",
                                lo=1,
                                brief="length of training (or --tokens, --epochs, --max-time)")
    tokens: int | None = setting(None, "Training tokens per student, e.g. 10M.", kind="count",
                                 lo=1)
    epochs: float | None = setting(None, "Passes over the training data.", lo=0, open_lo=True)
    max_time: float | None = setting(
        None, "Wall time to train, e.g. 60m: the steps are planned from the measured "
              "throughput, so the schedule ends when the time does.", kind="duration", lo=0,
        open_lo=True)
    optimizer: str = setting(
        "muon", "muon: Muon (momentum orthogonalised by Newton-Schulz, its step scaled to "
                "AdamW's RMS so lr and weight decay carry over) for the trunk's matrices, "
                "AdamW for the embedding and the norms; adamw: AdamW for every weight.",
        choices=OPTIMIZERS, see=TIME_TO_QUALITY, brief="the optimiser")
    lr: float = setting(4e-3, "Peak learning rate (AdamW's; Muon's steps are scaled to "
                              "match).", lo=0, open_lo=True, see=RECIPE,
                        brief="peak learning rate")
    min_lr_ratio: float = setting(0.1, "The learning rate's floor, as a share of the peak.",
                                  lo=0, hi=1, flag=None)
    warmup_steps: int = setting(100, "Warmup steps.", flag="--warmup", see=RECIPE,
                                **_int(lo=0), brief="warmup steps")
    schedule: str = setting(
        "wsd", "After warmup: wsd (constant, then a linear decay over the last "
               "decay_fraction of the steps) or a cosine decay, both towards min_lr_ratio "
               "(reached at the step after the last).",
        choices=("cosine", "wsd"), see=RECIPE, brief="decay after warmup")
    decay_fraction: float = setting(0.2, "wsd: the share of the steps that decays.", lo=0, hi=1,
                                    flag=None)
    weight_decay: float = setting(0.1, "AdamW weight decay (not on gains).", lo=0, flag=None,
                                  see=RECIPE)
    beta1: float = setting(0.9, "AdamW β1.", lo=0, hi=1, open_hi=True, flag=None)
    beta2: float = setting(0.95, "AdamW β2.", lo=0, hi=1, open_hi=True, flag=None)
    grad_clip: float = setting(1.0, "Gradient-norm clipping (0: none).", lo=0, flag=None)
    seed: int = setting(0, "Everything (initial draw, tokenizer sample, split, batches) "
                           "follows from it.", lo=0, hi=2**32 - 1,
                        why="must be between 0 and 2**32 - 1")
    device: str = setting("auto", "auto (CUDA, then MPS, else the CPU), cpu, cuda, cuda:N or mps.")
    precision: str = setting(
        "auto", "auto: bf16 autocast only where a bf16 matmul at the run's shapes measures "
                "faster on the device; fp32; or bf16 regardless.", choices=PRECISIONS,
        see=PERFORMANCE, brief="bf16 only where measured faster")
    compile: str = setting(
        "auto", "torch.compile the students' trunks: auto where inductor works and the run "
                "is long enough to repay compiling, on, or off.", choices=COMPILES,
        see=PERFORMANCE, brief="torch.compile for runs long enough to repay it")
    on_nonfinite: str = setting("stop", "A NaN or infinite loss or gradient: stop with an "
                                        "error, or skip the step.", choices=("stop", "skip"))
    peer_dtype: str = setting(
        "fp32", "Under torchrun: the dtype of the hidden states and head weights students "
                "send to peers on other ranks (bf16 halves the bytes).",
        choices=("fp32", "bf16"))
    log_every: int = setting(10, "Steps between training-metric records.", **_int())
    eval_every: int = setting(200, "Steps between validations.", **_int())
    eval_tokens: int = setting(65_536, "Validation tokens per evaluation, evenly spread over "
                                       "the split.", flag=None, **_int())
    save_every: int = setting(500, "Steps between checkpoints.", **_int())
    keep_checkpoints: int = setting(
        2, "Newest checkpoints kept; 0 keeps every one, for learning curves (minidml eval "
           "--step all).", why="must be 0 (keep all) or a positive integer",
        brief="checkpoints kept (0: all, for learning curves)", **_int(lo=0))
    track: str | None = setting(
        None, "A BabyLM track: refuses a corpus over its words (strict-small 10M, strict "
              "100M) and more than 10 epochs, caps the words read, and checkpoints at 1M, "
              "2M, … words seen.", choices=TRACKS, see=PARTICIPANTS,
        brief="train under a BabyLM track's rules")
    words_cap: str = setting(
        "total", "Under --track, whose reading counts against the track's amount of text: "
                 "every model's together (students, and a kd run's teachers), or each "
                 "model's on its own.", choices=WORDS_CAPS, see=PARTICIPANTS)
    checkpoint_words: tuple[int, ...] = setting(
        (), "Checkpoints, kept whatever --keep-checkpoints says, at the first step whose "
            "words seen reach each count (the last step, where only the next would), e.g. "
            "1M,2M,5M.", shown="the track's, under --track",
        kind="counts", see=PARTICIPANTS, **_int())
    log_to: tuple[str, ...] = setting(
        (), "Also send the metrics to these trackers, e.g. tensorboard,wandb (each needs its "
            "extra).", kind="trackers")
    extra: dict[str, Any] = setting(factory=dict, help="Free-form, for embedding code.",
                                    flag=None)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checking
    def validate(self) -> None:
        if not self.students:
            raise MinidmlError("--students: need at least one student")
        for f in dataclasses.fields(self):
            why = refusal(f.name, getattr(self, f.name))
            if why:
                raise MinidmlError(why)
        lengths = [k for k in ("steps", "tokens", "epochs", "max_time")
                   if getattr(self, k) is not None]
        if len(lengths) > 1:
            raise MinidmlError(" and ".join(f"--{k.replace('_', '-')}" for k in lengths)
                               + ": give one length of training, not several")
        unknown = [t for t in self.log_to if t not in TRACKERS]
        if unknown or len(set(self.log_to)) != len(self.log_to):
            raise MinidmlError(f"--log-to {','.join(self.log_to)}: name each tracker once, "
                               f"from {', '.join(TRACKERS)}")
        why = device_problem(self.device)
        if why:
            raise MinidmlError(why)
        if self.mode == "kd" and not self.teachers:
            raise MinidmlError("--mode kd: needs at least one --teacher RUN_DIR (a trained run)")
        if self.track is not None and self.epochs is not None and self.epochs > MAX_EPOCHS:
            raise MinidmlError(f"--epochs {self.epochs:g}: the {self.track} track allows at "
                               f"most {MAX_EPOCHS} epochs; use --epochs {MAX_EPOCHS} or less")
        if self.optimizer == "muon" and self.unroll == "adam":
            raise MinidmlError("--unroll adam: unrolls AdamW's step, but --optimizer muon "
                               "(the default) moves the matrices by Muon's; add --optimizer "
                               "adamw, or use --unroll sgd")
        if self.teachers and self.mode != "kd":
            raise MinidmlError(f"--teacher: only --mode kd distils from teachers (mode is "
                               f"{self.mode!r}); add --mode kd or drop --teacher")

    @property
    def kl_weight(self) -> float:
        """α: ``alpha``, else 0.5 for ``kd`` and 0.25 for mutual learning (0 for a single
        student, which has no KL term)."""
        if self.mode == "single":
            return 0.0
        return self.alpha if self.alpha is not None else default_alpha(self.mode)

    def alpha_at(self, step: int) -> float:
        """α at optimiser step ``step`` (0-based): :attr:`kl_weight`, reached by a linear
        ramp from 0 over the first ``alpha_warmup`` steps (early peers are as untrained as
        the student)."""
        if self.alpha_warmup <= 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, (step + 1) / self.alpha_warmup)

    @property
    def softmax_temperature(self) -> float:
        """T: ``temperature``, else BabyLlama's 2 for ``kd`` and 1 for mutual learning."""
        if self.temperature is not None:
            return self.temperature
        return default_temperature(self.mode)

    @property
    def n_students(self) -> int:
        return len(self.students)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context * self.grad_accum

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain data (parsed JSON/TOML), checking every key, type and range."""
        kwargs = cls.checked(data, source)
        try:
            return cls(**kwargs)
        except MinidmlError as e:  # a range check: say where the value came from
            raise MinidmlError(f"{source}: {e}") from None

    @classmethod
    def checked(cls, data: dict[str, Any], source: str = "config") -> dict[str, Any]:
        """``data`` with every key known and every value of the right type (not yet the
        range checks, which need the whole config)."""
        if not isinstance(data, dict):
            raise MinidmlError(f"{source}: expected a table of settings")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in RETIRED:  # the config.json of a run made before it went: same run
                continue
            if key not in hints:
                raise MinidmlError(f"{source}: unknown key {key!r}; remove it "
                                   f"(known: {', '.join(sorted(hints))})")
            kwargs[key] = _coerce(value, hints[key], f"{source}: key {key!r}")
        return kwargs

    @classmethod
    def parse_value(cls, key: str, text: str, source: str = "config") -> Any:
        """The value of setting ``key`` written as ``text`` (``"0.25"``, ``"fd"``, ``"40"``),
        type-checked as in a TOML file; ``source`` names where it came from."""
        hints = typing.get_type_hints(cls)
        if key not in hints:
            raise MinidmlError(f"{source}: unknown setting {key!r} (known: "
                               f"{', '.join(sorted(hints))})")
        hint = hints[key]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(o for o in typing.get_args(hint) if o is not type(None))
        parse = {int: int, float: float}.get(hint, str)
        try:
            value = parse(text)
        except ValueError:
            raise MinidmlError(f"{source}: {key} takes a {parse.__name__}, not "
                               f"{text!r}") from None
        return _coerce(value, hints[key], f"{source}: {key}")

    @classmethod
    def toml_settings(cls, path: str | Path) -> dict[str, Any]:
        """The settings a TOML file gives, checked; apply them with :meth:`replace`."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise MinidmlError(f"{path}: cannot read config ({e.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MinidmlError(f"{path}: not valid TOML ({e})") from None
        settings = cls.checked(data, str(path))
        for key, value in settings.items():  # each value's range, naming the file
            why = refusal(key, value)
            if why:
                raise MinidmlError(f"{path}: {why}")
        return settings



# each setting's field (its Setting in ``.metadata["setting"]``) and type, by name, for the
# code that presents them (the command line's options, the docs' tables)
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)


def refusal(name: str, value: Any) -> str | None:
    """The error line for setting ``name`` holding a ``value`` out of its choices or range
    (each element of a list), or None; named as the user wrote it: the option and, where
    other, the key."""
    how = FIELDS[name].metadata["setting"]
    for item in value if isinstance(value, tuple | list) else (value,):
        why = None if item is None else how.problem(item)
        if why:
            flag = how.option(name)
            shown = name if flag is None else flag if flag[2:] == name.replace(
                "_", "-") else f"{flag} ({name})"
            return f"{shown} {item!r}: {why}"
    return None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (JSON lists become tuples of Shapes)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if hint is Shape:
        if not isinstance(value, dict):
            raise MinidmlError(f"{where}: each student must be a table of n_layers, d_model, "
                               "n_heads[, mlp_ratio]")
        fields = {f.name: f.type for f in dataclasses.fields(Shape)}
        unknown = set(value) - set(fields)
        missing = {f.name for f in dataclasses.fields(Shape)
                   if f.default is dataclasses.MISSING} - set(value)
        if unknown or missing:
            raise MinidmlError(f"{where}: student keys must be n_layers, d_model, n_heads "
                               f"[, mlp_ratio] (unknown {sorted(unknown)}, missing "
                               f"{sorted(missing)})")
        return Shape(**{k: _coerce(v, int if fields[k] == "int" else float, f"{where}.{k}")
                        for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MinidmlError(f"{where}: expected a list")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, where) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise MinidmlError(f"{where}: expected a table")
        return dict(value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:
                raise MinidmlError(f"{where}: {str(value)[:20]}... is too large") from None
    else:
        ok = isinstance(value, hint)
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise MinidmlError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    return value
