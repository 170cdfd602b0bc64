"""Terminal output: logging set-up, progress bars, the live status line and the printed summaries (rich)."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from scorer.results import BatchResult
from scorer.textsafe import log_text

out = Console()
err = Console(stderr=True)


def setup_logging(verbose: bool) -> None:
    """Log to stderr: rich on a terminal, one plain line per record for journald and pipes."""
    # Library deprecation chatter (torch.jit, pandas options) means nothing to a marketer or operator.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err, show_path=False)
        handler.setFormatter(_OneLineFormatter("%(message)s"))
    else:
        # journald and pipes: one plain line per record, level first
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("PIL", "matplotlib", "onnxscript", "onnx_ir", "torch", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _OneLineFormatter(logging.Formatter):
    """A record's message stays on its line: a newline in a file name cannot forge another record."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's own name)
        record.message = log_text(record.message)
        return super().formatMessage(record)


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


def print_summary(result: BatchResult, report: Path, top: int = 10, rejected: int = 5) -> None:
    """The top of the ranking (when anything was scored), the counts, the first rejected files with their reasons,
    and the report's path."""
    ranked = result.ranked()
    if ranked:
        table = Table(title=f"Top {min(top, len(ranked))} of {len(ranked)} creatives", title_justify="left")
        videos = any(s.video is not None for s in ranked)  # then each row says which creatives are videos
        for name in ("Rank", "File", *(("Format",) if videos else ()), "Predicted", "Confidence", "Score"):
            table.add_column(name, justify="left" if name in ("File", "Format", "Predicted") else "right")
        for n, s in enumerate(ranked[:top], start=1):
            table.add_row(str(n), Text(log_text(s.name)), *((s.media,) if videos else ()), s.predicted,
                          f"{s.confidence:.0%}", f"{s.score:.1f}")
        out.print(table)
    counts = [f"{len(ranked)} scored", f"{len(result.rejected)} rejected"]
    if result.duplicates:
        counts.append(f"{len(result.duplicates)} duplicates")
    lines = [", ".join(counts) + ("" if ranked else ": nothing could be scored")]
    if result.rejected:
        lines.append("Rejected:")
        # names and reasons are untrusted: no control character reaches a terminal, no markup is read in them
        lines += [log_text(f"  {bad.name}: {bad.reason}") for bad in result.rejected[:rejected]]
        if len(result.rejected) > rejected:
            lines.append(f"  and {len(result.rejected) - rejected} more: see the report's Rejected sheet")
    lines.append(f"Report: {report}")
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def live_status() -> Iterator[Callable[[Any], None]]:
    """A one-line rich live status on a terminal; nothing otherwise (journald gets the logs)."""
    if not out.is_terminal:
        yield lambda status: None
        return
    from rich.live import Live

    with Live(Text("starting"), console=out, transient=True, refresh_per_second=4) as live:
        yield lambda status: live.update(Text(status.line()))
