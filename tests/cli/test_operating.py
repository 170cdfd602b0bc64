"""The errors of `scorer model pin`, `notify test` and `service` (scorer/cli/operating.py): the exit status and the
exact lines, and that nothing is written or printed when one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helpers import invoke_scorer


def test_model_pin_needs_a_path() -> None:
    result = invoke_scorer("model", "pin")
    assert (result.exit_code, result.stderr) == (2, "Usage: scorer model pin [OPTIONS] PATH\nTry 'scorer model pin "
                                                    "--help' for help.\n\nError: Missing argument 'PATH'.\n")


@pytest.mark.parametrize("config", ["model: models/engagement.pkl\n", None], ids=["config.yaml", "no config.yaml"])
def test_model_pin_names_a_model_that_does_not_exist(here: Path, config: str | None) -> None:
    if config is not None:
        (here / "config.yaml").write_text(config)
    result = invoke_scorer("model", "pin", "models/engagement.pkl")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"error: model {here / 'models' / 'engagement.pkl'} does not exist: give the path of the exported "
               ".pkl\n")
    assert sorted(p.name for p in here.iterdir()) == ([] if config is None else ["config.yaml"]), "nothing written"


def test_model_pin_without_a_config_yaml_says_where_to_run_it(here: Path) -> None:
    (here / "engagement.pkl").write_bytes(b"PK\x03\x04")
    result = invoke_scorer("model", "pin", "engagement.pkl")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", "error: no config.yaml to write the pin to: run from the project folder or pass --config\n")
    assert [p.name for p in here.iterdir()] == ["engagement.pkl"], "no config.yaml made, nothing pinned"


@pytest.mark.parametrize(("config", "error"), [
    ("", "no notify destinations: add Apprise URLs to notify.urls or notify.urls_file"),
    ("notify:\n  urls: ['ops@example.com']\n",
     "notify destination 1 is not an Apprise URL (scheme://...): fix it in notify.urls or notify.urls_file"),
    ("notify:\n  urls_file: notify-urls\n",
     "notify.urls_file {here}/notify-urls cannot be read (No such file or directory): fix its permissions or change "
     "'notify.urls_file' in config.yaml"),
], ids=["none", "not a URL", "no urls_file"])
def test_notify_test_refuses_destinations_it_cannot_try(here: Path, config: str, error: str) -> None:
    (here / "config.yaml").write_text(config)
    result = invoke_scorer("notify", "test")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {error.format(here=here)}\n")


@pytest.mark.parametrize(("args", "error"), [
    (["--template", "--serve"], "--template makes the instance unit of `scorer watch`: leave out --serve"),
    *[(["--instance", "brand-a", *other], "--instance makes a drop-in for an instance of the template: leave out "
                                          "--serve, --template and --user")
      for other in (["--serve"], ["--template"], ["--user", "scorer-brand-a"])],
], ids=["--template --serve", "--instance --serve", "--instance --template", "--instance --user"])
def test_service_options_that_do_not_go_together_are_usage_errors(args: list[str], error: str) -> None:
    result = invoke_scorer("service", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"Usage: scorer service [OPTIONS]\nTry 'scorer service --help' for help.\n\nError: {error}\n")


def test_service_names_a_user_that_does_not_exist() -> None:
    result = invoke_scorer("service", "--user", "no-such-scorer-user")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", "error: no user named no-such-scorer-user: create it, or pass --user with an existing account\n")
