"""``minidml babylm``: a BabyLM 2026 submission's last steps, a thin layer over
:mod:`minidml.evaluation.submission` (registered on the ``minidml`` group by
:mod:`minidml.cli.commands`)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from .options import FilePath


@click.group()
def babylm() -> None:
    """BabyLM 2026 submissions: the leaderboard's file from `minidml eval --babylm-results`."""


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


@babylm.command()
@click.argument("results_dir", metavar="DIR", type=FilePath())
@click.option("--model", required=True,
              help="The model's name: the folder under DIR its results are filed in (the stem "
                   "of a path or Hub name, as the official scripts take it).")
@click.option("--track", default="strict", show_default=True,
              help="strict-small, strict or interaction: which revisions (chck_1M, …) --fast "
                   "collates, and which the AoA file must cover.")
@click.option("--fast", is_flag=True,
              help="Add the fast sets' scores of every revision of the track.")
@click.option("--through", metavar="REVISION",
              help="A model trained on fewer words than the track allows: its last revision "
                   "(e.g. chck_20M); the revisions collated are the track's up to it. "
                   "[default: the track's last]")
@click.option("--data-dir", type=FilePath(),
              help="The evaluation data the files are checked and scored against (default: "
                   "$MINIDML_DATA_DIR, else the cache that `minidml data fetch` fills).")
@click.option("--force", is_flag=True, help="Replace an existing collated file.")
def collate(results_dir: Path, model: str, track: str, fast: bool, through: str | None,
            data_dir: Path | None, force: bool) -> None:
    """Write DIR/<model>/all_full_preds_and_fast_scores_causal.json as the official
    collate_preds.py does, after checking every file it reads, and print the scores."""
    from ..evaluation.submission import collate as collate_results

    done = collate_results(results_dir, model, track=track, fast=fast, data_dir=data_dir,
                           force=force, through=through)
    click.echo(f"collated: {done.path}")
    click.echo("final model (main), as the official report prints it (×100; AoA, a "
               "correlation, as it is):")
    width = max(len(k) for k in done.scores)
    for name, value in done.scores.items():
        why = f"  ({done.unscored[name]})" if name in done.unscored else ""
        click.echo(f"  {name:<{width}}  {_cell(value):>7}{why}")
    if done.fast:
        heads = list(next(iter(done.fast.values())))
        click.echo("fast sets, ×100 (each task's mean over its subtasks):")
        rev_w = max(8, *(len(r) for r in done.fast))
        click.echo(f"  {'revision':<{rev_w}}" + "".join(f"  {h:>{max(7, len(h))}}"
                                                       for h in heads))
        for revision, row in done.fast.items():
            click.echo(f"  {revision:<{rev_w}}" + "".join(
                f"  {_cell(row[h]):>{max(7, len(h))}}" for h in heads))
