"""The data people's commands: `scorer train`, `index`, `outcomes`, and `demo`, which trains and scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from scorer.cli.common import CONFIG_OPTION
from scorer.config import load_settings
from scorer.console import out, print_summary, progress_bar

if TYPE_CHECKING:
    from scorer.outcomes.run import OutcomesRun
    from scorer.training.train import TrainRun


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--out", "model_out", type=click.Path(path_type=Path), default=None,
              help="Export the learner here instead of config's model (an existing file is archived, never lost).")
def train(data: Path, config_path: Path | None, model_out: Path | None) -> None:
    """Train an engagement learner on past posts; export it with a model card and an honest verdict.

    DATA is a folder of images with posts.csv (columns file, likes, comments; optional
    posted_at, is_ad, caption), or a profile folder downloaded by Instaloader. Likely
    advertised posts are dropped, the rest are classed by likes + comments, and the
    newest posts are held out to judge the model against always answering the most
    common class. The learner replaces the configured model (the old one is
    archived), so `scorer score` and `scorer watch` use it next.

    \b
    Example:
        scorer train ~/instagram/myshop --out models/myshop.pkl
    """
    from scorer.training.prepare import prepare

    settings = load_settings(config_path)
    prepared = prepare(settings, data)  # before fastai's seconds of importing: a wrong folder is told at once
    from scorer.training.train import train as train_model

    print_training(train_model(settings, data, out=model_out, progress=out.is_terminal, prepared=prepared))


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Exported learner (.pkl) to index instead of config's.")
def index(data: Path, config_path: Path | None, model: Path | None) -> None:
    """Build the evidence index of a learner from past posts, so reports show look-alike posts.

    DATA is a posts.csv folder or an Instaloader profile folder, as for `scorer train`.
    The index goes beside the model as <stem>.index.parquet and is pinned with it.

    \b
    Example:
        scorer index ~/instagram/myshop --model models/engagement.pkl
    """
    from scorer.training.index import index_posts

    run = index_posts(load_settings(config_path, model=model), data)
    out.print(f"Evidence index: {run.path} ({run.posts} posts, sha256 {run.sha256})", highlight=False, soft_wrap=True)
    for way, line in (run.comparison.lines() if run.comparison else {}).items():
        out.print(f"  {way}: {line}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the track record, with every pair, to this JSON file.")
def outcomes(data: Path, config_path: Path | None, json_out: Path | None) -> None:
    """Match launched posts to the creatives scored before them, and show whether the picks won.

    DATA is a posts.csv folder or an Instaloader profile folder, downloaded after launch. Each
    post is matched to at most one scored creative (crops, resizing, re-encoding and mild filters
    are seen through) and the pair is kept in the ledger; re-running on a newer download updates
    likes and comments. Posts at least outcomes.min_age_days old count towards the model's record.

    \b
    Example:
        scorer outcomes ~/instagram/myshop --json outcomes.json
    """
    import json

    from scorer.fsutil import atomic_write
    from scorer.outcomes.run import run_outcomes

    run = run_outcomes(load_settings(config_path), data)
    print_outcomes(run)
    if json_out is not None:
        atomic_write(json_out, json.dumps(run.track.as_dict(), indent=2, default=str))
        out.print(f"Track record: {json_out}", highlight=False, soft_wrap=True)


@click.command()
@CONFIG_OPTION
def demo(config_path: Path | None) -> None:
    """Show the whole job: train a demo learner on generated posts, then score generated creatives.

    The posts and creatives go to demo/ beside config.yaml; the learner goes to
    models/demo.pkl (an earlier one is archived) and the report to the outbox.
    It takes a minute or two on a laptop and needs no network.

    \b
    Example:
        scorer demo
    """
    from scorer.demo import NOTE, SERVE_NOTE, prepare_demo

    demo = prepare_demo(load_settings(config_path))  # before fastai's seconds of importing: a bad config is told now
    from scorer.score.run import score_paths
    from scorer.training.train import train as train_model

    trained = train_model(demo.settings, demo.posts, progress=out.is_terminal)
    print_training(trained)
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(demo.trained(trained.sha256), [demo.creatives], progress=advance, on_start=start)
    print_summary(run.result, run.report)
    out.print(f"[bold]{NOTE}[/]", highlight=False, soft_wrap=True)
    out.print(SERVE_NOTE, highlight=False, soft_wrap=True)


def print_training(run: TrainRun) -> None:
    """The cleaning funnel, the held-out metrics, the verdict and where the model went."""
    funnel = Table(title="Cleaning funnel", title_justify="left")
    for name, justify in (("Step", "left"), ("Removed", "right"), ("Left", "right")):
        funnel.add_column(name, justify=justify)  # type: ignore[arg-type]
    for step in run.funnel:
        funnel.add_row(step.rule, str(step.removed), str(step.left))
    out.print(funnel)
    metrics = Table(title="Held-out posts", title_justify="left")
    metrics.add_column("Metric")
    metrics.add_column("Value", justify="right")
    for key, value in run.headline.items():
        metrics.add_row(key, value)
    out.print(metrics)
    colour = "green" if run.evaluation.better_than_baseline else "yellow"
    out.print(f"[bold {colour}]Verdict: {run.evaluation.verdict}[/]", highlight=False, soft_wrap=True)
    if run.archived:
        out.print(f"Previous model moved to {run.archived}", highlight=False, soft_wrap=True)
    out.print(f"Model: {run.model} (sha256 {run.sha256[:12]}…, pinned)", highlight=False, soft_wrap=True)
    out.print(f"Model card: {run.page}", highlight=False, soft_wrap=True)


def print_outcomes(run: OutcomesRun) -> None:
    """The track record's figures and verdict, and the posts that could not be read."""
    rec = run.track
    table = Table(title=f"Track record of model {rec.model_sha256[:12]}…", title_justify="left")
    table.add_column("Figure")
    table.add_column("Value", justify="right")
    for key, value in rec.headline.items():
        if key != "Verdict":
            table.add_row(key, value)
    out.print(table)
    for bad in run.unreadable:
        out.print(f"  skipped {bad.source}: {bad.reason}", highlight=False, soft_wrap=True, markup=False)
    out.print(f"{run.found} posts matched in this download, {rec.unmatched_posts} matched no scored creative"
              + (f"; {run.unmatchable} creatives could not be compared (no archived file)" if run.unmatchable else ""))
    colour = "green" if rec.verdict.startswith("the ranking agrees") else "yellow"
    out.print(f"[bold {colour}]Verdict:[/] {escape(rec.verdict)}", highlight=False, soft_wrap=True)
