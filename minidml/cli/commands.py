"""The ``minidml`` command: a thin layer over the Python API.

Every user-facing failure is a :class:`~minidml.errors.MinidmlError` or a click usage error:
one line on stderr and a non-zero exit status, never a traceback (set ``MINIDML_DEBUG=1`` to
see one for an unexpected internal error).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..config import FIELDS, TrainConfig
from ..demo.settings import DEMO_STEPS
from ..errors import MinidmlError
from ..experiments.config import EVAL_STUDENTS, WORDS, CompareConfig
from ..tokenizer import MAX_AUTO_VOCAB, MIN_VOCAB
from .babylm import babylm
from .options import (
    GLUE_POOLING_HELP,
    GLUE_SET_HELP,
    POSITIVE,
    POSITIVE_FLOAT,
    Count,
    CountList,
    FilePath,
    IntList,
    Names,
    config_options,
    given_settings,
    glue_options,
    one_length,
    run_flags,
    student_shapes,
)
from .results import data, eval_, export_, generate, plot, suites_

_DEFAULT = TrainConfig()
_COMPARE: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(CompareConfig)}
_SHAPE = _DEFAULT.students[0]
_SCHEME = FIELDS["budget_scheme"]
# train takes every setting that has an option, in TrainConfig's order
TRAIN_SETTINGS = tuple(name for name, f in FIELDS.items() if f.metadata["setting"].option(name))


HELP_OPTIONS = ["-h", "--help"]


@click.group(context_settings={"help_option_names": HELP_OPTIONS})
@click.version_option(__version__, prog_name="minidml")
def cli() -> None:
    """Train small language models together by weighted mutual learning."""


# ----------------------------------------------------------------------------- train
@cli.command()
@click.argument("corpus", nargs=-1, required=True, type=FilePath())
@click.option("--out", type=FilePath(),
              help="Run directory (default: a new one under runs/).")
@click.option("--students", "k", type=POSITIVE,
              help=f"Number of students K (default: {len(_DEFAULT.students)}).")
@click.option("--layers", type=IntList(),
              help=f"Layers, one value or one per student (default: {_SHAPE.n_layers}).")
@click.option("--width", type=IntList(),
              help=f"Model width, one value or one per student (default: {_SHAPE.d_model}).")
@click.option("--heads", type=IntList(), help="Attention heads, one value or one per student "
              f"(default: {_SHAPE.n_heads}).")
@click.option("--mlp-ratio", type=POSITIVE_FLOAT,
              help=f"SwiGLU hidden size / width (default: {_SHAPE.mlp_ratio:.3g}).")
@config_options(*TRAIN_SETTINGS)
@run_flags("TOML file of settings; options given here override it.",
           "Continue the run in --out (or the latest run).")
@click.pass_context
def train(ctx: click.Context, corpus: tuple[Path, ...], out: Path | None, k: int | None,
          layers, width, heads, mlp_ratio, config_file: Path | None, resume: bool,
          force: bool, quiet: bool, **options: Any) -> None:
    """Train students on CORPUS (text, .gz or .xz files, or directories of them)."""
    from ..launch import train as run_training
    from ..rundir import latest_run, read_run_config

    run_config: Path | None = None  # the resumed run's config.json
    if resume:  # settings not given now come from the run itself
        if out is None:
            out = latest_run()
            if out is None:
                raise MinidmlError("--resume: no run under runs/; give --out RUN_DIR")
        run_config = out / "config.json"
        base = TrainConfig.from_dict(read_run_config(out)["config"], str(run_config))
    else:
        base = TrainConfig()
    from_file = {} if config_file is None else TrainConfig.toml_settings(config_file)
    given = one_length(given_settings(ctx, options, TRAIN_SETTINGS))
    shape_options = {"--layers": layers, "--width": width, "--heads": heads,
                     "--mlp-ratio": mlp_ratio}
    _budget_or_shapes(given, from_file, config_file, [o for o, v in shape_options.items()
                                                      if v is not None],
                      run_config if base.budget is not None else None)
    base = base.replace(**from_file)
    shapes = student_shapes(k, layers, width, heads, mlp_ratio, base.students)
    if shapes is not None:
        given["students"] = shapes
    cfg = base.replace(**given)
    progress = not quiet and sys.stderr.isatty()

    def started(path: Path) -> None:
        click.echo(f"run directory: {path}", err=True)

    from ..distributed import env_world, reports

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


def _budget_or_shapes(given: dict[str, Any], from_file: dict[str, Any], config_file: Path | None,
                      shape_options: list[str], run_budget: Path | None) -> None:
    """Refuse a budget (whose search sets the students' shapes) together with shapes given
    explicitly, wherever each comes from: the command line, the --config file, or (the
    budget) the resumed run's ``config.json``."""
    shapes = [*([("/".join(shape_options), "drop " + "/".join(shape_options))]
                if shape_options else []),
              *([(f"students in {config_file}", f"remove students from {config_file}")]
                if "students" in from_file else [])]
    if not shapes:
        return
    if run_budget is not None:  # the run's shapes were searched, and resuming keeps them
        raise MinidmlError(f"{shapes[0][0]}: the run's budget (in {run_budget}) chose its "
                           f"students' shapes, which resuming keeps; {shapes[0][1]}")
    budgets = [*(["--budget"] if "budget" in given else []),
               *([f"budget in {config_file}"] if "budget" in from_file else [])]
    if budgets:
        raise MinidmlError(f"{budgets[0]} and {shapes[0][0]}: a budget searches the students' "
                           "shapes; give one or the other")


# ----------------------------------------------------------------------------- compare
_COMPARE_OPTIONS = ("vocab_size", "tokenizer_type", "tokenizer_boundary", "documents",
                    "speaker_tags", "sampling", "epochs", "max_time", "context",
                    "batch_size", "grad_accum", "optimizer", "lr",
                    "warmup_steps", "schedule", "alpha", "temperature", "alpha_warmup", "hypergrad",
                    "unroll", "outer_every", "outer_lr", "outer_objective", "device",
                    "precision", "compile", "on_nonfinite", "seed", "encoding_errors",
                    "log_to")


@cli.command()
@click.argument("corpus", nargs=-1, required=True, type=FilePath())
@click.option("--out", type=FilePath(), help="Comparison directory (default: runs/compare-…).")
@click.option("--budget", type=Count(), required=True,
              help="Parameter budget N: students of N/2, N/3, …; the kd teacher gets N.")
@click.option("--students", "k", type=click.IntRange(min=2), default=_COMPARE["students"],
              show_default=True)
@click.option("--tokens", type=Count(), help="Training tokens T (default: one pass).")
@click.option("--words", type=click.Choice(WORDS), default=_COMPARE["words"], show_default=True,
              help="What equal data holds equal: per-model, every model reads T (the paper's "
                   "framing); total, an arm's models read T together, as BabyLM counts all "
                   "text seen by all training (single T; kd's teacher and student T/2 each; "
                   "dml's and wml's K students T/K each).")
@click.option("--seeds", type=POSITIVE, default=_COMPARE["seeds"], show_default=True,
              help="Repeat every arm with seeds seed, seed+1, …")
@click.option("--suites", type=Names(), default=",".join(_COMPARE["suites"]), show_default=True,
              help="Comma-separated evaluation suites, or all (those whose data is present).")
@click.option("--arms", type=Names(), default=",".join(_COMPARE["arms"]), show_default=True,
              help="Comma-separated subset of " + ", ".join(_COMPARE["arms"]) + ".")
@click.option("--teacher-params", type=Count(), help="Size of kd's teacher (default N).")
@click.option("--limit", type=POSITIVE, help="At most N examples per evaluation task.")
@click.option("--eval-batch-size", type=POSITIVE, default=_COMPARE["eval_batch_size"],
              show_default=True)
@click.option("--eval-students", type=click.Choice(EVAL_STUDENTS),
              default=_COMPARE["eval_students"], show_default=True,
              help="Which models the suites score: every student and the ensemble, or each "
                   "arm's champion only (GLUE fine-tunes every model it scores).")
@click.option("--curve-suites", type=Names(), help="Learning curves: score each arm's "
              "champion at its checkpoints by words seen on these comma-separated suites, "
              "e.g. babylm-fast.")
@click.option("--curve-words", type=CountList(), help="The curves' counts of words (in the "
              "--words accounting), e.g. 1M,2M,5M (default: 1M, 2M, … 10M, 20M, … as far as "
              "each arm reads).")
@click.option("--eval-points", type=POSITIVE, default=_COMPARE["eval_points"], show_default=True,
              help="Validation-loss evaluations per run (for the curves).")
@click.option("--data-dir", type=FilePath(), help="Evaluation data root.")
@click.option("--glue-tasks", help="glue: a comma-separated subset of tasks, e.g. rte,boolq.")
@click.option("--max-train-examples", type=POSITIVE, help="glue: cap on training examples.")
@click.option("--glue-epochs", type=POSITIVE, help="glue: at most this many fine-tuning epochs "
              "(default: the suite's own).")
@click.option("--glue-set", metavar="2024|2026", help=GLUE_SET_HELP)
@click.option("--glue-pooling", metavar="last|first", help=GLUE_POOLING_HELP)
@config_options(*_COMPARE_OPTIONS)
@click.option("--vary", multiple=True, metavar="[ARM:]KEY=V1,V2",
              help="Ablation: add arms that change one setting of ARM (default wml), one per "
                   "value, e.g. --vary alpha=0.25,0.75 --vary hypergrad=first-order.")
@click.option("--reuse-from", type=click.Path(path_type=Path), default=None,
              help="Another comparison on the same corpus: an arm whose models would train "
                   "exactly as one of its finished runs did (settings, tokenizer, steps) "
                   "takes that run instead of training again, with its evaluations where "
                   "they were made alike (else its checkpoints are evaluated here), e.g. dml "
                   "and wml of --words per-model for --words total at K times the tokens.")
@click.option("--only", type=Names(), metavar="ARMS", help="Train and evaluate only these arms now "
              "(comma-separated, as the report names them), in every seed; the others wait "
              "for a later --resume, and the report covers the finished arms.")
@click.option("--only-seeds", type=IntList(least=0), metavar="SEEDS",
              help="Likewise, train and evaluate only these seeds' arms now (comma-separated, "
                   "0 for the first, as the report counts them); with --only, its arms in "
                   "these seeds.")
@run_flags("TOML file of training settings shared by the arms.",
           "Reuse finished arms and continue the others (more --seeds or --vary add arms).")
@click.pass_context
def compare(ctx: click.Context, corpus: tuple[Path, ...], out: Path | None, budget: int,
            k: int, seeds: int, suites: tuple[str, ...], arms: tuple[str, ...],
            teacher_params: int | None,
            limit: int | None, eval_batch_size: int, eval_students: str, eval_points: int,
            curve_suites: tuple[str, ...] | None, curve_words: tuple[int, ...] | None,
            data_dir: Path | None,
            glue_tasks: str | None, max_train_examples: int | None, glue_epochs: int | None,
            glue_set: str | None, glue_pooling: str | None,
            vary: tuple[str, ...], config_file: Path | None, resume: bool, force: bool,
            quiet: bool, tokens: int | None, words: str, reuse_from: Path | None,
            only: tuple[str, ...] | None, only_seeds: tuple[int, ...] | None,
            **options: Any) -> None:
    """Single student, teacher distillation, DML and WML on CORPUS at equal data."""
    from datetime import datetime

    from ..experiments.compare import Variant, format_report
    from ..experiments.compare import compare as run_compare

    base, from_file = TrainConfig(), {}
    if config_file is not None:
        from_file = TrainConfig.toml_settings(config_file)
        base = base.replace(**from_file)
    given = given_settings(ctx, options, _COMPARE_OPTIONS)
    if tokens is not None:
        given["tokens"] = tokens
    given = one_length(given)
    config = CompareConfig(
        budget=budget, students=k, seeds=seeds,
        arms=arms, suites=suites,
        teacher_params=teacher_params, eval_limit=limit, eval_batch_size=eval_batch_size,
        eval_students=eval_students, words=words,
        curve_suites=curve_suites or (),
        curve_words=curve_words or (),
        eval_points=eval_points, train=base.replace(**given),
        suite_options=glue_options(glue_tasks, max_train_examples, glue_epochs, glue_set,
                                   glue_pooling),
        variants=tuple(v for text in vary for v in Variant.parse(text)))
    config.check_train(list(from_file))
    if out is None:
        out = Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    report = run_compare(list(corpus), out, config, resume=resume, force=force,
                         progress=not quiet and sys.stderr.isatty(), data_dir=data_dir,
                         on_event=lambda message: click.echo(message, err=True),
                         reuse_from=reuse_from,
                         only=only, only_seeds=only_seeds)
    if not report["arms"]:
        click.echo(f"no arm of {out} has finished yet; continue with --resume")
        return
    click.echo(format_report(report), nl=False)
    click.echo(f"report: {out / 'report.md'} and {out / 'report.json'}")
    click.echo(f"next: minidml plot {out}")


# ----------------------------------------------------------------------------- search
@cli.command()
@click.option("--budget", type=Count(), help="Total parameters N, e.g. 20M.")
@click.option("--students", "k", default=len(_DEFAULT.students), show_default=True,
              type=POSITIVE)
@click.option("--targets", type=CountList(),
              help="Explicit per-student targets instead, e.g. 10M,5M,3M.")
@click.option("--scheme", type=click.Choice(_SCHEME.metadata["setting"].choices),
              default=_SCHEME.default, show_default=True,
              help="harmonic: N/2, N/3, ...; equal: N/K each.")
@click.option("--vocab-size", type=click.IntRange(min=MIN_VOCAB), default=MAX_AUTO_VOCAB,
              show_default=True)
@click.option("--context", type=click.IntRange(min=1), default=_DEFAULT.context,
              show_default=True, help="Context of the predicted tokens/s.")
@click.option("--device", default="cpu", show_default=True,
              help="Device whose fp32 matmul peak the tokens/s are predicted from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def search(budget: int | None, k: int, targets: tuple[int, ...] | None, scheme: str,
           vocab_size: int, context: int, device: str, as_json: bool) -> None:
    """Choose K diverse student shapes that hit parameter targets, and predict how fast each
    trains here (no model is built; the matmul peak is measured in milliseconds)."""
    import json

    from .. import search as student_search
    from .. import throughput
    from ..model import StudentConfig
    from ..runtime import resolve_device

    if targets is not None and budget is None:
        found = student_search.search(list(targets), vocab_size, option="--targets")
    elif budget is not None and targets is None:
        found = student_search.plan(budget, k, vocab_size, scheme=scheme)
    else:
        raise MinidmlError("search: give --budget N or --targets N1,N2,... (one of them)")
    peak = throughput.matmul_peak(resolve_device(device))
    rates = [throughput.tokens_per_second(StudentConfig.from_shape(c.shape, vocab_size, context),
                                          peak, context) for c in found]
    if as_json:
        click.echo(json.dumps([{**c.to_dict(), "predicted_tokens_per_s": r}
                               for c, r in zip(found, rates, strict=True)], indent=2))
        return
    click.echo(student_search.format_table(found, rates))
    click.echo(f"tok/s: predicted for {device} (fp32 matmul peak {peak / 1e9:.0f} GFLOP/s "
               f"measured now, × the step efficiency by width; docs/method.md, student search), "
               f"context {context}; all {len(found)} in one step: "
               f"{throughput.together(rates):,.0f} tok/s")


# ----------------------------------------------------------------------------- demo
@cli.command()
@click.option("--out", type=FilePath(),
              help="Run directory (default: runs/demo-…).")
@click.option("--steps", type=Count(), help=f"Optimiser steps (default {DEMO_STEPS}).")
@click.option("--device", default="auto")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out: Path | None, steps: int | None, device: str, force: bool, quiet: bool) -> None:
    """Generate the built-in grammar corpus and train two students on it (a few minutes)."""
    from ..demo.run import demo_corpus, run_demo

    click.echo(f"corpus: {demo_corpus()} (generated by minidml.demo.grammar)", err=True)
    overrides: dict[str, Any] = {"device": device} | ({"steps": steps} if steps else {})
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


for _command in (eval_, generate, export_, plot, suites_, data, babylm):
    cli.add_command(_command)


def _help_options(group: click.Group) -> None:
    """``-h`` as well as ``--help`` on every command, however its context is made (click
    keeps a command's help option from the first context that asks for it)."""
    for command in group.commands.values():
        command.context_settings.setdefault("help_option_names", HELP_OPTIONS)
        if isinstance(command, click.Group):
            _help_options(command)


_help_options(cli)


# ----------------------------------------------------------------------------- entry point
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is: a training run writes its checkpoint and stops."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    click.echo(f"warning: {message}", err=True)


def _interrupted_line(args: list[str]) -> str:
    """What an interrupted command says: how to go on, for the commands that can."""
    command = next((a for a in args if not a.startswith("-")), "")
    if command in ("train", "compare"):
        return (f"interrupted; `minidml {command} … --resume` continues from the last "
                "checkpoint")
    return "interrupted"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning  # the command line's warnings: one line each
    try:
        cli.main(args=args, prog_name="minidml", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        # click turns Ctrl-C into Abort; SIGTERM arrives as Terminated (exit 128 + 15)
        click.echo(_interrupted_line(args), err=True)
        cause = e.__cause__ or e.__context__
        sys.exit(143 if isinstance(e, Terminated) or isinstance(cause, Terminated) else 130)
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
    except MemoryError:  # Python's own allocations (the allocator's are RuntimeErrors)
        click.echo("error: out of memory; lower --batch-size (and raise --grad-accum to keep "
                   "the tokens per step), use fewer or smaller students, or free memory; a "
                   "run's checkpoints so far are intact", err=True)
        sys.exit(1)
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
    finally:
        warnings.showwarning = shown
        if before is not None:
            signal.signal(signal.SIGTERM, before)
