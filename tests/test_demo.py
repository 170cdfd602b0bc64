"""`scorer demo`: generated posts, trained with the training pipeline, then generated creatives scored; twice,
with `scorer model pin` between, as the README's Score section has a new user do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.config import load_settings
from scorer.demo import NOTE, REELS, SERVE_NOTE
from scorer.fsutil import sha256_file
from tests.support.workbooks import as_libreoffice_reads


@pytest.mark.slow
def test_demo_trains_scores_and_runs_again_after_a_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "outbox").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("# all defaults, as on a fresh clone\n")

    first = CliRunner().invoke(main, ["demo", "--config", str(config)])
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert NOTE in text and SERVE_NOTE in text
    assert "Verdict: better than always answering" in text
    assert f"Model: {tmp_path / 'models' / 'demo.pkl'}" in text
    (report,) = (tmp_path / "outbox").glob("engagement-report-*.xlsx")
    assert f"Report: {report}" in text
    assert (tmp_path / "demo" / "posts" / "posts.csv").is_file()
    assert len(list((tmp_path / "demo" / "creatives").glob("*.jpg"))) == 12
    assert sorted(p.name for p in (tmp_path / "demo" / "creatives").glob("*.mp4")) == sorted(REELS)
    assert (tmp_path / "models" / "demo.card.json").is_file()

    book = load_workbook(report)
    model = dict(book["Model"].iter_rows(min_row=2, values_only=True))
    assert model["Model card: verdict"].startswith("better than always answering")
    assert str(book["Ranking"]["A1"].value).startswith("Demo model:"), "the report says it is the demo's"
    header = [c.value for c in book["Ranking"][2]]
    rows = [dict(zip(header, r, strict=True)) for r in book["Ranking"].iter_rows(min_row=3, values_only=True)]
    mean = {colour: np.mean([r["Engagement score"] for r in rows if r["File"].startswith(colour)])
            for colour in ("warm-red", "fresh-green", "cool-blue")}
    assert mean["warm-red"] > mean["fresh-green"] > mean["cool-blue"]
    check_reels(report, rows, tmp_path / "libreoffice")
    page = _served_card(config, tmp_path / "demo" / "creatives" / "warm-red-1.jpg")
    assert page.count('class="card"') == 1 and 'data-name="warm-red-1.jpg" data-class="High"' in page
    # the card carries the evidence: where the model looked and three of the account's own posts
    assert 'class="overlay"' in page and "Looks like your posts" in page and "of your posts" in page
    (looks_like,) = re.findall(r'<ul class="looks-like">(.*?)</ul>', page, re.S)
    assert looks_like.count("<li ") == 3

    # As a new user does after reading the README's Score section, from the project folder: pin, then again.
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "demo.pkl"
    pinned = CliRunner().invoke(main, ["model", "pin", "models/demo.pkl"])
    assert pinned.exit_code == 0, pinned.output
    first_sha = sha256_file(model)
    second = CliRunner().invoke(main, ["demo"])
    assert second.exit_code == 0, second.output
    assert pinned.output.splitlines()[0] == f"pinned models/demo.pkl: sha256 {first_sha} (model_sha256 in {config})"
    assert load_settings(config).model_sha256 == sha256_file(model), "the pin follows the demo's new learner"
    (archived,) = (tmp_path / "models" / "archive").iterdir()
    assert (archived / "demo.pkl").is_file() and (archived / "demo.card.json").is_file()
    assert f"Previous model moved to {archived}" in " ".join(second.output.split())
    assert len(list((tmp_path / "outbox").glob("engagement-report-*.xlsx"))) == 2


def check_reels(report: Path, rows: list[dict[str, object]], out: Path) -> None:
    """The demo's reels ranked among its stills, the warm hook above the cool one, each with its filmstrip; the
    report opens cleanly in LibreOffice."""
    reels = {str(r["File"]): r for r in rows if str(r["File"]) in REELS}
    assert sorted(reels) == sorted(REELS) and {r["Format"] for r in reels.values()} == {"video 0:08 · 9:16"}
    assert int(reels["warm-hook-reel.mp4"]["Rank"]) < int(reels["cool-hook-reel.mp4"]["Rank"])  # type: ignore[arg-type]
    assert "16 frames scored, 8 in the first 3 s" in str(reels["warm-hook-reel.mp4"]["Notes"])
    ws = load_workbook(report)["Ranking"]
    header = [c.value for c in ws[2]]
    strip = header.index("Filmstrip")
    shown_in = {image.anchor._from.row + 1 for image in ws._images if image.anchor._from.col == strip}
    reel_rows = {row for row in range(3, ws.max_row + 1) if ws.cell(row, header.index("File") + 1).value in REELS}
    assert shown_in == reel_rows, "a filmstrip beside each reel, and only there"
    read = as_libreoffice_reads(report, out)
    if read is not None:
        assert set(REELS) <= {row[1] for row in read["Ranking"] if len(row) > 1}


def _served_card(config: Path, creative: Path) -> str:
    """The Try page of `scorer serve` on the demo model after uploading one of the demo's creatives."""
    from fastapi.testclient import TestClient

    from scorer.scoring.assembly import open_engine
    from scorer.web.app import create_app

    settings = load_settings(config)
    engine = open_engine(settings)
    try:
        with TestClient(create_app(settings, engine, None), base_url="http://127.0.0.1") as client:
            assert "Try creatives" in client.get("/").text
            page = client.post("/try", files=[("creatives", (creative.name, creative.read_bytes(), "image/jpeg"))])
    finally:
        engine.close()
    assert page.status_code == 200
    return page.text
