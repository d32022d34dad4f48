"""The guide and its pages: every relative link resolves, every option is documented."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import click
import pytest

from minidml.cli.commands import cli
from minidml.cli.reference import commands

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


def test_there_are_pages_and_links():
    assert len(PAGES) >= 10
    assert sum(len(_links(p)) for p in PAGES) >= 50


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_every_command_and_option_is_in_the_docs():
    docs = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    missing = []
    for name, command in commands(cli):
        if name not in docs:
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option):
                longs = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
                if longs and not any(o in docs for o in longs if o != "--help"):
                    missing.append(f"{name} {longs[0]}")
    assert not missing, missing


def test_generated_blocks_are_current():
    """The settings tables and the --help reference are made from the code (make docs)."""
    from minidml.cli.reference import BEGIN, END, blocks

    for page, content in blocks(REPO).items():
        text = page.read_text(encoding="utf-8")
        for name, body in content.items():
            start = text.index(BEGIN.format(name=name)) + len(BEGIN.format(name=name)) + 1
            assert text[start:text.index(END.format(name=name))] == body + "\n", \
                f"{page.name}: the {name} block is stale; run `make docs`"


def test_every_training_setting_is_in_the_table_with_its_own_default():
    import dataclasses

    from minidml.cli.reference import settings_table
    from minidml.config import TrainConfig

    table = settings_table()
    for f in dataclasses.fields(TrainConfig):
        how = f.metadata["setting"]
        assert how.help, f.name
        name = how.option(f.name) or f.name
        row = next(r for r in table.splitlines() if r.startswith(f"| `{name}`"))
        if isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool):
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            assert f"| {shown}" in row, (f.name, row)
        for choice in how.choices:
            assert choice in row, (f.name, choice)


def test_training_options_hold_no_default_of_their_own():
    """A setting's option is None unless given, so the dataclass's default (or the run's own
    setting, or the config file's) is the one that applies."""
    import dataclasses

    from minidml.cli.commands import _COMPARE_OPTIONS
    from minidml.config import TrainConfig

    settings = {"train": {f.name for f in dataclasses.fields(TrainConfig)},
                "compare": set(_COMPARE_OPTIONS)}  # compare's own --budget, --tokens differ
    for name, names in settings.items():
        command = cli.commands[name]
        params = [p for p in command.params if p.name in names]
        assert len(params) >= 25
        required = ["--budget", "1M"] if name == "compare" else []  # compare's own option
        ctx = command.make_context(name, ["corpus.txt", *required])  # no setting given
        for param in params:
            assert ctx.params[param.name] in (None, ()), (name, param.name)
