"""`python -m scorer` runs the CLI."""

from scorer.cli import run

run()
