"""What every command shares: the --config option and the one error boundary (ScorerError -> one line, exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from scorer.console import err
from scorer.errors import ScorerError

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="config.yaml to use (default: ./config.yaml, else built-in defaults).",
)


class ScorerGroup(click.Group):
    """A click Group whose every command turns ScorerError into `error: <message>` and exit status 2.

    Usage errors (a missing argument, an unknown option) keep click's own status, 2 as well,
    with click's usage text; anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScorerError as exc:
            # escaped: a message such as "pip install 'scorer[ray]'" must not be read as rich markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(2)
