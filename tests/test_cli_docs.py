"""Every ``comity`` command has help text and a section in docs/cli.md.

The click group is walked, so a new command or option fails here until it is
documented: its ``--help`` says what it does, each option has a help line, and
docs/cli.md has a ``### `comity COMMAND` `` section naming every option and
showing an example.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import click
import pytest

import client
from client import cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
_HEADING = re.compile(r"#{1,6} +`(comity(?: [a-z-]+)*)`\s*")


def _load_commands() -> click.Group:
    # What cli.main does before it parses: importing each cmd_* module registers its commands.
    for module in pkgutil.iter_modules(client.__path__):
        if module.name.startswith("cmd_"):
            importlib.import_module(f"client.{module.name}")
    return cli.group


def _walk(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += _walk(sub, f"{path} {name}")
    return found


COMMANDS = _walk(_load_commands(), "comity")
PATHS = [path for path, _ in COMMANDS]


def _options(command: click.Command) -> list[click.Option]:
    # Hidden options (the per-command --quiet) are the group's, documented once.
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help" and not p.hidden]


def _sections() -> dict[str, str]:
    """``### `comity X` `` heading -> its text, up to the next heading (code blocks skipped)."""
    sections: dict[str, list[str]] = {}
    current, fenced = None, False
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found = _HEADING.fullmatch(line)
            current = found.group(1) if found else None
            if current is not None:
                assert current not in sections, f"two sections for {current}"
                sections[current] = []
            continue
        if current is not None:
            sections[current].append(line)
    return {path: "\n".join(lines) + "\n" for path, lines in sections.items()}


def test_the_walk_finds_the_commands_of_the_issue():
    for path in ("comity network create", "comity invite", "comity enroll", "comity pending",
                 "comity approve", "comity remove", "comity members", "comity send", "comity inbox",
                 "comity read", "comity whoami", "comity demo"):
        assert path in PATHS


def test_main_registers_every_command(monkeypatch, capsys):
    """The commands the walk finds are the ones a user gets (cli.main imports their modules)."""
    monkeypatch.setattr(sys, "argv", ["comity", "--help"])
    try:
        cli.main()
    except SystemExit as done:
        assert done.code in (0, None)
    listed = capsys.readouterr().out
    for name in cli.group.commands:
        assert re.search(rf"^\s+{re.escape(name)}\s", listed, re.MULTILINE), name


@pytest.mark.parametrize("path, command", COMMANDS, ids=PATHS)
def test_every_command_and_option_has_help(path, command):
    assert (command.help or "").strip(), f"{path} has no help text"
    for option in _options(command):
        assert (option.help or "").strip(), f"{path} {option.opts[0]} has no help text"


@pytest.mark.parametrize("path, command", COMMANDS, ids=PATHS)
def test_every_command_is_documented_with_its_options_and_an_example(path, command):
    sections = _sections()
    assert path in sections, f"docs/cli.md has no '### `{path}`' section"
    section = sections[path]
    for option in _options(command):
        for flag in (o for o in option.opts if o.startswith("--")):
            assert flag in section, f"docs/cli.md does not document {path} {flag}"
    if not isinstance(command, click.Group) or path == "comity":
        example = re.search(rf"```sh\n(?:.*\n)*?(?:\$ )?{re.escape(path)}(?=[ \n])", section)
        assert example, f"docs/cli.md shows no example of {path}"


def test_the_docs_describe_no_command_that_does_not_exist():
    assert set(_sections()) <= set(PATHS)


def test_the_docs_cover_environment_and_exit_statuses():
    text = DOCS.read_text(encoding="utf-8")
    for variable in ("COMITY_HOME", "COMITY_PASSPHRASE", "COMITY_INSECURE_FAST_KDF"):
        assert f"`{variable}`" in text
    for status in ("`0`", "`1`", "`2`"):
        assert status in text
