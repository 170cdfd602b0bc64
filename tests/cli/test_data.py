"""The errors of `scorer train`, `index` and `outcomes` (scorer/cli/data.py) that come before a model loads: the
exit status and the exact lines. (`scorer train` on a folder that does not exist, or on posts it cannot train on,
is in tests/training/test_train.py, with what it imported.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helpers import invoke_scorer, scorer_imports


@pytest.mark.parametrize("command", ["train", "index", "outcomes"])
def test_a_data_command_needs_its_folder(command: str) -> None:
    result = invoke_scorer(command)
    assert (result.exit_code, result.stderr) == (
        2, f"Usage: scorer {command} [OPTIONS] DATA\nTry 'scorer {command} --help' for help.\n\n"
           "Error: Missing argument 'DATA'.\n")


def test_index_names_a_folder_that_does_not_exist_before_it_opens_the_model(here: Path) -> None:
    result = invoke_scorer("index", "shop")  # and no model either: the folder is told first, as `scorer train` does
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", "error: shop does not exist: give a folder with posts.csv, or an Instaloader profile folder\n")
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("state", [True, False], ids=["state", "no state"])
def test_outcomes_names_a_missing_folder(here: Path, state: bool) -> None:
    if state:
        (here / "state").mkdir()
    result = invoke_scorer("outcomes", "shop")
    error = ("shop does not exist: give a folder with posts.csv, or an Instaloader profile folder" if state else
             f"state {here / 'state'} does not exist: create it or change 'state' in config.yaml")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error}\n")


def test_demo_names_a_missing_config_before_it_imports_fastai(here: Path) -> None:
    run = scorer_imports("demo", "--config", "nope.yaml", cwd=here)
    assert (run.returncode, run.stdout, run.stderr) == (
        2, "", f"error: config file {here / 'nope.yaml'} not found: pass --config with the path of config.yaml\n")
    assert not run.packages & {"fastai", "torch"}, "told before seconds of importing fastai"
