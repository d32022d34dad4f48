"""Training settings: one typed dataclass, loadable from TOML or JSON with strict checking.

Precedence: dataclass defaults < a TOML file (``--config``) < command-line options.
:meth:`TrainConfig.from_dict` refuses unknown keys, wrong types and impossible values, naming
the offending key, so a damaged or hostile ``config.json`` cannot start a run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .data import SAMPLINGS
from .documents import RULES, SPEAKER_TAGS
from .errors import MinidmlError
from .model import Shape
from .tokenizer import BOUNDARIES

MODES = ("single", "dml", "wml", "kd")
HYPERGRADS = ("exact", "first-order", "fd")
UNROLLS = ("sgd", "adam")
OUTER_OBJECTIVES = ("ensemble", "sum-ce")
PRECISIONS = ("auto", "fp32", "bf16")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # minidml.tracking


def default_temperature(mode: str) -> float:
    """T when none is given: BabyLlama's 2 for ``kd``, 1 for mutual learning."""
    return 2.0 if mode == "kd" else 1.0


def default_alpha(mode: str) -> float:
    """α when none is given: BabyLlama's 0.5 for ``kd``; 0.25 for mutual learning, which
    gave the lower validation loss in the recipe study and the ablation (docs/results/recipe)."""
    return 0.5 if mode == "kd" else 0.25


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the device aside, results are reproducible)."""

    # students: one Shape each; len(students) is K
    students: tuple[Shape, ...] = (Shape(4, 256, 4),) * 4
    # or a parameter budget N: K = len(students) shapes are searched (minidml.search) once the
    # vocabulary is known, with targets N/2, N/3, ... (harmonic) or N/K each (equal)
    budget: int | None = None
    budget_scheme: str = "harmonic"
    # single: independent (α = 0); dml: fixed equal ω; wml: learned ω; kd: each student
    # distilled from frozen teachers (BabyLlama-style), no peers
    mode: str = "wml"
    # weight of the mutual (or teacher) KL against the cross-entropy; None: 0.25 for mutual
    # learning, 0.5 for kd (default_alpha)
    alpha: float | None = None
    # steps over which α rises linearly from 0 (0: α from the start); kd's teacher KL too
    alpha_warmup: int = 0
    temperature: float | None = None  # softmax temperature T; None: 2 for kd, else 1
    # kd: run directories of the teachers; each gives its champion student, and several
    # teachers are an ensemble whose probabilities are averaged
    teachers: tuple[str, ...] = ()
    # weighted mutual learning: the outer (bi-level) loop that learns ω
    hypergrad: str = "exact"  # exact | first-order | fd
    # the unrolled inner step the hypergradient differentiates through: sgd (θ − η·g, DARTS)
    # or adam (the AdamW step about to be taken, its preconditioner held constant)
    unroll: str = "sgd"
    outer_every: int = 10  # inner steps per outer step
    outer_lr: float = 1.0  # mirror-descent step size β
    outer_lr_schedule: str = "constant"  # constant | cosine (decays like the inner lr)
    outer_objective: str = "ensemble"  # ensemble (its CE) | sum-ce (Σ ω_i CE_i, the paper's code)
    outer_batch_size: int | None = None  # held-out sequences per outer step (default batch_size)
    holdout_fraction: float = 0.01  # share of the corpus held out for the outer loop
    # data and tokenizer
    vocab_size: int | None = None  # None: suited to the corpus size
    tokenizer_type: str = "unigram"
    # prefix: a text's first word is encoded as the same word in running text (a word
    # boundary before every text, minidml.tokenizer); none: texts as given (runs before 0.2)
    tokenizer_boundary: str = "prefix"
    context: int = 128
    batch_size: int = 32
    grad_accum: int = 1
    val_fraction: float = 0.02
    encoding_errors: str = "strict"
    # documents: "line" (each non-blank line, the BabyLM pipeline's rule) or "sentence" (each
    # line cut at sentence and utterance boundaries: minidml.documents); speaker tags such
    # as CHILDES's "*MOT:" are kept or dropped (sentence only)
    documents: str = "line"
    speaker_tags: str = "keep"
    # training windows: "epochs" (each epoch a seeded permutation of the non-overlapping
    # windows: every token once per epoch) or "uniform" (random positions, with replacement:
    # how runs sampled before epochs existed)
    sampling: str = "epochs"
    # length of training, at most one of: steps; tokens or epochs (converted to steps);
    # max_time, seconds of wall time (steps planned from the measured throughput, and a
    # stop at the limit); none: one epoch
    steps: int | None = None
    tokens: int | None = None
    epochs: float | None = None
    max_time: float | None = None
    # optimiser
    lr: float = 4e-3  # the recipe study's best peak (docs/results/recipe)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    # after warmup: cosine decay to min_lr_ratio, or wsd (warmup-stable-decay: constant, then
    # a linear decay over the last decay_fraction of the steps)
    schedule: str = "wsd"
    decay_fraction: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # running
    seed: int = 0
    device: str = "auto"
    # auto: bf16 autocast only where a bf16 matmul at the run's shapes measures faster
    # (minidml.precision); fp32; or bf16 regardless (with a warning where it is slower)
    precision: str = "auto"
    # the loss's view of the head: "hidden" computes logits, losses and gradients from the
    # final hidden states chunk by chunk (no K×N×V tensor); "logits" materialises the logits
    # first (the reference path; distributed runs and kd use it)
    head_loss: str = "hidden"
    # torch.compile of the students' trunks (minidml.compiling): auto (where inductor works
    # and the run is long enough to repay compiling), on, or off
    compile: str = "auto"
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop with an error, or skip the step
    # distributed runs: dtype of the students' logits sent to their peers on other ranks
    # (fp32 matches a single process; bf16 halves the bytes; bf16 autocast sends bf16 anyway)
    peer_dtype: str = "fp32"
    log_every: int = 10
    eval_every: int = 200
    eval_tokens: int = 65_536  # validation tokens per evaluation, evenly spread over the split
    save_every: int = 500
    keep_checkpoints: int = 2  # the newest checkpoints kept; 0 keeps every one (for curves)
    # experiment trackers that also receive the metrics (minidml.tracking): any of TRACKERS
    log_to: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, for embedding code

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checking
    def validate(self) -> None:
        def bad(key: str, why: str) -> MinidmlError:
            return MinidmlError(f"--{key.replace('_', '-')} {getattr(self, key)!r}: {why}")

        if not 0 <= self.seed < 2**32:
            raise bad("seed", "must be between 0 and 2**32 - 1")
        if not self.students:
            raise MinidmlError("--students: need at least one student")
        for key in ("context", "batch_size", "grad_accum", "log_every", "eval_every", "outer_every",
                    "eval_tokens", "save_every", "warmup_steps", "alpha_warmup"):
            if key in ("warmup_steps", "alpha_warmup"):
                if getattr(self, key) < 0:
                    raise bad(key, "must be 0 or a positive integer")
            elif getattr(self, key) < 1:
                raise bad(key, "must be a positive integer")
        if self.keep_checkpoints < 0:
            raise bad("keep_checkpoints", "must be 0 (keep all) or a positive integer")
        for key in ("steps", "tokens", "vocab_size", "outer_batch_size", "budget"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(key, "must be a positive integer")
        lengths = [k for k in ("steps", "tokens", "epochs", "max_time")
                   if getattr(self, k) is not None]
        if len(lengths) > 1:
            raise MinidmlError(" and ".join(f"--{k.replace('_', '-')}" for k in lengths)
                               + ": give one length of training, not several")
        for key in ("lr", "temperature", "outer_lr", "epochs", "max_time"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(key, "must be a positive number")
        for key in ("alpha", "min_lr_ratio", "beta1", "beta2", "decay_fraction"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise bad(key, "must be between 0 and 1")
        for key in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise bad(key, "must be zero or positive")
        for key in ("val_fraction", "holdout_fraction"):
            if not 0 < getattr(self, key) < 0.5:
                raise bad(key, "must be between 0 and 0.5")
        for key, allowed in (("mode", MODES), ("precision", PRECISIONS),
                             ("hypergrad", HYPERGRADS), ("unroll", UNROLLS),
                             ("outer_objective", OUTER_OBJECTIVES),
                             ("outer_lr_schedule", ("constant", "cosine")),
                             ("budget_scheme", ("harmonic", "equal")),
                             ("tokenizer_type", ("unigram", "bpe")),
                             ("tokenizer_boundary", BOUNDARIES),
                             ("encoding_errors", ("strict", "replace", "ignore")),
                             ("documents", RULES), ("speaker_tags", SPEAKER_TAGS),
                             ("sampling", SAMPLINGS), ("schedule", ("cosine", "wsd")),
                             ("on_nonfinite", ("stop", "skip")),
                             ("head_loss", ("hidden", "logits")),
                             ("compile", ("auto", "on", "off")),
                             ("peer_dtype", ("fp32", "bf16"))):
            if getattr(self, key) not in allowed:
                raise bad(key, f"choose one of {', '.join(allowed)}")
        unknown = [t for t in self.log_to if t not in TRACKERS]
        if unknown or len(set(self.log_to)) != len(self.log_to):
            raise MinidmlError(f"--log-to {','.join(self.log_to)}: name each tracker once, "
                               f"from {', '.join(TRACKERS)}")
        if not (self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")):
            raise bad("device", "choose auto, cpu, cuda, cuda:N or mps")
        if self.mode == "kd" and not self.teachers:
            raise MinidmlError("--mode kd: needs at least one --teacher RUN_DIR (a trained run)")
        if self.teachers and self.mode != "kd":
            raise MinidmlError(f"--teacher: only --mode kd distils from teachers (mode is "
                               f"{self.mode!r}); add --mode kd or drop --teacher")

    def resolve_shapes(self, vocab_size: int) -> TrainConfig:
        """With a ``budget``, the config whose students are the searched shapes; else self."""
        if self.budget is None:
            return self
        from .search import plan

        found = plan(self.budget, self.n_students, vocab_size, scheme=self.budget_scheme)
        return self.replace(students=tuple(c.shape for c in found))

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
        return cls.checked(data, str(path))


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
