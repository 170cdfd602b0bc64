"""The errors of `scorer score`, `bulk`, `watch` and `serve` (scorer/cli/scoring.py) that come before a model loads:
the exit status and the exact lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helpers import invoke_scorer


@pytest.fixture
def outbox(here: Path) -> Path:
    """The default outbox, which `scorer score` needs before it looks at its inputs."""
    (here / "outbox").mkdir()
    return here / "outbox"


# [red] is printed as typed, not taken for rich markup.
@pytest.mark.parametrize("name", ["nope.jpg", "[red]nope.jpg"])
def test_score_names_an_input_that_does_not_exist(outbox: Path, name: str) -> None:
    result = invoke_scorer("score", name)
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: {name} does not exist: check the path\n")


def test_score_says_when_a_folder_holds_no_creative(outbox: Path, here: Path) -> None:
    (here / "drafts").mkdir()
    for name in (".DS_Store", "brief.txt", "~$draft.jpg"):  # hidden, a sidecar's name, a temporary file
        (here / "drafts" / name).write_bytes(b"x")
    result = invoke_scorer("score", "drafts")
    assert (result.exit_code, result.stderr) == (
        2, "error: no files found in drafts: give image files or folders that hold them\n")


def test_score_says_when_out_cannot_be_created(here: Path) -> None:
    (here / "a.jpg").write_bytes(b"x")
    result = invoke_scorer("score", "a.jpg", "--out", "a.jpg/reports")
    assert (result.exit_code, result.stderr) == (
        2, f"error: cannot create {here / 'a.jpg' / 'reports'} (Not a directory): give --out a folder you can write\n")


@pytest.mark.parametrize("given", ["config.yaml", "--model"])
def test_score_names_a_missing_model_and_the_fix(outbox: Path, here: Path, given: str) -> None:
    (here / "inbox").mkdir()
    (here / "inbox" / "a.jpg").write_bytes(b"x")
    (here / "config.yaml").write_text("model: models/nope.pkl\n" if given == "config.yaml" else "")
    result = invoke_scorer("score", "inbox", *(["--model", "models/nope.pkl"] if given == "--model" else []))
    assert (result.exit_code, result.stderr) == (
        2, f"error: model {here / 'models' / 'nope.pkl'} does not exist: run `scorer demo` or `scorer train`, or set "
           "'model' in config.yaml\n")


@pytest.mark.parametrize(("args", "error"), [
    (["bulk", "archive"], "Missing option '--out'."),
    (["bulk", "archive", "--out", "results", "--report", "top.xlsx", "--top", "0"],
     "Invalid value for '--top': 0 is not in the range x>=1."),
], ids=["no --out", "--top 0"])
def test_bulk_argument_errors_are_usage_errors(here: Path, args: list[str], error: str) -> None:
    (here / "archive").mkdir()
    result = invoke_scorer(*args)
    assert (result.exit_code, result.stderr) == (
        2, f"Usage: scorer bulk [OPTIONS] SOURCES...\nTry 'scorer bulk --help' for help.\n\nError: {error}\n")
    assert not (here / "results").exists()


@pytest.mark.parametrize(("source", "error"), [
    ("nowhere", "nowhere does not exist: check the path"),
    ("empty", "no files found in empty: give image files or folders that hold them"),
])
def test_bulk_names_a_source_it_cannot_score_before_it_makes_its_results_folder(
        here: Path, source: str, error: str) -> None:
    (here / "empty").mkdir()
    result = invoke_scorer("bulk", source, "--out", "results")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error}\n")
    assert not (here / "results").exists()


@pytest.mark.parametrize("missing", ["inbox", "outbox"])
def test_watch_names_a_missing_folder_and_the_key_to_change(here: Path, missing: str) -> None:
    for folder in {"inbox", "outbox"} - {missing}:
        (here / folder).mkdir()
    result = invoke_scorer("watch")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: {missing} {here / missing} does not exist: create it or change '{missing}' in config.yaml\n")


@pytest.mark.parametrize(("args", "error"), [
    (["--port", "70000"], "port 70000 is not a TCP port: use one from 1 to 65535 (serve.port or --port)"),
    (["--host", "0.0.0.0"], "serving on 0.0.0.0 lets other machines in, so it needs a token: set serve.token or "
                            "serve.token_file in config.yaml, or listen on 127.0.0.1"),
], ids=["not a port", "open without a token"])
def test_serve_refuses_an_address_before_the_model_loads(args: list[str], error: str) -> None:
    result = invoke_scorer("serve", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error}\n")
