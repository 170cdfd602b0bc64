"""The CLI's one error boundary (scorer/cli/common.py and the group in scorer/cli/__init__.py): a ScorerError is
`error: <message>` on stderr and exit 2, a usage error keeps click's text and status 2, anything else is a bug
and keeps its traceback; and what every command shares: --config, --help, --version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from scorer.cli import main
from tests.support.helpers import invoke_scorer

# Every command, with what it needs on its command line to get as far as reading its config.
COMMANDS = {
    "score": ["score", "a.jpg"],
    "bulk": ["bulk", "archive", "--out", "results"],
    "watch": ["watch"],
    "serve": ["serve"],
    "model pin": ["model", "pin", "models/engagement.pkl"],
    "notify test": ["notify", "test"],
    "service": ["service"],
    "train": ["train", "shop"],
    "index": ["index", "shop"],
    "outcomes": ["outcomes", "shop"],
    "demo": ["demo"],
}


def test_every_command_is_among_those_checked() -> None:
    found = {f"{name} {sub}" if isinstance(command, click.Group) else name
             for name, command in main.commands.items()
             for sub in (command.commands if isinstance(command, click.Group) else [""])}
    assert found == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_config_file_is_one_line_that_names_the_fix(here: Path, command: str) -> None:
    result = invoke_scorer(*COMMANDS[command], "--config", "nope.yaml")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: config file {here / 'nope.yaml'} not found: pass --config with the path of config.yaml\n")


@pytest.mark.parametrize(("text", "message"), [
    ("inbox: drops\nwatch:\n\tpolling: true\n", "{config} is not valid YAML at line 3: fix the syntax there"),
    ("- inbox\n- outbox\n", "{config} must be a mapping of keys to values, like 'inbox: inbox'"),
    ("context:\n  time_zone: UTC\n",
     "unknown key 'context.time_zone' in {config}: remove it or use one of timezone"),
    ("batch_size: many\n", "'batch_size' in {config} must be a whole number, got 'many': fix the value"),
    ("watch: 3\n", "'watch' in {config} must be a mapping of keys: fix it or remove it"),
], ids=["invalid YAML", "not a mapping", "unknown key", "wrong type", "a value for a section"])
def test_a_bad_config_is_one_line_that_names_the_key_and_the_fix(here: Path, text: str, message: str) -> None:
    (here / "config.yaml").write_text(text, encoding="utf-8")
    result = invoke_scorer("watch")  # ./config.yaml, read without --config
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: {message.format(config=here / 'config.yaml')}\n")


def test_a_secret_in_the_wrong_shape_is_never_echoed(here: Path) -> None:
    (here / "config.yaml").write_text("notify:\n  urls: 'mailtos://me:pw-S3cret-q@smtp.example.com'\n")
    result = invoke_scorer("notify", "test")
    # [a, b] is printed as typed, not taken for rich markup
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: 'notify.urls' in {here / 'config.yaml'} must be a list, like [a, b], got text (not shown: it "
               "holds secrets): fix the value\n")
    assert "S3cret" not in result.output


@pytest.mark.parametrize(("args", "usage", "error"), [
    (["score"], "scorer score [OPTIONS] PATHS...", "Missing argument 'PATHS...'."),
    (["score", "a.jpg", "--outbox", "reports"], "scorer score [OPTIONS] PATHS...",
     "No such option '--outbox'. Did you mean '--out'?"),
    (["scroe", "a.jpg"], "scorer [OPTIONS] COMMAND [ARGS]...", "No such command 'scroe'. Did you mean 'score'?"),
    (["serve", "--port", "http"], "scorer serve [OPTIONS]",
     "Invalid value for '--port': 'http' is not a valid integer."),
], ids=["missing argument", "unknown option", "unknown command", "not a number"])
def test_a_usage_error_is_clicks_usage_text_and_exit_2(args: list[str], usage: str, error: str) -> None:
    result = invoke_scorer(*args)
    command = usage.split(" [")[0]
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Usage: {usage}\nTry '{command} --help' for help.\n\nError: {error}\n")


def test_a_bug_is_not_dressed_as_an_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("scorer.cli.scoring.load_settings", broken)
    result = invoke_scorer("watch")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError), "it keeps its traceback"
    assert "error:" not in result.output


def test_a_bad_config_exits_2_with_one_line_and_no_traceback_in_a_real_process(here: Path) -> None:
    config = here / "config.yaml"
    config.write_text("watch:\n  settle_secs: 2\n")
    (here / "a.jpg").write_bytes(b"x")
    proc = subprocess.run(
        [sys.executable, "-m", "scorer", "score", str(here / "a.jpg"), "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown key 'watch.settle_secs'" in lines[0]
    assert "remove it or use one of" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_scorer_help_ends_with_an_example(option: str) -> None:
    result = invoke_scorer(option)
    assert result.exit_code == 0
    assert result.output.split("Options:")[0].strip().splitlines()[-2:] == ["  Example:", "      scorer demo"]


def test_version() -> None:
    result = invoke_scorer("--version")
    assert (result.exit_code, result.output) == (0, f"scorer, version {version('scorer')}\n")
