"""The scoring commands: `scorer score`, `bulk`, `watch` and `serve`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from scorer.cli.common import CONFIG_OPTION
from scorer.config import load_settings
from scorer.console import live_status, out, print_summary, progress_bar


@click.command()
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
    from scorer.score.run import score_paths

    settings = load_settings(config_path, model=model, outbox=outbox)
    with progress_bar("Scoring") as (start, advance):
        run = score_paths(settings, list(paths), progress=advance, on_start=start, create_outbox=outbox is not None)
    print_summary(run.result, run.report)
    for line in run.sidecars.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "dest", metavar="DEST", type=click.Path(path_type=Path), required=True,
              help="Folder for the Parquet results, one row per input (created if missing).")
@CONFIG_OPTION
@click.option("--address", default=None, help="Ray cluster to join: auto or ray://HOST:10001 (default: start one).")
@click.option("--resume", is_flag=True,
              help="Keep the results already in DEST (--out) and score only inputs whose content is new.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Also write a workbook of the best --top creatives.")
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


@click.command()
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
    from scorer.watch.service import watch_inbox

    settings = load_settings(config_path)
    with live_status() as show:
        final = watch_inbox(settings, once=once, on_status=show)
    out.print(final.line(), highlight=False, soft_wrap=True)


@click.command()
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
    from scorer.web.server import serve_page

    settings = load_settings(config_path)
    # --host and --port override serve.host and serve.port, as --model and --out do for `scorer score`
    serve = replace(settings.serve, host=settings.serve.host if host is None else host,
                    port=settings.serve.port if port is None else port)
    serve_page(replace(settings, serve=serve),
               on_ready=lambda url: out.print(f"Open {url} in a browser (Ctrl-C stops)", highlight=False))
