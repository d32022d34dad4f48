"""The command line's parameter types and the options that several commands share.

:class:`Count` (``20M``), :class:`Duration` (``60m``), :class:`IntList` (``4,2``),
:class:`TrackerList` and :class:`FilePath` turn what is typed into values or one usage error;
:data:`SHARED_OPTIONS` are the training options that ``train`` and ``compare`` both take, with
:data:`TRAIN_OPTIONS` naming the :class:`~minidml.config.TrainConfig` field each one sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .errors import MinidmlError


class Count(click.ParamType):
    """A positive whole number, with an optional k/M/B suffix: ``20M``, ``1.5k``."""

    name = "count"

    def convert(self, value: Any, param, ctx) -> int:
        from .counts import parse_count

        try:
            return parse_count(value, param.opts[0] if param is not None else "count")
        except MinidmlError as e:
            self.fail(str(e), param, ctx)


class Duration(click.ParamType):
    """A wall-clock duration: seconds, or a number with s, m (min) or h: ``60m``, ``1.5h``."""

    name = "duration"

    def convert(self, value: Any, param, ctx) -> float:
        from .timebudget import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration; write e.g. 90s, 60m or 1.5h", param, ctx)


class IntList(click.ParamType):
    """Comma-separated positive integers, one per student (or one for all): ``4,2``."""

    name = "ints"

    def convert(self, value: Any, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if any(v < 1 for v in out):
            self.fail(f"{value!r}: every value must be at least 1", param, ctx)
        return out


class TrackerList(click.ParamType):
    """Comma-separated tracker names (minidml.tracking): ``tensorboard,wandb``."""

    name = "trackers"

    def convert(self, value: Any, param, ctx) -> tuple[str, ...]:
        from .config import TRACKERS

        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in str(value).split(",") if v.strip())
        unknown = [n for n in names if n not in TRACKERS]
        if unknown or not names or len(set(names)) != len(names):
            self.fail(f"{value!r}: name each tracker once, from {', '.join(TRACKERS)}",
                      param, ctx)
        return names


class FilePath(click.Path):
    """A filesystem path given as a :class:`~pathlib.Path`; a NUL byte is refused."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param, ctx) -> Any:
        if "\x00" in str(value):
            self.fail(f"{value!r} contains a NUL byte, which no path can hold", param, ctx)
        return super().convert(value, param, ctx)


POSITIVE = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
UNIT = click.FloatRange(0, 1)


def student_shapes(k: int | None, layers, width, heads, mlp_ratio, base) -> tuple | None:
    """The students that --students/--layers/--width/--heads/--mlp-ratio describe, each
    unset one taken from ``base``; None when none of them is given."""
    from .model import Shape

    if k is None and layers is None and width is None and heads is None and mlp_ratio is None:
        return None
    lists = {"--layers": layers, "--width": width, "--heads": heads}
    lengths = {len(v) for v in lists.values() if v is not None and len(v) > 1}
    if len(lengths) > 1:
        raise MinidmlError("--layers/--width/--heads: lists must have one value per student")
    n = k or (lengths.pop() if lengths else len(base))
    for name, v in lists.items():
        if v is not None and len(v) not in (1, n):
            raise MinidmlError(f"{name}: {len(v)} values for {n} students; give one value or "
                               f"{n}")
    ref = base[0]

    def pick(v, i, default):
        return default if v is None else v[i if len(v) > 1 else 0]

    return tuple(Shape(pick(layers, i, ref.n_layers), pick(width, i, ref.d_model),
                       pick(heads, i, ref.n_heads),
                       mlp_ratio if mlp_ratio is not None else ref.mlp_ratio) for i in range(n))


TRAIN_OPTIONS = {  # CLI option name -> TrainConfig field
    "vocab_size": "vocab_size", "tokenizer_type": "tokenizer_type",
    "tokenizer_boundary": "tokenizer_boundary", "context": "context",
    "batch_size": "batch_size", "grad_accum": "grad_accum", "steps": "steps",
    "tokens": "tokens", "lr": "lr", "warmup": "warmup_steps", "schedule": "schedule",
    "alpha": "alpha",
    "temperature": "temperature", "mode": "mode", "device": "device",
    "precision": "precision", "compile": "compile", "seed": "seed",
    "encoding_errors": "encoding_errors", "documents": "documents",
    "speaker_tags": "speaker_tags", "sampling": "sampling", "epochs": "epochs",
    "max_time": "max_time",
    "eval_every": "eval_every", "save_every": "save_every", "log_every": "log_every",
    "keep_checkpoints": "keep_checkpoints",
    "hypergrad": "hypergrad", "unroll": "unroll", "alpha_warmup": "alpha_warmup",
    "outer_every": "outer_every", "outer_lr": "outer_lr",
    "budget": "budget",
    "outer_objective": "outer_objective", "on_nonfinite": "on_nonfinite",
    "teacher": "teachers", "peer_dtype": "peer_dtype", "log_to": "log_to",
}

# training options that train and compare share, in the order --help lists them
SHARED_OPTIONS = {
    "hypergrad": click.option(
        "--hypergrad", type=click.Choice(["exact", "first-order", "fd"]),
        help="How wml differentiates through the unrolled step (default exact)."),
    "unroll": click.option(
        "--unroll", type=click.Choice(["sgd", "adam"]),
        help="wml: the inner step the hypergradient unrolls: sgd (θ − lr·g, default) or adam "
             "(the AdamW step about to be taken, its preconditioner held constant)."),
    "outer_every": click.option("--outer-every", type=POSITIVE,
                                help="wml: inner steps per ω update (default 10)."),
    "outer_lr": click.option("--outer-lr", type=POSITIVE_FLOAT,
                             help="wml: mirror-descent step size (default 1)."),
    "outer_objective": click.option(
        "--outer-objective", type=click.Choice(["ensemble", "sum-ce"]),
        help="wml: held-out loss that ω minimises: the ensemble's CE (default) or the "
             "ω-weighted sum of students' CEs (the paper's code)."),
    "vocab_size": click.option("--vocab-size", type=click.IntRange(min=300),
                               help="Default: suits the corpus."),
    "tokenizer_type": click.option("--tokenizer-type", type=click.Choice(["unigram", "bpe"])),
    "tokenizer_boundary": click.option(
        "--tokenizer-boundary", type=click.Choice(["prefix", "none"]),
        help="prefix (default): a text's first word is the same piece as in running text, "
             "as the BabyLM 2026 pipeline needs; none: texts as given (the old tokenizers)."),
    "context": click.option("--context", type=POSITIVE,
                            help="Context length in tokens (default 128)."),
    "batch_size": click.option("--batch-size", type=POSITIVE,
                               help="Sequences per micro-batch (default 32)."),
    "grad_accum": click.option("--grad-accum", type=POSITIVE,
                               help="Micro-batches per optimiser step."),
    "lr": click.option("--lr", type=POSITIVE_FLOAT, help="Peak learning rate (default 4e-3)."),
    "warmup": click.option("--warmup", type=click.IntRange(min=0),
                           help="Warmup steps (default 100)."),
    "schedule": click.option(
        "--schedule", type=click.Choice(["cosine", "wsd"]),
        help="After warmup: wsd (default): constant, then a linear decay to 10% over the last "
             "20% of the steps; or cosine decay to 10%."),
    "alpha": click.option("--alpha", type=UNIT,
                          help="Weight of the mutual (or teacher) KL (default 0.25; 0.5 for kd)."),
    "alpha_warmup": click.option(
        "--alpha-warmup", type=click.IntRange(min=0),
        help="Steps over which α rises linearly from 0 (default 0: α from the start)."),
    "temperature": click.option("--temperature", type=POSITIVE_FLOAT,
                                help="Softmax temperature T (default 1; 2 for kd)."),
    "device": click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps."),
    "precision": click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
                              help="auto (default): bf16 autocast only where a bf16 matmul "
                                   "at the run's shapes is faster on the device."),
    "compile": click.option(
        "--compile", type=click.Choice(["auto", "on", "off"]),
        help="torch.compile the students' trunks: auto (default) where inductor works and the "
             "run is long enough to repay compiling."),
    "on_nonfinite": click.option(
        "--on-nonfinite", type=click.Choice(["stop", "skip"]),
        help="A NaN/inf loss or gradient: stop with an error (default) or skip the step."),
    "seed": click.option("--seed", type=click.IntRange(0, 2**32 - 1)),
    "encoding_errors": click.option(
        "--encoding-errors", type=click.Choice(["strict", "replace", "ignore"]),
        help="What to do with invalid UTF-8 (default: stop with an error)."),
    "documents": click.option(
        "--documents", type=click.Choice(["line", "sentence"]),
        help="line (default): each non-blank line is a BOS…EOS document; sentence: each line "
             "is cut at sentence and utterance (speaker tag) boundaries."),
    "speaker_tags": click.option(
        "--speaker-tags", type=click.Choice(["keep", "drop"]),
        help="--documents sentence: keep (default) or drop speaker tags such as *MOT: and A:."),
    "sampling": click.option(
        "--sampling", type=click.Choice(["epochs", "uniform"]),
        help="Training windows: epochs (default; a fresh seeded permutation of the windows "
             "each epoch) or uniform (random positions, with replacement)."),
    "epochs": click.option("--epochs", type=POSITIVE_FLOAT,
                           help="Passes over the training data (default 1)."),
    "log_to": click.option(
        "--log-to", type=TrackerList(), metavar="TRACKERS",
        help="Also send the metrics to tensorboard, wandb and/or mlflow, e.g. "
             "tensorboard,wandb (each needs its extra: pip install 'minidml[wandb]')."),
    "max_time": click.option(
        "--max-time", type=Duration(),
        help="Train for this much wall time, e.g. 60m: the steps are planned from the "
             "measured throughput, so the schedule ends when the time does."),
}

LENGTHS = ("steps", "tokens", "epochs", "max_time")  # one length of training overrides others'


def one_length(given: dict[str, Any]) -> dict[str, Any]:
    """A length of training given now replaces a config file's or the run's own."""
    if any(k in given for k in LENGTHS):
        return {**{k: None for k in LENGTHS}, **given}
    return given


def shared(*names: str) -> Any:
    """Apply the shared training options ``names``, listed in that order."""
    def apply(f: Any) -> Any:
        for name in reversed(names):
            f = SHARED_OPTIONS[name](f)
        return f
    return apply


def glue_options(tasks: str | None, max_train_examples: int | None, epochs: int | None
                 ) -> dict[str, Any]:
    """The glue suite's options from the command line (those given)."""
    return {k: v for k, v in (("tasks", tasks), ("max_train_examples", max_train_examples),
                              ("epochs", epochs)) if v is not None}


def run_or_latest(run_dir: Path | None) -> Path:
    """RUN_DIR, or when none is given the newest run under ``runs/`` (saying which)."""
    from .rundir import latest_run

    if run_dir is not None:
        return run_dir
    found = latest_run()
    if found is None:
        raise MinidmlError("no run given and none under runs/; train one with "
                           "`minidml train CORPUS` or `minidml demo`")
    click.echo(f"using the latest run: {found}", err=True)
    return found
