"""The operators' commands: `scorer model pin`, `notify test` and `service`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from scorer.cli.common import CONFIG_OPTION, ScorerGroup
from scorer.config import load_settings
from scorer.console import err, out
from scorer.errors import ConfigError


@click.group(cls=ScorerGroup)
def model() -> None:
    """Pin the model file that scoring may load.

    \b
    Example:
        scorer model pin models/engagement.pkl
    """


@model.command("pin")
@click.argument("path", type=click.Path(path_type=Path))
@CONFIG_OPTION
def model_pin(path: Path, config_path: Path | None) -> None:
    """Trust a model file: write its SHA-256 to config.yaml as model_sha256 (and the file as model).

    Run it after checking that the file came from someone you trust; the scorer
    then refuses any other content under that name. PATH must be a learner saved
    with fastai's learn.export(), in a folder that only its owner can write. When
    PATH is not the model config.yaml names, model is changed to PATH (it is said).

    \b
    Example:
        scorer model pin models/engagement.pkl
    """
    from scorer.model.integrity import pin_model

    pinned = pin_model(load_settings(config_path), path.absolute())
    say = partial(out.print, highlight=False, soft_wrap=True, markup=False)
    say(f"pinned {path}: sha256 {pinned.sha256} (model_sha256 in {pinned.config})")
    if pinned.switched_from is not None:
        say(f"model in {pinned.config} changed from {pinned.switched_from} to {path}: scoring now uses this file")
    for derived in pinned.derived:
        say(f"also pinned, as it is used with the model: {derived}")


@click.group(cls=ScorerGroup)
def notify() -> None:
    """Check the destinations that `scorer watch` notifies (notify.urls, notify.urls_file).

    \b
    Example:
        scorer notify test
    """


@notify.command("test")
@CONFIG_OPTION
def notify_test(config_path: Path | None) -> None:
    """Send one test message to each destination now, and say for each whether it took it, or why not (exit 1 if
    any did not). All are tried at once, each given notify.timeout_seconds to answer.

    \b
    Example:
        scorer notify test --config /etc/scorer/brand-a/config.yaml
    """
    from scorer.notify.courier import try_destinations
    from scorer.notify.destinations import load_destinations

    notify = load_settings(config_path).notify
    destinations = load_destinations(notify)
    if not destinations:
        raise ConfigError("no notify destinations: add Apprise URLs to notify.urls or notify.urls_file")
    results = try_destinations(destinations, notify.timeout_seconds)
    for destination, outcome in results:
        said = "ok" if outcome.ok else f"failed: {outcome.cause}"
        out.print(f"destination {destination.label}: {said}", highlight=False, soft_wrap=True)
    if not all(outcome.ok for _, outcome in results):
        raise SystemExit(1)


@click.command()
@CONFIG_OPTION
@click.option("--user", default=None, help="Account the service runs as (default: you).")
@click.option("--serve", "web", is_flag=True, help="A unit for `scorer serve` instead of `scorer watch`.")
@click.option("--template", is_flag=True,
              help="The instance unit scorer@.service: instance NAME runs as user scorer-NAME, reads "
                   "/etc/scorer/NAME/config.yaml and sees only /srv/scorer/NAME; no instance gets network.")
@click.option("--instance", metavar="NAME", default=None,
              help="The drop-in that gives instance NAME of scorer@.service, alone, network for the notify "
                   "destinations its --config sets.")
def service(config_path: Path | None, user: str | None, web: bool, template: bool, instance: str | None) -> None:
    """Print a systemd unit for `scorer watch` (or `scorer serve`) with this install's paths; steps go to stderr.

    \b
    Example:
        scorer service --config /srv/scorer/config.yaml --user scorer > scorer.service
    """
    from scorer.service_units import install_commands, render_network_dropin, render_unit

    if web and template:
        raise click.UsageError("--template makes the instance unit of `scorer watch`: leave out --serve")
    if instance is not None and (web or template or user):
        raise click.UsageError("--instance makes a drop-in for an instance of the template: leave out "
                               "--serve, --template and --user")
    settings = load_settings(config_path)
    if instance is not None:
        click.echo(render_network_dropin(settings, instance), nl=False)
    else:
        unit = render_unit(settings, user, web=web, template=template)
        click.echo(unit.text, nl=False)
        for folder in unit.missing:
            err.print(f"create {folder} before starting the service (it is in ReadWritePaths)", highlight=False)
    steps = install_commands(settings, user, web=web, template=template, instance=instance)
    err.print("To install it:\n  " + "\n  ".join(steps), highlight=False, soft_wrap=True)
