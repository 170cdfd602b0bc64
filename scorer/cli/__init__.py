"""Thin commands over the library, one module per kind of user. One error boundary: ScorerGroup (common.py).

    common.py     the --config option and ScorerGroup: every ScorerError becomes one line and exit 2
    scoring.py    score, bulk, watch, serve
    operating.py  model pin, notify test, service
    data.py       train, index, outcomes, demo
"""

from __future__ import annotations

import click

from scorer.cli.common import ScorerGroup
from scorer.cli.data import demo, index, outcomes, train
from scorer.cli.operating import model, notify, service
from scorer.cli.scoring import bulk, score, serve, watch
from scorer.console import setup_logging


@click.group(cls=ScorerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(package_name="scorer")
def main(verbose: bool) -> None:
    """Rank creatives by predicted engagement, before launch.

    \b
    Example:
        scorer demo
    """
    setup_logging(verbose)


for command in (score, bulk, model, watch, serve, notify, service, train, index, outcomes, demo):
    main.add_command(command)


def run() -> None:
    """Console-script entry point."""
    main(prog_name="scorer")
