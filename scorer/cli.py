"""Thin commands over the library. One error boundary: ScorerGroup turns ScorerError into one line and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from scorer.config import load_settings
from scorer.console import (
    err,
    live_status,
    out,
    print_outcomes,
    print_summary,
    print_training,
    progress_bar,
    setup_logging,
)
from scorer.errors import ConfigError, ScorerError

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


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Exported learner (.pkl) to use instead of config's.")
@click.option("--out", "outbox", type=click.Path(path_type=Path), default=None,
              help="Folder for the report instead of config's outbox.")
def score(paths: tuple[Path, ...], config_path: Path | None, model: Path | None, outbox: Path | None) -> None:
    """Score image files and folders (recursively) into one ranked Excel report.

    The inputs are never moved or modified. Unreadable files are listed on the
    report's Rejected sheet; the rest are ranked by Engagement score.

    \b
    Example:
        scorer score creatives/ extra-banner.png --out ~/reports
    """
    from scorer.scoring.score import score_paths

    settings = load_settings(config_path, model=model, outbox=outbox)
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(settings, list(paths), progress=advance, on_start=start, create_outbox=outbox is not None)
    print_summary(run.result, run.report)
    for line in run.sidecars.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "dest", type=click.Path(path_type=Path), required=True,
              help="Folder for the Parquet results (created if missing).")
@CONFIG_OPTION
@click.option("--address", default=None, help="Ray cluster to join: auto or ray://HOST:10001 (default: start one).")
@click.option("--resume", is_flag=True, help="Keep DEST's results and score only inputs whose content is new.")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Also write a workbook of the top N.")
@click.option("--top", default=1000, show_default=True, type=click.IntRange(min=1), help="Creatives in --report.")
def bulk(sources: tuple[str, ...], dest: Path, config_path: Path | None, address: str | None, resume: bool,
         report: Path | None, top: int) -> None:
    """Score an archive (folders, or s3:// gs:// hdfs:// URIs) on Ray into Parquet, one row per input.

    Needs `pip install 'scorer[ray]'`. Answers match `scorer score`; see docs/bulk.md.

    \b
    Example:
        scorer bulk /archive/2025 s3://brand-assets/posts --out results/ --address auto --report top.xlsx
    """
    from scorer.bulk import require_ray

    require_ray()  # before importing the room, which needs pyarrow as well
    from scorer.bulk.pipeline import run_bulk
    from scorer.bulk.topn import save_top_report

    settings = load_settings(config_path)
    with progress_bar("Scoring") as (start, advance):
        run = run_bulk(settings, list(sources), dest, address=address, resume=resume, on_start=start,
                       progress=advance)
    out.print(f"{run.line()} in {dest}", highlight=False, soft_wrap=True)
    if report is not None:
        out.print(f"Report: {save_top_report(report, dest, run.info, settings, top)}", highlight=False, soft_wrap=True)


@main.group(cls=ScorerGroup)
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
    """Trust a model file: write its SHA-256 to config.yaml as model_sha256.

    Run it after checking that the file came from someone you trust; the scorer
    then refuses any other content under that name.

    \b
    Example:
        scorer model pin models/engagement.pkl
    """
    from scorer.scoring.integrity import pin_model

    settings = load_settings(config_path)
    sha = pin_model(settings, path.absolute())
    out.print(f"pinned {path}: sha256 {sha} (written to {settings.source})", highlight=False)


@main.command()
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="Score what is in the inbox now (once it has settled), then exit.")
def watch(config_path: Path | None, once: bool) -> None:
    """Watch the inbox and score each batch of creatives dropped into it.

    Files that arrive together give one report in the outbox, and outbox/latest.xlsx
    ranks the best recent ones (rewritten in the background). Each file then moves to the archive (scored) or to the
    rejected folder with a <name>.reason.txt. Ctrl-C or SIGTERM finishes or abandons
    the batch in progress and exits; a restart picks up where it stopped.

    \b
    Example:
        scorer watch --config /srv/scorer/config.yaml
    """
    from scorer.watch.service import serve

    settings = load_settings(config_path)
    with live_status() as show:
        final = serve(settings, once=once, on_status=show)
    out.print(final.line(), highlight=False, soft_wrap=True)


@main.command()
@CONFIG_OPTION
@click.option("--host", default=None, help="Address to listen on (default: serve.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: serve.port, 8000).")
def serve(config_path: Path | None, host: str | None, port: int | None) -> None:
    """Serve a web page to try creatives, browse the outbox's reports and see the model card.

    The model is loaded once; uploads are vetted like inbox files, scored by the same
    engine as `scorer score`, and deleted once scored unless serve.keep_uploads is set.
    Listening anywhere but 127.0.0.1 needs serve.token (or serve.token_file).

    \b
    Example:
        scorer serve --port 8000
    """
    from scorer.web.server import serve as serve_page

    settings = load_settings(config_path)
    serve_page(settings, host or settings.serve.host, port or settings.serve.port,
               on_ready=lambda url: out.print(f"Open {url} in a browser (Ctrl-C stops)", highlight=False))


@main.group(cls=ScorerGroup)
def notify() -> None:
    """Check the destinations that `scorer watch` notifies (notify.urls, notify.urls_file).

    \b
    Example:
        scorer notify test
    """


@notify.command("test")
@CONFIG_OPTION
def notify_test(config_path: Path | None) -> None:
    """Send one test message to each destination now, and say for each whether it took it (exit 1 if any did not).

    \b
    Example:
        scorer notify test --config /etc/scorer/brand-a/config.yaml
    """
    from scorer.notify.destinations import load_destinations
    from scorer.notify.sender import try_destinations

    destinations = load_destinations(load_settings(config_path).notify)
    if not destinations:
        raise ConfigError("no notify destinations: add Apprise URLs to notify.urls or notify.urls_file")
    results = try_destinations(destinations)
    for label, ok in results:
        out.print(f"destination {label}: {'ok' if ok else 'failed'}", highlight=False)
    if not all(ok for _, ok in results):
        raise SystemExit(1)


@main.command()
@CONFIG_OPTION
@click.option("--user", default=None, help="Account the service runs as (default: you).")
@click.option("--serve", "web", is_flag=True, help="A unit for `scorer serve` instead of `scorer watch`.")
@click.option("--template", is_flag=True,
              help="The instance unit scorer@.service: instance NAME reads /etc/scorer/NAME/config.yaml.")
def service(config_path: Path | None, user: str | None, web: bool, template: bool) -> None:
    """Print a systemd unit for `scorer watch` (or `scorer serve`) with this install's paths; steps go to stderr.

    \b
    Example:
        scorer service --config /srv/scorer/config.yaml --user scorer > scorer.service
    """
    from scorer.watch.systemd import install_commands, render_unit

    if web and template:
        raise click.UsageError("--template makes the instance unit of `scorer watch`: leave out --serve")
    settings = load_settings(config_path)
    unit = render_unit(settings, user, web=web, template=template)
    click.echo(unit.text, nl=False)
    for folder in unit.missing:
        err.print(f"create {folder} before starting the service (it is in ReadWritePaths)", highlight=False)
    steps = install_commands(settings, user, web=web, template=template)
    err.print("To install it:\n  " + "\n  ".join(steps), highlight=False)


@main.command()
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
    from scorer.training.train import train as train_model

    settings = load_settings(config_path)
    print_training(train_model(settings, data, out=model_out, progress=out.is_terminal))


@main.command()
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


@main.command()
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
        atomic_write(json_out, json.dumps(run.record.as_dict(), indent=2, default=str))
        out.print(f"Track record: {json_out}", highlight=False, soft_wrap=True)


@main.command()
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
    from scorer.scoring.score import score_paths
    from scorer.training.train import train as train_model

    demo = prepare_demo(load_settings(config_path))
    print_training(train_model(demo.settings, demo.posts, progress=out.is_terminal))
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(demo.settings, [demo.creatives], progress=advance, on_start=start)
    print_summary(run.result, run.report)
    out.print(f"[bold]{NOTE}[/]", highlight=False, soft_wrap=True)
    out.print(SERVE_NOTE, highlight=False, soft_wrap=True)


def run() -> None:
    """Console-script entry point."""
    main(prog_name="scorer")
