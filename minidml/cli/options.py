"""The command line's parameter types and the options that several commands share.

:class:`Count` (``20M``), :class:`CountList` (``1M,2M``), :class:`Duration` (``60m``),
:class:`IntList` (``4,2``), :class:`Names` (``kd,wml``) and :class:`FilePath` turn what is
typed into values or one usage error;
:func:`config_option` makes the option of a :class:`~minidml.config.TrainConfig` setting from
the field itself (flag, type, choices, range, help and default), so no setting is written twice.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..errors import MinidmlError


class Count(click.ParamType):
    """A positive whole number, with an optional k/M/B suffix: ``20M``, ``1.5k``."""

    name = "count"

    def convert(self, value: Any, param, ctx) -> int:
        from ..counts import parse_count

        try:
            return parse_count(value, param.opts[0] if param is not None else "count")
        except MinidmlError as e:
            self.fail(str(e), param, ctx)


class CountList(click.ParamType):
    """Comma-separated counts, each as :class:`Count` reads them: ``1M,2M,5M``."""

    name = "counts"

    def convert(self, value: Any, param, ctx) -> tuple[int, ...]:
        from ..counts import parse_count

        if isinstance(value, tuple):
            return value
        try:
            return tuple(parse_count(v, param.opts[0] if param is not None else "counts")
                         for v in str(value).split(","))
        except MinidmlError as e:
            self.fail(str(e), param, ctx)


class Duration(click.ParamType):
    """A wall-clock duration: seconds, or a number with s, m (min) or h: ``60m``, ``1.5h``."""

    name = "duration"

    def convert(self, value: Any, param, ctx) -> float:
        from ..timebudget import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration; write e.g. 90s, 60m or 1.5h", param, ctx)


class IntList(click.ParamType):
    """Comma-separated integers of at least ``least``: ``4,2`` (one per student, or one for
    all), ``0,2`` (seeds)."""

    name = "ints"

    def __init__(self, least: int = 1) -> None:
        self.least = least

    def convert(self, value: Any, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if any(v < self.least for v in out):
            self.fail(f"{value!r}: every value must be at least {self.least}", param, ctx)
        return out


class Names(click.ParamType):
    """Comma-separated names, each once: ``kd,wml`` (arms), ``blimp,ewok`` (suites); with
    ``choices``, only those (``tensorboard,wandb``: trackers)."""

    name = "names"

    def __init__(self, choices: typing.Iterable[str] | None = None) -> None:
        self.choices = None if choices is None else tuple(choices)

    def convert(self, value: Any, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in str(value).split(","))
        if not all(names) or len(set(names)) != len(names):
            self.fail(f"{value!r}: name each once, separated by commas", param, ctx)
        if self.choices is not None:
            unknown = [n for n in names if n not in self.choices]
            if unknown:
                self.fail(f"{unknown[0]!r} is not one of {', '.join(self.choices)}", param, ctx)
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
    from ..model import Shape

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


def _option_type(how: Any, hint: Any) -> dict[str, Any]:
    """click's type (and repetition) for a setting ``how`` of type ``hint``."""
    if how.kind == "count":
        return {"type": Count()}
    if how.kind == "counts":
        return {"type": CountList()}
    if how.kind == "duration":
        return {"type": Duration()}
    if how.kind == "trackers":
        from ..config import TRACKERS

        return {"type": Names(TRACKERS), "metavar": "TRACKERS"}
    if how.kind == "paths":
        return {"type": FilePath(), "multiple": True}
    if how.choices:
        return {"type": click.Choice(list(how.choices))}
    base = next((h for h in (int, float) if h in (hint, *typing.get_args(hint))), str)
    if base is int:
        return {"type": click.IntRange(min=how.lo, max=how.hi, min_open=how.open_lo,
                                       max_open=how.open_hi)}
    if base is float:
        return {"type": click.FloatRange(min=how.lo, max=how.hi, min_open=how.open_lo,
                                         max_open=how.open_hi)}
    return {}


def default_text(name: str) -> str:
    """How the default of setting ``name`` reads in help and docs: from the field itself."""
    from ..config import FIELDS
    from ..model import Shape

    f = FIELDS[name]
    how = f.metadata["setting"]
    if how.shown:
        return how.shown
    value = f.default
    if value is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    if isinstance(value, tuple) and value and all(isinstance(v, Shape) for v in value):
        kinds = sorted({f"{v.n_layers} layers × {v.d_model} wide, {v.n_heads} heads"
                        for v in value})
        return f"{len(value)} × " + " / ".join(kinds)  # students
    if value is dataclasses.MISSING or value is None or value in ((), {}):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_option(name: str) -> Any:
    """The click option of :class:`~minidml.config.TrainConfig`'s setting ``name``: its
    flag, type, choices, range and help all come from the field (the value stays None unless
    given, so the run's own or the config file's setting stands)."""
    from ..config import FIELDS, HINTS

    how = FIELDS[name].metadata["setting"]
    flag = how.option(name)
    if flag is None:
        raise ValueError(f"setting {name!r} has no command-line option")
    shown = default_text(name)
    help_text = how.help + (f" (default: {shown})" if shown else "")
    return click.option(flag, name, help=help_text, **_option_type(how, HINTS[name]))


def config_options(*names: str) -> Any:
    """Apply the options of the settings ``names``, listed in that order."""
    def apply(f: Any) -> Any:
        for name in reversed(names):
            f = config_option(name)(f)
        return f
    return apply


def given_settings(ctx: click.Context, options: dict[str, Any], names: Any) -> dict[str, Any]:
    """The settings among ``names`` that the command line gave, as TrainConfig values."""
    given = {name: options[name] for name in names
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if "teachers" in given:
        given["teachers"] = tuple(str(t) for t in given["teachers"])
    return given


def run_flags(config_help: str, resume_help: str) -> Any:
    """``--config``, ``--resume``, ``--force`` and ``--quiet``, which train and compare share."""
    def apply(f: Any) -> Any:
        for option in reversed((
                click.option("--config", "config_file", type=FilePath(), help=config_help),
                click.option("--resume", is_flag=True, help=resume_help),
                click.option("--force", is_flag=True, help="Overwrite an existing --out."),
                click.option("--quiet", "-q", is_flag=True, help="No progress bars."))):
            f = option(f)
        return f
    return apply


LENGTHS = ("steps", "tokens", "epochs", "max_time")  # one length of training overrides others'


def one_length(given: dict[str, Any]) -> dict[str, Any]:
    """A length of training given now replaces a config file's or the run's own."""
    if any(k in given for k in LENGTHS):
        return {**{k: None for k in LENGTHS}, **given}
    return given


def utf8_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A text option that must be valid UTF-8 (bytes the shell passed in another encoding
    arrive as lone surrogates)."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise click.BadParameter(f"not valid UTF-8 (character {e.start + 1}); give the "
                                     "text in UTF-8") from None
    return value


def glue_options(tasks: str | None, max_train_examples: int | None, epochs: int | None,
                 glue_set: str | None = None, pooling: str | None = None) -> dict[str, Any]:
    """The glue suite's options from the command line (those given; the suite checks
    them and holds their defaults)."""
    return {k: v for k, v in (("tasks", tasks), ("max_train_examples", max_train_examples),
                              ("epochs", epochs), ("glue_set", glue_set),
                              ("pooling", pooling)) if v is not None}


GLUE_SET_HELP = ("glue: the fine-tuning recipe and tasks, 2024 (BabyLM 2024's, the default) or "
                 "2026 (the official 2026 pipeline's: boolq, multirc, rte, wsc, mrpc, qqp, "
                 "mnli with its learning rate, batches, epochs and schedule).")
GLUE_POOLING_HELP = ("glue: which position's hidden state the classifier reads, last (each "
                     "text's last token, the default) or first.")


def run_or_latest(run_dir: Path | None) -> Path:
    """RUN_DIR, or when none is given the newest run under ``runs/`` (saying which)."""
    from ..rundir import latest_run

    if run_dir is not None:
        return run_dir
    found = latest_run()
    if found is None:
        raise MinidmlError("no run given and none under runs/; train one with "
                           "`minidml train CORPUS` or `minidml demo`")
    click.echo(f"using the latest run: {found}", err=True)
    return found

