"""The ``minidml`` command: a thin layer over the Python API.

Every user-facing failure is a :class:`~minidml.errors.MinidmlError` or a click usage error:
one line on stderr and a non-zero exit status, never a traceback (set ``MINIDML_DEBUG=1`` to
see one for an unexpected internal error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from . import __version__
from .errors import MinidmlError


class Count(click.ParamType):
    """A positive whole number, with an optional k/M/B suffix: ``20M``, ``1.5k``."""

    name = "count"

    def convert(self, value: Any, param, ctx) -> int:
        from .search import parse_count

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minidml")
def cli() -> None:
    """Train small language models together by weighted mutual learning."""


# ----------------------------------------------------------------------------- train
def _student_shapes(k: int | None, layers, width, heads, mlp_ratio, base) -> tuple | None:
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


_TRAIN_OPTIONS = {  # CLI option name -> TrainConfig field
    "vocab_size": "vocab_size", "tokenizer_type": "tokenizer_type", "context": "context",
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
_SHARED_OPTIONS = {
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


def _one_length(given: dict[str, Any]) -> dict[str, Any]:
    """A length of training given now replaces a config file's or the run's own."""
    if any(k in given for k in LENGTHS):
        return {**{k: None for k in LENGTHS}, **given}
    return given


def _shared(*names: str) -> Any:
    """Apply the shared training options ``names``, listed in that order."""
    def apply(f: Any) -> Any:
        for name in reversed(names):
            f = _SHARED_OPTIONS[name](f)
        return f
    return apply


@cli.command()
@click.argument("corpus", nargs=-1, required=True, type=FilePath())
@click.option("--out", type=FilePath(),
              help="Run directory (default: a new one under runs/).")
@click.option("--students", "k", type=POSITIVE, help="Number of students K (default 4).")
@click.option("--layers", type=IntList(), help="Layers, one value or one per student.")
@click.option("--width", type=IntList(), help="Model width, one value or one per student.")
@click.option("--heads", type=IntList(), help="Attention heads, one value or one per student.")
@click.option("--mlp-ratio", type=POSITIVE_FLOAT, help="SwiGLU hidden size / width.")
@click.option("--budget", type=Count(),
              help="Total parameter budget N: search K diverse shapes for N/2, N/3, ...")
@click.option("--mode", type=click.Choice(["single", "dml", "wml", "kd"]),
              help="single: independent students; dml: equal fixed peer weights; wml (default): "
                   "peer weights learned by bi-level optimisation; kd: distil each student "
                   "from --teacher runs.")
@click.option("--teacher", multiple=True, type=FilePath(),
              help="kd: a trained run whose champion student teaches (repeat for an ensemble, "
                   "whose probabilities are averaged).")
@_shared("hypergrad", "unroll", "outer_every", "outer_lr", "outer_objective", "vocab_size",
         "tokenizer_type", "context", "batch_size", "grad_accum")
@click.option("--steps", type=Count(), help="Optimiser steps (default: one epoch).")
@click.option("--tokens", type=Count(), help="Training tokens per student, e.g. 10M.")
@_shared("epochs", "max_time", "sampling", "documents", "speaker_tags", "lr", "warmup",
         "schedule", "alpha", "alpha_warmup", "temperature", "device", "precision", "compile",
         "on_nonfinite")
@click.option("--peer-dtype", type=click.Choice(["fp32", "bf16"]),
              help="Under torchrun: dtype of the logits students send to peers on other ranks "
                   "(default fp32, as one process computes; bf16 halves the bytes).")
@_shared("seed", "encoding_errors", "log_to")
@click.option("--eval-every", type=POSITIVE)
@click.option("--save-every", type=POSITIVE)
@click.option("--keep-checkpoints", type=click.IntRange(min=0),
              help="Newest checkpoints kept (default 2); 0 keeps every one, for learning "
                   "curves (minidml eval --step all).")
@click.option("--log-every", type=POSITIVE)
@click.option("--config", "config_file", type=FilePath(),
              help="TOML file of settings; options given here override it.")
@click.option("--resume", is_flag=True, help="Continue the run in --out (or the latest run).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def train(ctx: click.Context, corpus: tuple[Path, ...], out: Path | None, k: int | None,
          layers, width, heads, mlp_ratio, config_file: Path | None, resume: bool,
          force: bool, quiet: bool, **options: Any) -> None:
    """Train students on CORPUS (text, .gz or .xz files, or directories of them)."""
    from .config import TrainConfig
    from .launch import train as run_training
    from .rundir import latest_run, read_run_config

    if resume and out is None:
        out = latest_run()
        if out is None:
            raise MinidmlError("--resume: no run under runs/; give --out RUN_DIR")
    if resume:  # settings not given now come from the run itself
        base = TrainConfig.from_dict(read_run_config(out)["config"], str(out / "config.json"))
    else:
        base = TrainConfig()
    if config_file is not None:
        base = base.replace(**TrainConfig.toml_settings(config_file))
    given = {field: options[name] for name, field in _TRAIN_OPTIONS.items()
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if "teachers" in given:
        given["teachers"] = tuple(str(t) for t in given["teachers"])
    given = _one_length(given)
    if given.get("budget") and (layers or width or heads or mlp_ratio):
        raise MinidmlError("--budget searches the shapes: drop --layers/--width/--heads/"
                           "--mlp-ratio, or drop --budget")
    shapes = _student_shapes(k, layers, width, heads, mlp_ratio, base.students)
    if shapes is not None:
        given["students"] = shapes
    cfg = base.replace(**given)
    progress = not quiet and sys.stderr.isatty()

    def started(path: Path) -> None:
        click.echo(f"run directory: {path}", err=True)

    from .distributed import env_world, reports

    try:
        run = run_training(list(corpus), out, cfg, resume=resume, force=force,
                           progress=progress, on_start=started)
    except MinidmlError as e:  # under torchrun: one rank says it
        if not reports(e):
            raise SystemExit(1) from None
        raise
    if env_world()[1] != 0:  # under torchrun, rank 0 reports
        return
    if run.last_eval is None:
        click.echo(f"{run.path} had already finished its {run.step} steps; nothing to do")
        return
    for i, loss in enumerate(run.last_eval["val_loss"]):
        click.echo(f"student {i}: validation loss {loss:.3f}")
    click.echo(f"trained {len(run.students)} student(s) for {run.step} steps: {run.path}")
    click.echo(f"next: minidml generate {run.path} --prompt 'The'")


# ----------------------------------------------------------------------------- compare
_COMPARE_TRAIN_OPTIONS = ("vocab_size", "tokenizer_type", "documents", "speaker_tags",
                          "sampling", "epochs", "max_time", "context", "batch_size",
                          "grad_accum", "lr", "warmup", "schedule", "alpha", "temperature",
                          "alpha_warmup", "hypergrad", "unroll",
                          "outer_every", "outer_lr", "outer_objective", "device", "precision",
                          "compile", "on_nonfinite", "seed", "encoding_errors", "log_to")


@cli.command()
@click.argument("corpus", nargs=-1, required=True, type=FilePath())
@click.option("--out", type=FilePath(), help="Comparison directory (default: runs/compare-…).")
@click.option("--budget", type=Count(), required=True,
              help="Parameter budget N: students of N/2, N/3, …; the kd teacher gets N.")
@click.option("--students", "k", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("--tokens", type=Count(), help="Training tokens per model (default: one pass).")
@click.option("--seeds", type=POSITIVE, default=1, show_default=True,
              help="Repeat every arm with seeds seed, seed+1, …")
@click.option("--suites", default=",".join(("blimp", "blimp-supplement", "ewok")),
              show_default=True,
              help="Comma-separated evaluation suites, or all (those whose data is present).")
@click.option("--arms", default="single,kd,dml,wml", show_default=True,
              help="Comma-separated subset of single, kd, dml, wml.")
@click.option("--teacher-params", type=Count(), help="Size of kd's teacher (default N).")
@click.option("--limit", type=POSITIVE, help="At most N examples per evaluation task.")
@click.option("--eval-batch-size", type=POSITIVE, default=64, show_default=True)
@click.option("--eval-points", type=POSITIVE, default=10, show_default=True,
              help="Validation-loss evaluations per run (for the curves).")
@click.option("--data-dir", type=FilePath(), help="Evaluation data root.")
@click.option("--glue-tasks", help="glue: a comma-separated subset of tasks, e.g. rte,boolq.")
@click.option("--max-train-examples", type=POSITIVE, help="glue: cap on training examples.")
@click.option("--glue-epochs", type=POSITIVE, help="glue: at most this many fine-tuning epochs "
              "(default 10).")
@_shared(*_COMPARE_TRAIN_OPTIONS)
@click.option("--vary", multiple=True, metavar="[ARM:]KEY=V1,V2",
              help="Ablation: add arms that change one setting of ARM (default wml), one per "
                   "value, e.g. --vary alpha=0.25,0.75 --vary hypergrad=first-order.")
@click.option("--config", "config_file", type=FilePath(),
              help="TOML file of training settings shared by the arms.")
@click.option("--resume", is_flag=True, help="Reuse finished arms and continue the others.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def compare(ctx: click.Context, corpus: tuple[Path, ...], out: Path | None, budget: int,
            k: int, seeds: int, suites: str, arms: str, teacher_params: int | None,
            limit: int | None, eval_batch_size: int, eval_points: int, data_dir: Path | None,
            glue_tasks: str | None, max_train_examples: int | None, glue_epochs: int | None,
            vary: tuple[str, ...], config_file: Path | None, resume: bool, force: bool,
            quiet: bool, tokens: int | None, **options: Any) -> None:
    """Single student, teacher distillation, DML and WML on CORPUS at equal data."""
    from datetime import datetime

    from .compare import CompareConfig, Variant, format_report
    from .compare import compare as run_compare
    from .config import TrainConfig

    base, from_file = TrainConfig(), {}
    if config_file is not None:
        from_file = TrainConfig.toml_settings(config_file)
        base = base.replace(**from_file)
    given = {_TRAIN_OPTIONS[name]: options[name] for name in _COMPARE_TRAIN_OPTIONS
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if tokens is not None:
        given["tokens"] = tokens
    given = _one_length(given)
    config = CompareConfig(
        budget=budget, students=k, seeds=seeds,
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        suites=tuple(s.strip() for s in suites.split(",") if s.strip()),
        teacher_params=teacher_params, eval_limit=limit, eval_batch_size=eval_batch_size,
        eval_points=eval_points, train=base.replace(**given),
        suite_options=_glue_options(glue_tasks, max_train_examples, glue_epochs),
        variants=tuple(v for text in vary for v in Variant.parse(text)))
    config.check_train(list(from_file))
    if out is None:
        out = Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    click.echo(f"comparison directory: {out}", err=True)
    report = run_compare(list(corpus), out, config, resume=resume, force=force,
                         progress=not quiet and sys.stderr.isatty(), data_dir=data_dir,
                         on_event=lambda message: click.echo(message, err=True))
    click.echo(format_report(report), nl=False)
    click.echo(f"report: {out / 'report.md'} and {out / 'report.json'}")
    click.echo(f"next: minidml plot {out}")


def _glue_options(tasks: str | None, max_train_examples: int | None, epochs: int | None
                  ) -> dict[str, Any]:
    """The glue suite's options from the command line (those given)."""
    return {k: v for k, v in (("tasks", tasks), ("max_train_examples", max_train_examples),
                              ("epochs", epochs)) if v is not None}


@cli.command()
@click.argument("path", required=False, type=FilePath())
@click.option("--out", type=FilePath(), help="Where the pictures go (default: PATH/plots).")
@click.option("--format", "formats", type=click.Choice(["png", "svg", "pdf"]), multiple=True,
              help="File formats (default: png and svg).")
def plot(path: Path | None, out: Path | None, formats: tuple[str, ...]) -> None:
    """Draw losses, ω and suite scores of a run or a comparison (default: the latest run)."""
    from .plot import FORMATS
    from .plot import plot as draw

    for written in draw(_run_or_latest(path), out, formats or FORMATS):
        click.echo(str(written))


# ----------------------------------------------------------------------------- search
@cli.command()
@click.option("--budget", type=Count(), help="Total parameters N, e.g. 20M.")
@click.option("--students", "k", default=4, show_default=True, type=POSITIVE)
@click.option("--targets", help="Explicit per-student targets instead, e.g. 10M,5M,3M.")
@click.option("--scheme", type=click.Choice(["harmonic", "equal"]), default="harmonic",
              show_default=True, help="harmonic: N/2, N/3, ...; equal: N/K each.")
@click.option("--vocab-size", type=click.IntRange(min=300), default=16384, show_default=True)
@click.option("--context", type=click.IntRange(min=1), default=128, show_default=True,
              help="Context of the predicted tokens/s.")
@click.option("--device", default="cpu", show_default=True,
              help="Device whose fp32 matmul peak the tokens/s are predicted from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def search(budget: int | None, k: int, targets: str | None, scheme: str, vocab_size: int,
           context: int, device: str, as_json: bool) -> None:
    """Choose K diverse student shapes that hit parameter targets, and predict how fast each
    trains here (no model is built; the matmul peak is measured in milliseconds)."""
    import json

    from . import search as student_search
    from . import throughput
    from .devices import resolve_device
    from .model import StudentConfig

    if (budget is None) == (targets is None):
        raise MinidmlError("search: give --budget N or --targets N1,N2,... (one of them)")
    if targets is not None:
        goals = [student_search.parse_count(t, "--targets") for t in targets.split(",")]
        found = student_search.search(goals, vocab_size)
    else:
        found = student_search.plan(budget, k, vocab_size, scheme=scheme)
    peak = throughput.matmul_peak(resolve_device(device))
    rates = [throughput.tokens_per_second(StudentConfig.from_shape(c.shape, vocab_size, context),
                                          peak, context) for c in found]
    if as_json:
        click.echo(json.dumps([{**c.to_dict(), "predicted_tokens_per_s": r}
                               for c, r in zip(found, rates, strict=True)], indent=2))
        return
    click.echo(student_search.format_table(found, rates))
    click.echo(f"tok/s: predicted for {device} (fp32 matmul peak {peak / 1e9:.0f} GFLOP/s "
               f"measured now, × the step efficiency by width; README, Student search), "
               f"context {context}; all {len(found)} in one step: "
               f"{throughput.together(rates):,.0f} tok/s")


# ----------------------------------------------------------------------------- demo
@cli.command()
@click.option("--out", type=FilePath(),
              help="Run directory (default: runs/demo-…).")
@click.option("--steps", type=Count(), help="Optimiser steps (default 400).")
@click.option("--device", default="auto")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out: Path | None, steps: int | None, device: str, force: bool, quiet: bool) -> None:
    """Generate the built-in grammar corpus and train two students on it (a few minutes)."""
    from .demo import demo_corpus, run_demo

    click.echo(f"corpus: {demo_corpus()} (generated by minidml.grammar)", err=True)
    overrides = {"device": device} | ({"steps": steps} if steps else {})
    run = run_demo(out, progress=not quiet and sys.stderr.isatty(), force=force, **overrides)
    losses = run.last_eval or {}
    click.echo(f"run directory: {run.path}")
    for i, loss in enumerate(losses.get("val_loss", [])):
        click.echo(f"  student {i} ({run.config.students[i]}, "
                   f"{run.students[i].config.n_params / 1e6:.2f}M parameters, "
                   f"ω = {run.omega[i]:.2f}): validation loss {loss:.3f}")
    if "ensemble_val_loss" in losses:
        click.echo(f"  ensemble:  validation loss {losses['ensemble_val_loss']:.3f}")
    for i in range(len(run.students)):
        click.echo(f"  sample from student {i}: {run.generate('The', i, 20, seed=i)}")
    click.echo(f"next: minidml generate {run.path} --prompt 'The dogs'")
    click.echo(f"      minidml train {demo_corpus()} --out {run.path} --resume  (continue it)")


# ----------------------------------------------------------------------------- generate
@cli.command()
@click.argument("run_dir", required=False, type=FilePath())
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--student", default=0, type=click.IntRange(min=0), help="Which student.")
@click.option("--max-tokens", default=50, type=POSITIVE)
@click.option("--temperature", default=0.8, type=click.FloatRange(min=0))
@click.option("--top-k", default=50, type=POSITIVE)
@click.option("--samples", "-n", default=1, type=POSITIVE)
@click.option("--seed", default=0, type=click.IntRange(min=0))
@click.option("--device", default="cpu")
def generate(run_dir: Path | None, prompt: str, student: int, max_tokens: int,
             temperature: float, top_k: int, samples: int, seed: int, device: str) -> None:
    """Sample text from a student of RUN_DIR (default: the latest run)."""
    from .rundir import load

    run = load(_run_or_latest(run_dir), device)
    if student >= len(run.students):
        raise MinidmlError(f"--student {student}: the run has {len(run.students)} students "
                           f"(0..{len(run.students) - 1})")
    for i in range(samples):
        click.echo(run.generate(prompt, student, max_tokens, temperature, top_k, seed + i))


# ----------------------------------------------------------------------------- evaluation
@cli.command(name="eval")
@click.argument("run_dir", required=False, type=FilePath())
@click.option("--suite", "suite_names", multiple=True, required=True,
              help="Suite to run (repeatable); `all`: every suite whose data is present.")
@click.option("--student", default="all", show_default=True,
              help="all (each student and the ensemble), ensemble, champion (the student "
                   "with the lowest validation loss at that checkpoint), or a student index.")
@click.option("--data-dir", type=FilePath(),
              help="Evaluation data root (default: $MINIDML_DATA_DIR, else the cache that "
                   "`minidml data fetch` fills).")
@click.option("--limit", type=POSITIVE, help="At most N examples per task.")
@click.option("--step", "step_text", default="latest", show_default=True,
              help="The checkpoint to evaluate: latest, a step number, or all (every kept "
                   "checkpoint, oldest first, one results file each).")
@click.option("--batch-size", default=64, show_default=True, type=POSITIVE)
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="bf16: the models run under bfloat16 autocast.")
@click.option("--output", type=FilePath(),
              help="Results JSON (default: RUN_DIR/eval/results-step<N>-<date>.json).")
@click.option("--log-samples", is_flag=True,
              help="Also write every scored pair's log-likelihoods, one JSON line each, to "
                   "the results file's name with .samples.jsonl.")
@click.option("--glue-tasks", help="glue: a comma-separated subset of tasks, e.g. rte,mrpc.")
@click.option("--max-train-examples", type=POSITIVE, help="glue: cap on training examples.")
@click.option("--epochs", type=POSITIVE, help="glue: at most this many epochs (default 10).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_(run_dir: Path | None, suite_names: tuple[str, ...], student: str,
          data_dir: Path | None, limit: int | None, step_text: str, batch_size: int,
          device: str, precision: str, output: Path | None, log_samples: bool,
          glue_tasks: str | None, max_train_examples: int | None, epochs: int | None,
          quiet: bool) -> None:
    """Evaluate the students of RUN_DIR (default: the latest run), or a Hugging Face causal
    LM's directory, on benchmark suites."""
    from .evaluation import evaluate
    from .hf_models import is_hf_model_dir, load_hf
    from .rundir import checkpoint_steps, load

    path = _run_or_latest(run_dir)
    hf = is_hf_model_dir(path)
    if hf and step_text != "latest":
        raise MinidmlError(f"--step {step_text}: {path} is a Hugging Face model, which has no "
                           "checkpoints; drop --step")
    if step_text == "all":
        steps: list[int | None] = list(checkpoint_steps(path))
        if not steps:
            raise MinidmlError(f"--step all: {path} has no checkpoint yet")
        if output is not None and len(steps) > 1:
            raise MinidmlError("--output names one file; --step all writes one per "
                               "checkpoint into RUN_DIR/eval: drop --output")
    elif step_text == "latest":
        steps = [None]
    else:
        try:
            steps = [int(step_text)]
        except ValueError:
            raise MinidmlError(f"--step {step_text!r}: give latest, all or a step "
                               "number") from None
    options = _glue_options(glue_tasks, max_train_examples, epochs)

    def announce(outcome) -> None:
        click.echo(f"[{outcome.spec.name}] {outcome.status} ({outcome.seconds:.1f}s)"
                   + (f": {outcome.error}" if outcome.error else ""), err=True)

    for step in steps:
        run = load_hf(path, device) if hf else load(path, device, step)
        if len(steps) > 1:
            click.echo(f"step {run.step}:")
        results = evaluate(run, suite_names, student=student, data_dir=data_dir, limit=limit,
                           batch_size=batch_size, precision=precision,
                           progress=not quiet and sys.stderr.isatty(),
                           options=options, on_suite=announce)
        click.echo(results.table(), nl=False)
        stamp = results.date.replace(":", "").replace("-", "")[:15]
        # a run's results name the step they evaluated (minidml plot draws the curve from them)
        name = f"results-{stamp}.json" if hf else f"results-step{run.step}-{stamp}.json"
        written = results.write(output or run.path / "eval" / name)
        click.echo(f"results: {written}")
        if log_samples:
            samples = results.write_samples(written.with_name(written.stem + ".samples.jsonl"))
            click.echo(f"samples: {samples}")
    if not results.ok:
        failed = [o.spec.name for o in results.outcomes if o.status != "ok"]
        raise MinidmlError(f"suite(s) {', '.join(failed)} did not complete (see above)")


@cli.command(name="suites")
@click.option("--data-dir", type=FilePath(),
              help="Data root to check (default: $MINIDML_DATA_DIR, else the cache).")
def suites_(data_dir: Path | None) -> None:
    """List every evaluation suite: name, package, description, whether its data is here."""
    from .evaluation import resolve_data_dir
    from .plugins import suites

    root = resolve_data_dir(data_dir)
    found = suites()
    rows = [(n, f"{s.package} {s.package_version}".strip(), "yes" if s.data_present(root)
             else "no", s.description) for n, s in sorted(found.items())]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in
              enumerate(("suite", "package", "data"))]
    head = ("suite", "package", "data", "description")
    for r in [head, *rows]:
        click.echo("  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[3])
    click.echo(f"data root: {root}")


@cli.group()
def data() -> None:
    """Evaluation data: download it with pinned checksums."""


@data.command()
@click.argument("suite_names", nargs=-1, required=True)
@click.option("--data-dir", type=FilePath(),
              help="Where to put it (default: $MINIDML_DATA_DIR, else the cache).")
@click.option("--mirror", help="Base URL of a mirror with the data root's layout.")
@click.option("--force", is_flag=True, help="Download again even when files are present.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def fetch(suite_names: tuple[str, ...], data_dir: Path | None, mirror: str | None,
          force: bool, quiet: bool) -> None:
    """Download the data of SUITE... (`all`: every suite) and check its sha256 sums."""
    from .evaluation import resolve_data_dir
    from .fetch import fetch as download
    from .plugins import suites

    found = suites()
    names = list(found) if "all" in suite_names else list(suite_names)
    for name in names:
        if name not in found:
            raise MinidmlError(f"{name}: no such suite; choose from {', '.join(sorted(found))}")
    root = resolve_data_dir(data_dir)
    for name in names:
        files = found[name].sources
        if not files:
            click.echo(f"{name}: nothing to download", err=True)
            continue
        got = download(files, root, mirror=mirror, force=force,
                       progress=not quiet and sys.stderr.isatty())
        click.echo(f"{name}: {len(got)} downloaded, {len(files) - len(got)} already present "
                   f"and verified, in {root}")


# ----------------------------------------------------------------------------- export
@cli.command(name="export")
@click.argument("run_dir", metavar="RUN", type=FilePath())
@click.argument("out_dir", type=FilePath())
@click.option("--student", default="champion", show_default=True,
              help="A student index, or champion: the one with the lowest validation loss.")
@click.option("--format", "fmt", default="hf", show_default=True,
              help="hf: a Hugging Face transformers directory (LlamaForCausalLM).")
@click.option("--force", is_flag=True, help="Replace an existing non-empty OUT_DIR.")
def export_(run_dir: Path, out_dir: Path, student: str, fmt: str, force: bool) -> None:
    """Export a student of RUN to OUT_DIR, e.g. for lm-evaluation-harness."""
    from .export import FORMATS, export_hf, require_hf, resolve_student
    from .rundir import load

    if fmt not in FORMATS:
        raise MinidmlError(f"--format {fmt}: unknown; choose {' or '.join(FORMATS)}")
    require_hf()
    run = load(run_dir)
    index = resolve_student(run, student)
    path = export_hf(run, index, out_dir, force=force)
    why = " (champion: lowest validation loss)" if student == "champion" else ""
    click.echo(f"exported student {index}{why} of {run.path} at step {run.step}: {path}")
    click.echo(f"next: lm_eval --model hf --model_args pretrained={path} --tasks blimp")


def _run_or_latest(run_dir: Path | None) -> Path:
    from .rundir import latest_run

    if run_dir is not None:
        return run_dir
    found = latest_run()
    if found is None:
        raise MinidmlError("no run given and none under runs/; train one with "
                           "`minidml train CORPUS` or `minidml demo`")
    click.echo(f"using the latest run: {found}", err=True)
    return found


# ----------------------------------------------------------------------------- entry point
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="minidml", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        if isinstance(e, _SHOWS_HELP):  # a group or command called without arguments
            e.show()
        else:  # one line: what is wrong, and where the options are listed
            where = e.ctx.command_path if e.ctx is not None else "minidml"
            click.echo(f"error: {e.format_message()} (see {where} --help)", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except MinidmlError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted; training continues from its last checkpoint with --resume",
                   err=True)
        sys.exit(130)
    except OSError as e:
        if os.environ.get("MINIDML_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(1)
    except Exception as e:  # an internal error: one line unless debugging
        if os.environ.get("MINIDML_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e} (set MINIDML_DEBUG=1 for the "
                   "traceback and please report it)", err=True)
        sys.exit(70)
