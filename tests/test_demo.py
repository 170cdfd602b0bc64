"""`scorer demo`: generated posts, trained with the training pipeline, then generated creatives scored; twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.demo import NOTE


@pytest.mark.slow
def test_demo_trains_scores_and_runs_again(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("# all defaults, as on a fresh clone\n")

    first = CliRunner().invoke(main, ["demo", "--config", str(config)])
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert NOTE in text
    assert "Verdict: better than always answering" in text
    assert f"Model: {tmp_path / 'models' / 'demo.pkl'}" in text
    (report,) = (tmp_path / "outbox").glob("engagement-report-*.xlsx")
    assert f"Report: {report}" in text
    assert (tmp_path / "demo" / "posts" / "posts.csv").is_file()
    assert len(list((tmp_path / "demo" / "creatives").glob("*.jpg"))) == 12
    assert (tmp_path / "models" / "demo.card.json").is_file()

    book = load_workbook(report)
    model = dict(book["Model"].iter_rows(min_row=2, values_only=True))
    assert model["Model card: verdict"].startswith("better than always answering")
    header = [c.value for c in book["Ranking"][1]]
    rows = [dict(zip(header, r, strict=True)) for r in book["Ranking"].iter_rows(min_row=2, values_only=True)]
    mean = {colour: np.mean([r["Engagement score"] for r in rows if r["File"].startswith(colour)])
            for colour in ("warm-red", "fresh-green", "cool-blue")}
    assert mean["warm-red"] > mean["fresh-green"] > mean["cool-blue"]

    second = CliRunner().invoke(main, ["demo", "--config", str(config)])
    assert second.exit_code == 0, second.output
    (archived,) = (tmp_path / "models" / "archive").iterdir()
    assert (archived / "demo.pkl").is_file() and (archived / "demo.card.json").is_file()
    assert f"Previous model moved to {archived}" in " ".join(second.output.split())
    assert len(list((tmp_path / "outbox").glob("engagement-report-*.xlsx"))) == 2
