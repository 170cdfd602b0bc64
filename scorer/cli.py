"""Thin commands over the library. The one error boundary: ScorerError becomes one line and exit 2."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from scorer.config import load_settings
from scorer.errors import ScorerError

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="config.yaml to use (default: ./config.yaml, else built-in defaults).",
)


def _setup_logging(verbose: bool) -> None:
    # Library deprecation chatter (torch.jit, pandas options) means nothing to a marketer or operator.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        # journald and pipes: one plain line per record, level first
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("PIL", "matplotlib", "onnxscript", "onnx_ir", "torch", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def friendly_errors(func: F) -> F:
    """Turn the library's ScorerError into `error: <message>` and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ScorerError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


class _RateColumn(ProgressColumn):
    """Items per second, once there is a rate to show."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "")


@contextmanager
def progress_bar(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A rich progress bar with items/s on a terminal; silent otherwise. Yields (start, advance)."""
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        _RateColumn(), TimeElapsedColumn(),
        console=err, disable=not err.is_terminal, transient=False,
    )
    task = bar.add_task(label, total=None)
    with bar:
        yield (lambda total: bar.update(task, total=total)), (lambda n: bar.advance(task, n))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(package_name="scorer")
def main(verbose: bool) -> None:
    """Rank creatives by predicted engagement, before launch.

    \b
    Example:
        scorer demo
    """
    _setup_logging(verbose)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Exported learner (.pkl) to use instead of config's.")
@click.option("--out", "outbox", type=click.Path(path_type=Path), default=None,
              help="Folder for the report instead of config's outbox.")
@friendly_errors
def score(paths: tuple[Path, ...], config_path: Path | None, model: Path | None, outbox: Path | None) -> None:
    """Score image files and folders (recursively) into one ranked Excel report.

    The inputs are never moved or modified. Unreadable files are listed on the
    report's Rejected sheet; the rest are ranked by Engagement score.

    \b
    Example:
        scorer score creatives/ extra-banner.png --out ~/reports
    """
    from scorer.score import score_paths

    settings = load_settings(config_path, model=model, outbox=outbox)
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(settings, list(paths), progress=advance, on_start=start)
    _print_summary(run.result, run.report)


def _print_summary(result: Any, report: Path, top: int = 10) -> None:
    ranked = result.ranked()
    table = Table(title=f"Top {min(top, len(ranked))} of {len(ranked)} creatives", title_justify="left")
    for name in ("Rank", "File", "Predicted", "Confidence", "Score"):
        table.add_column(name, justify="left" if name in ("File", "Predicted") else "right")
    for rank, s in enumerate(ranked[:top], start=1):
        table.add_row(str(rank), s.name, s.predicted, f"{s.confidence:.0%}", f"{s.score:.1f}")
    out.print(table)
    extra = []
    if result.rejected:
        extra.append(f"{len(result.rejected)} rejected")
    if result.duplicates:
        extra.append(f"{len(result.duplicates)} duplicates")
    suffix = f" ({', '.join(extra)}: see the report)" if extra else ""
    out.print(f"{len(ranked)} scored{suffix}")
    out.print(f"Report: {report}", highlight=False, soft_wrap=True)


@main.group()
def model() -> None:
    """Pin the model file that scoring may load.

    \b
    Example:
        scorer model pin models/engagement.pkl
    """


@model.command("pin")
@click.argument("path", type=click.Path(path_type=Path))
@CONFIG_OPTION
@friendly_errors
def model_pin(path: Path, config_path: Path | None) -> None:
    """Trust a model file: write its SHA-256 to config.yaml as model_sha256.

    Run it after checking that the file came from someone you trust; the scorer
    then refuses any other content under that name.

    \b
    Example:
        scorer model pin models/engagement.pkl
    """
    from scorer.integrity import pin_model

    settings = load_settings(config_path)
    sha = pin_model(settings, path.absolute())
    out.print(f"pinned {path}: sha256 {sha} (written to {settings.source})", highlight=False)


@main.command()
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="Score what is in the inbox now (once it has settled), then exit.")
@friendly_errors
def watch(config_path: Path | None, once: bool) -> None:
    """Watch the inbox and score each batch of creatives dropped into it.

    Files that arrive together give one report in the outbox, and outbox/latest.xlsx
    ranks everything recent. Each file then moves to the archive (scored) or to the
    rejected folder with a <name>.reason.txt. Ctrl-C or SIGTERM finishes or abandons
    the batch in progress and exits; a restart picks up where it stopped.

    \b
    Example:
        scorer watch --config /srv/scorer/config.yaml
    """
    from scorer.service import serve

    settings = load_settings(config_path)
    with _live_status() as show:
        final = serve(settings, once=once, on_status=show)
    out.print(final.line(), highlight=False, soft_wrap=True)


@contextmanager
def _live_status() -> Iterator[Callable[[Any], None]]:
    """A one-line rich live status on a terminal; nothing otherwise (journald gets the logs)."""
    if not out.is_terminal:
        yield lambda status: None
        return
    from rich.live import Live

    with Live(Text("starting"), console=out, transient=True, refresh_per_second=4) as live:
        yield lambda status: live.update(Text(status.line()))


@main.command()
@CONFIG_OPTION
@click.option("--user", default=None, help="Account the service runs as (default: you).")
@friendly_errors
def service(config_path: Path | None, user: str | None) -> None:
    """Print a systemd unit for `scorer watch` with this install's paths; install steps go to stderr.

    \b
    Example:
        scorer service --config /srv/scorer/config.yaml --user scorer > scorer.service
    """
    from scorer.service import install_commands, render_unit

    settings = load_settings(config_path)
    unit = render_unit(settings, user)
    click.echo(unit.text, nl=False)
    for folder in unit.missing:
        err.print(f"create {folder} before starting the service (it is in ReadWritePaths)", highlight=False)
    err.print("To install it:\n  " + "\n  ".join(install_commands(settings, user)), highlight=False)


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--out", "model_out", type=click.Path(path_type=Path), default=None,
              help="Export the learner here instead of config's model (an existing file is archived, never lost).")
@friendly_errors
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
    from scorer.train import train as train_model

    settings = load_settings(config_path)
    run = train_model(settings, data, out=model_out, progress=out.is_terminal)
    _print_training(run)


def _print_training(run: Any) -> None:
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


@main.command()
@CONFIG_OPTION
@friendly_errors
def demo(config_path: Path | None) -> None:
    """Show the whole job: train a demo learner on generated posts, then score generated creatives.

    The posts and creatives go to demo/ beside config.yaml; the learner goes to
    models/demo.pkl (an earlier one is archived) and the report to the outbox.
    It takes a minute or two on a laptop and needs no network.

    \b
    Example:
        scorer demo
    """
    from scorer.demo import NOTE, prepare_demo
    from scorer.score import score_paths
    from scorer.train import train as train_model

    demo = prepare_demo(load_settings(config_path))
    _print_training(train_model(demo.settings, demo.posts, progress=out.is_terminal))
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(demo.settings, [demo.creatives], progress=advance, on_start=start)
    _print_summary(run.result, run.report)
    out.print(f"[bold]{NOTE}[/]", highlight=False, soft_wrap=True)


def run() -> None:
    """Console-script entry point."""
    main(prog_name="scorer")

