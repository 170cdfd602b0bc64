"""The docs stay true: every command has help with an example, every config key is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.settings import documented_keys

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("command", _commands(main), ids=" ".join)
def test_every_command_has_help_ending_with_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    text = result.output.split("Options:")[0].strip()
    assert "Example:" in text, f"`scorer {' '.join(command)} --help` has no example"
    assert text.splitlines()[-1].strip().startswith("scorer "), "the example is the last thing before Options"


def test_readme_quick_start_is_exactly_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_documents_every_config_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for key, _, _ in documented_keys():
        assert f"| `{key}` |" in readme, f"README's configuration table lacks {key}"
