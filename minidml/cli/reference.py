"""The command line's reference, made from the commands themselves: the settings tables of
the README and ``docs/cli.md`` (from :class:`~minidml.config.TrainConfig`'s fields) and every
command's ``--help``. ``python -m minidml.cli.reference`` (``make docs``) rewrites them; a
test checks they are current, so no default, choice or option is written by hand twice."""

from __future__ import annotations

import sys
from pathlib import Path

import click

BEGIN = "<!-- {name}: made by `make docs` (minidml.cli.reference) -->"
END = "<!-- end of {name} -->"


def settings_table(brief: bool = False, base: str = "") -> str:
    """The Markdown table of the training settings: every one (option or config-file key,
    default with its choices, meaning, the study behind the default), or with ``brief`` the
    guide's short table of the settings that have a ``brief``. Study links are relative to
    ``base`` (``""`` from ``docs/``, ``"docs/"`` from the README)."""
    from ..config import FIELDS
    from .options import default_text

    rows, bar = [], " \\| "
    for f in FIELDS.values():
        how = f.metadata["setting"]
        if brief and not how.brief:
            continue
        flag = how.option(f.name)
        name = f"`{flag}`" if flag else f"`{f.name}` (config file)"
        default = default_text(f.name)
        if not brief and how.choices:
            default = f"{default} ({bar.join(how.choices)})"
        text = (how.brief if brief else how.help).replace("|", "\\|")
        study = ""
        if how.see:
            path = Path(how.see.partition("#")[0])
            label = path.parent.name if path.stem in ("README", "results") else path.stem
            study = f"[{label}]({base}{how.see})"
        rows.append(f"| {name} | {default} | {text} | {study} |")
    head = "| option | default | what it sets | evidence |\n| --- | --- | --- | --- |"
    return "\n".join([head, *rows])


def commands(group: click.Group, prefix: str = "minidml"):
    """``(path, command)`` of every command under ``group``, subcommands included, by name."""
    for name in sorted(group.commands):
        command = group.commands[name]
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")


def help_reference() -> str:
    """Every command's ``--help``, at a fixed width, each under its own heading."""
    from .commands import cli

    parts = []
    for path, command in commands(cli):
        ctx = click.Context(command, info_name=path, terminal_width=100,
                            max_content_width=100, **command.context_settings)
        parts.append(f"### `{path}`\n\n```\n{command.get_help(ctx)}\n```")
    return "\n\n".join(parts)


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the block ``name`` between its markers made ``content``."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    start, stop = text.index(begin), text.index(end)
    return text[:start] + begin + "\n" + content + "\n" + text[stop:]


def blocks(root: Path) -> dict[Path, dict[str, str]]:
    """What each generated block of each page should hold."""
    return {root / "README.md": {"settings": settings_table(brief=True, base="docs/")},
            root / "docs" / "cli.md": {"settings": settings_table(),
                                       "help": help_reference()}}


def update(root: Path) -> list[Path]:
    """Rewrite the generated blocks under ``root``; the pages that changed."""
    changed = []
    for page, content in blocks(root).items():
        text = old = page.read_text(encoding="utf-8")
        for name, body in content.items():
            text = replace_block(text, name, body)
        if text != old:
            page.write_text(text, encoding="utf-8")
            changed.append(page)
    return changed


if __name__ == "__main__":
    for page in update(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(f"updated {page}")
