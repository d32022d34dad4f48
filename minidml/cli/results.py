"""The commands that use what training made: ``eval``, ``generate``, ``export``, ``plot``,
``suites`` and ``data fetch`` (registered on the ``minidml`` group by
:mod:`minidml.cli.commands`)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

from ..errors import MinidmlError
from ..evaluation.runner import evaluate
from .options import (
    GLUE_POOLING_HELP,
    GLUE_SET_HELP,
    POSITIVE,
    FilePath,
    glue_options,
    run_or_latest,
    utf8_text,
)

# the defaults of minidml.evaluation.runner.evaluate, which eval's options share
_EVALUATE = {name: p.default for name, p in inspect.signature(evaluate).parameters.items()}


@click.command()
@click.argument("path", required=False, type=FilePath())
@click.option("--out", type=FilePath(), help="Where the pictures go (default: PATH/plots).")
@click.option("--format", "formats", type=click.Choice(["png", "svg", "pdf"]), multiple=True,
              help="File formats (default: png and svg).")
def plot(path: Path | None, out: Path | None, formats: tuple[str, ...]) -> None:
    """Draw losses, ω and suite scores of a run or a comparison (default: the latest run)."""
    from ..experiments.plot import FORMATS
    from ..experiments.plot import plot as draw

    for written in draw(run_or_latest(path), out, formats or FORMATS):
        click.echo(str(written))


# ----------------------------------------------------------------------------- generate
@click.command()
@click.argument("run_dir", required=False, type=FilePath())
@click.option("--prompt", default="", callback=utf8_text, help="Text to continue.")
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
    from ..rundir import load

    run = load(run_or_latest(run_dir), device)
    if student >= len(run.students):
        raise MinidmlError(f"--student {student}: the run has {len(run.students)} students "
                           f"(0..{len(run.students) - 1})")
    for i in range(samples):
        click.echo(run.generate(prompt, student, max_tokens, temperature, top_k, seed + i))


# ----------------------------------------------------------------------------- evaluation
@click.command(name="eval")
@click.argument("run_dir", required=False, type=FilePath())
@click.option("--suite", "suite_names", multiple=True, required=True,
              help="Suite to run (repeatable); `all`: every suite whose data is present.")
@click.option("--student", default="all", show_default=True,
              help="all (each student and the ensemble), ensemble, champion (the student "
                   "with the lowest validation loss at that checkpoint), a student index, or "
                   "a comma-separated list of those, e.g. champion,ensemble.")
@click.option("--data-dir", type=FilePath(),
              help="Evaluation data root (default: $MINIDML_DATA_DIR, else the cache that "
                   "`minidml data fetch` fills).")
@click.option("--protocol", default=_EVALUATE["protocol"], show_default=True,
              help="Which tokens of a text are scored: babylm-2026 (the official BabyLM "
                   "2026 pipeline's rule) or lm-eval (lm-evaluation-harness's, as BabyLM "
                   "2024 scored).")
@click.option("--limit", type=POSITIVE, help="At most N examples per task.")
@click.option("--step", "step_text", default="latest", show_default=True,
              help="The checkpoint to evaluate: latest, a step number, or all (every kept "
                   "checkpoint, oldest first, one results file each).")
@click.option("--batch-size", default=_EVALUATE["batch_size"], show_default=True, type=POSITIVE)
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              default=_EVALUATE["precision"], show_default=True,
              help="bf16: the models run under bfloat16 autocast.")
@click.option("--output", type=FilePath(),
              help="Results JSON (default: RUN_DIR/eval/results-step<N>-<date>.json).")
@click.option("--log-samples", is_flag=True,
              help="Also write every scored pair's log-likelihoods, one JSON line each, to "
                   "the results file's name with .samples.jsonl.")
@click.option("--glue-tasks", help="glue: a comma-separated subset of tasks, e.g. rte,mrpc.")
@click.option("--max-train-examples", type=POSITIVE, help="glue: cap on training examples.")
@click.option("--epochs", type=POSITIVE,
              help="glue: at most this many epochs (default: the suite's own).")
@click.option("--glue-set", metavar="2024|2026", help=GLUE_SET_HELP)
@click.option("--glue-pooling", metavar="last|first", help=GLUE_POOLING_HELP)
@click.option("--babylm-results", type=FilePath(), metavar="DIR",
              help="Also write the predictions of the BabyLM 2026 tasks in the official "
                   "results layout under this folder, as DIR/<run's name>/<revision>/zero_shot/"
                   "causal/…: revision main for the final model, the checkpoint's (chck_1M, "
                   "…) for --step N; then `minidml babylm collate DIR` (docs/babylm.md).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_(run_dir: Path | None, suite_names: tuple[str, ...], student: str,
          data_dir: Path | None, protocol: str, limit: int | None, step_text: str,
          batch_size: int,
          device: str, precision: str, output: Path | None, log_samples: bool,
          glue_tasks: str | None, max_train_examples: int | None, epochs: int | None,
          glue_set: str | None, glue_pooling: str | None, babylm_results: Path | None,
          quiet: bool) -> None:
    """Evaluate the students of RUN_DIR (default: the latest run), or a Hugging Face causal
    LM's directory, on benchmark suites."""
    from ..evaluation.protocols import get_protocol
    from ..hf.models import is_hf_model_dir, load_hf
    from ..rundir import checkpoint_steps, load

    get_protocol(protocol)  # an unknown name fails here, before any loading
    path = run_or_latest(run_dir)
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
    options = glue_options(glue_tasks, max_train_examples, epochs, glue_set, glue_pooling)
    if babylm_results is not None:  # where each step's predictions go, checked before work
        from ..evaluation import submission

        submission.check_request(suite_names, get_protocol(protocol).name, options)
        model, filed = submission.revision_plan(path, steps, hf=hf, every=step_text == "all")
        if student == "champion" and not hf:
            # a submission is one student at every revision: the final checkpoint's champion,
            # the student `minidml export --revisions` uploads, not each checkpoint's own
            student = str(load(path, device).champion)
            click.echo(f"--student champion: student {student}, the final checkpoint's",
                       err=True)
        if limit is not None:
            click.echo(f"warning: --limit {limit}: the predictions hold the first {limit} "
                       "items of each task; the official collation refuses partial files",
                       err=True)

    def announce(outcome) -> None:
        click.echo(f"[{outcome.spec.name}] {outcome.status} ({outcome.seconds:.1f}s)"
                   + (f": {outcome.error}" if outcome.error else ""), err=True)

    failed: dict[str, None] = {}
    for k, step in enumerate(steps):
        try:
            run = load_hf(path, device) if hf else load(path, device, step)
        except MinidmlError:
            if step_text != "all" or step in checkpoint_steps(path):
                raise
            click.echo(f"warning: step {step}: its checkpoint was rotated away by a training "
                       "run before it was read; skipped", err=True)
            continue
        if len(steps) > 1:
            click.echo(f"step {run.step}:")
        if babylm_results is not None:
            label = submission.submitted_label(student, run)
        results = evaluate(run, suite_names, student=student, data_dir=data_dir, limit=limit,
                           batch_size=batch_size, precision=precision,
                           progress=not quiet and sys.stderr.isatty(),
                           options=options, protocol=protocol,
                           on_suite=lambda o: announce(o) if o.status == "ok" else None)
        if not any(o.status == "ok" for o in results.outcomes):
            # nothing was scored: no table and no results file, each suite's reason in a line
            reasons = [f"{o.spec.name}: {o.error}" for o in results.outcomes]
            for line in reasons[:-1]:
                click.echo(f"error: {line}", err=True)
            raise MinidmlError(reasons[-1])
        for o in results.outcomes:  # the others, once some suite has completed
            if o.status != "ok":
                announce(o)
                failed[o.spec.name] = None
        click.echo(results.table(), nl=False)
        # a name of our own: never over another evaluation's file of the same second
        written = results.write(output or run.path / "eval" / results.file_name(step=not hf),
                                unique=output is None)
        click.echo(f"results: {written}")
        if log_samples:
            samples = results.write_samples(written.with_name(written.stem + ".samples.jsonl"))
            click.echo(f"samples: {samples}")
        if babylm_results is not None and filed[k]:
            sent = submission.write_predictions(
                results, babylm_results, filed[k], model=model, label=label, data_dir=data_dir)
            n = len(sent.files)
            click.echo(f"babylm results: {n} file{'' if n == 1 else 's'} under "
                       f"{babylm_results / model} ({', '.join(filed[k])})")
            for name, why in sent.skipped.items():
                click.echo(f"  not written: {name} ({why})", err=True)
        elif babylm_results is not None:
            click.echo(f"babylm results: none for step {run.step} (no revision)", err=True)
    if failed:
        raise MinidmlError(f"suite(s) {', '.join(failed)} did not complete (see above)")


@click.command(name="suites")
@click.option("--data-dir", type=FilePath(),
              help="Data root to check (default: $MINIDML_DATA_DIR, else the cache).")
def suites_(data_dir: Path | None) -> None:
    """List every evaluation suite: name, package, whether its data is here, the scoring
    protocols it is defined under, and its description."""
    from ..evaluation.plugins import suites
    from ..evaluation.protocols import PROTOCOLS
    from ..evaluation.suite import resolve_data_dir

    root = resolve_data_dir(data_dir)
    found = suites()
    rows = [(n, f"{s.package} {s.package_version}".strip(), "yes" if s.data_present(root)
             else "no", ",".join(s.protocols or PROTOCOLS), s.description)
            for n, s in sorted(found.items())]
    head = ("suite", "package", "data", "protocols", "description")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:-1])]
    for r in [head, *rows]:
        click.echo("  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  "
                   + r[-1])
    click.echo(f"data root: {root}")


@click.group()
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
    from ..evaluation.fetch import fetch as download
    from ..evaluation.plugins import suites
    from ..evaluation.suite import resolve_data_dir

    found = suites()
    names = list(found) if "all" in suite_names else list(suite_names)
    for name in names:
        if name not in found:
            raise MinidmlError(f"{name}: no such suite; choose from {', '.join(sorted(found))}")
    root = resolve_data_dir(data_dir)
    lacking: list[str] = []  # suites whose data is missing and has no download
    for name in names:
        files = found[name].sources
        if not files:
            missing = found[name].missing_data(root)
            if not missing:
                click.echo(f"{name}: nothing to download" + (
                    f"; its data is in {root}" if found[name].requires else ""), err=True)
            else:
                lacking.append(f"{name}: its data has no public download; put the official "
                               f"files at {root / missing[0]} (the BabyLM evaluation data, "
                               "osf.io/ryjfm)")
            continue
        got = download(files, root, mirror=mirror, force=force,
                       progress=not quiet and sys.stderr.isatty())
        click.echo(f"{name}: {len(got)} downloaded, {len(files) - len(got)} already present "
                   f"and verified, in {root}")
    if lacking and "all" not in suite_names:
        for line in lacking[:-1]:
            click.echo(f"error: {line}", err=True)
        raise MinidmlError(lacking[-1])
    for line in lacking:
        click.echo(line, err=True)


# ----------------------------------------------------------------------------- export
@click.command(name="export")
@click.argument("run_dir", metavar="RUN", type=FilePath())
@click.argument("out_dir", type=FilePath())
@click.option("--student", default="champion", show_default=True,
              help="A student index, or champion: the one with the lowest validation loss.")
@click.option("--format", "fmt", default="hf", show_default=True,
              help="hf: a Hugging Face transformers directory (LlamaForCausalLM).")
@click.option("--force", is_flag=True, help="Replace an existing non-empty OUT_DIR.")
@click.option("--revisions", is_flag=True,
              help="OUT_DIR gets one directory per checkpoint at words seen (chck_1M, …) and "
                   "main, each a branch of one Hugging Face repository (docs/babylm.md).")
def export_(run_dir: Path, out_dir: Path, student: str, fmt: str, force: bool,
            revisions: bool) -> None:
    """Export a student of RUN to OUT_DIR, e.g. for lm-evaluation-harness."""
    from ..hf.export import FORMATS, export_hf, export_revisions, require_hf, resolve_student
    from ..rundir import load

    if fmt not in FORMATS:
        raise MinidmlError(f"--format {fmt}: unknown; choose {' or '.join(FORMATS)}")
    require_hf()
    if revisions:
        paths = export_revisions(run_dir, out_dir, student=student, force=force)
        click.echo(f"exported {len(paths)} revisions of {run_dir} ({', '.join(paths)}) to "
                   f"{out_dir}")
        click.echo(f"next: upload them as branches, as {Path(out_dir) / 'README.md'} shows")
        return
    run = load(run_dir)
    index = resolve_student(run, student)
    path = export_hf(run, index, out_dir, force=force)
    why = " (champion: lowest validation loss)" if student == "champion" else ""
    click.echo(f"exported student {index}{why} of {run.path} at step {run.step}: {path}")
    click.echo(f"next: lm_eval --model hf --model_args pretrained={path} --tasks blimp")
