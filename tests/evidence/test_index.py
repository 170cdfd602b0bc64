"""Evidence in reports: look-alike past posts from the index, their median, the account percentile, and the pins.

One real `scorer train` on the demo's colour-coded posts (session fixture) serves most tests;
the plain-fastai learner from conftest is indexed with `scorer index`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.config import load_settings
from scorer.demo import PALETTES, REELS, TOTALS, write_creatives, write_posts
from scorer.evidence.index import index_path
from scorer.fsutil import sha256_file
from scorer.report.evidence_columns import FILMSTRIP, LOOKS_LIKE, MEDIAN, PERCENTILE
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Item
from scorer.training.train import train
from tests.support.learners import build_learner, colour_design
from tests.support.workbooks import column

CONFIG = """model: models/engagement.pkl
threads: 1
report:
  explain: never
train:
  arch: resnet18
  pretrained: false
  epochs: 3
  image_size: 32
  batch_size: 16
  valid_pct: 0.25
  bootstrap: 200
"""
EVIDENCE_COLUMNS = [*LOOKS_LIKE, MEDIAN, PERCENTILE]


@dataclass
class Trained:
    """A project whose model was trained on demo posts, with its index."""

    root: Path
    config: Path
    posts: Path
    creatives: Path


def _project(root: Path, text: str = CONFIG) -> Path:
    for name in ("inbox", "outbox", "models"):
        (root / name).mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(text, encoding="utf-8")
    return config


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("evidence")
    config = _project(root)
    posts = write_posts(root / "posts", n=90).parent
    creatives = root / "creatives"
    write_creatives(creatives, per_palette=2)
    train(load_settings(config), posts, progress=False)
    return Trained(root, config, posts, creatives)


def _palette_of_line(posts: Path) -> dict[str, str]:
    """'posts.csv line N' -> the class whose colour the post has (its caption names it)."""
    with open(posts / "posts.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {f"posts.csv line {i + 2}": row["caption"].split()[0].capitalize() for i, row in enumerate(rows)}


@pytest.fixture(scope="module")
def colour_indexed(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Path:
    """A project whose learner sees colour by construction (tests/support/learners.py), indexed on the same posts with
    `scorer index`: which posts a briefly trained learner puts nearest changes with the CPU's kernels."""
    root = tmp_path_factory.mktemp("colour-indexed")
    config = _project(root, "model: models/colour.pkl\nthreads: 1\nreport:\n  explain: never\n")
    build_learner(root / "models" / "colour.pkl", colour_design())
    built = CliRunner().invoke(main, ["index", str(trained.posts), "--config", str(config)])
    assert built.exit_code == 0, built.output
    return config


def test_nearest_posts_share_the_colour_and_their_median_lies_in_its_range(trained: Trained,
                                                                          colour_indexed: Path) -> None:
    engine = open_engine(load_settings(colour_indexed))
    try:
        items = [Item(p, p.name) for p in sorted(trained.creatives.glob("*.jpg"))]
        result = engine.score(items)
    finally:
        engine.close()
    palette = _palette_of_line(trained.posts)
    colour_of = {"cool": "Low", "fresh": "Neutral", "warm": "High"}
    assert len(result.scored) == 3 * 2 and set(colour_of[n.split("-")[0]] for n in [s.name for s in result.scored]) \
        == set(PALETTES)
    for s in result.scored:
        expected = colour_of[s.name.split("-")[0]]
        assert s.evidence is not None
        assert len(s.evidence.neighbours) == 3
        assert [palette[n.source] for n in s.evidence.neighbours] == [expected] * 3, s.name
        low, high = TOTALS[expected]
        assert low <= s.evidence.median_total <= high, (s.name, s.evidence.median_total)
        sims = [n.similarity for n in s.evidence.neighbours]
        assert sims == sorted(sims, reverse=True)
        assert 0.0 <= s.evidence.percentile <= 1.0
    scores = {s.name: s.score for s in result.scored}
    pct = {s.name: s.evidence.percentile for s in result.scored if s.evidence}
    # The percentile follows the Engagement score: a higher score is never below a lower one's percentile.
    ordered = sorted(scores, key=scores.__getitem__)
    assert [pct[n] for n in ordered] == sorted(pct[n] for n in ordered)


def test_card_pins_the_index_and_compares_ways_of_predicting(trained: Trained) -> None:
    model = trained.root / "models" / "engagement.pkl"
    card = json.loads(model.with_suffix(".card.json").read_text())
    index = index_path(model)
    assert card["index"]["sha256"] == sha256_file(index) and card["index"]["file"] == index.name
    pins = json.loads((trained.root / "state" / "model-pins.json").read_text())
    assert pins[str(index.resolve())] == card["index"]["sha256"]
    comparison = card["comparison"]
    knn, classifier, baseline = comparison["accuracy"]
    assert (knn, classifier) == ("kNN estimate (3 nearest posts)", "Classifier")
    assert baseline.startswith("Majority baseline (always ")
    for name, acc in comparison["accuracy"].items():
        assert acc["low"] <= acc["value"] <= acc["high"], name
    assert comparison["spearman"][list(comparison["spearman"])[2]]["value"] is None  # a constant has no ranking
    assert card["headline"]["Best supported"] == comparison["verdict"]
    assert "## Ways of predicting" in model.with_suffix(".card.md").read_text()


def test_report_shows_evidence_columns_and_model_sheet_comparison(trained: Trained) -> None:
    result = CliRunner().invoke(main, ["score", str(trained.creatives), "--config", str(trained.config)])
    assert result.exit_code == 0, result.output
    report = sorted((trained.root / "outbox").glob("engagement-report-*.xlsx"))[-1]
    book = load_workbook(report)
    header = [c.value for c in book["Ranking"][1]]
    # The demo's creatives include reels: their filmstrip comes first, then the evidence.
    assert header[header.index("Thumbnail") + 1: header.index("Thumbnail") + 7] == [FILMSTRIP, *EVIDENCE_COLUMNS]
    assert "Where the model looked" not in header  # explain: never
    medians = column(report, "Ranking", MEDIAN)
    assert all(isinstance(m, int) and m > 0 for m in medians)
    assert all(str(p).startswith("above ") and str(p).endswith("% of your posts") for p in column(
        report, "Ranking", PERCENTILE))
    looks = column(report, "Ranking", LOOKS_LIKE[0])
    assert all(" · " in str(text) for text in looks)
    # Each row's thumbnail and three look-alike pictures, and each reel's filmstrip.
    reels = [f for f in column(report, "Ranking", "Format") if f != "image"]
    assert len(reels) == len(REELS)
    assert len(book["Ranking"]._images) == 4 * len(medians) + len(reels)
    model = dict(book["Model"].iter_rows(min_row=2, values_only=True))
    assert "past posts in" in model["Evidence index"]
    assert model["Model card: Best supported"]
    assert model["Model card: Classifier"].startswith("accuracy ")


def test_one_forward_pass_per_batch_with_evidence(trained: Trained) -> None:
    settings = load_settings(trained.config)
    # exact decoding: a new model's decode check runs extra passes on its first creatives, evidence none
    settings = dataclasses.replace(settings, images=dataclasses.replace(settings.images, decode="exact"))
    engine = open_engine(settings)
    runtime = engine.model.runtime  # type: ignore[attr-defined]
    calls: list[int] = []
    original = runtime.run

    def counting(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        calls.append(len(batch))
        return original(batch)

    runtime.run = counting
    try:
        items = [Item(p, p.name) for p in sorted(trained.creatives.glob("*.jpg"))]
        result = engine.score(items)
    finally:
        engine.close()
    assert all(s.evidence is not None for s in result.scored)
    assert sum(calls) == len(items)
    assert len(calls) == math.ceil(len(items) / engine.model.batch_size)
    assert engine.info.runtime.startswith("onnxruntime")
    assert list((trained.root / "models").glob("engagement.*.embedding.onnx"))


def test_plain_fastai_learner_indexed_with_scorer_index_gets_the_same_columns(tmp_path: Path, tiny_learner: Path,
                                                                          trained: Trained) -> None:
    config = _project(tmp_path, "model: models/tiny.pkl\nthreads: 1\nreport:\n  explain: never\n")
    shutil.copy(tiny_learner, tmp_path / "models" / "tiny.pkl")
    posts = write_posts(tmp_path / "posts", n=40).parent
    runner = CliRunner()
    before = runner.invoke(main, ["score", str(trained.creatives), "--config", str(config)])
    assert before.exit_code == 0, before.output
    (plain,) = (tmp_path / "outbox").glob("*.xlsx")
    assert MEDIAN not in [c.value for c in load_workbook(plain)["Ranking"][1]]
    note = dict(load_workbook(plain)["Model"].iter_rows(min_row=2, values_only=True))["Evidence index"]
    assert "scorer index DATA --model" in note
    plain.unlink()

    built = runner.invoke(main, ["index", str(posts), "--config", str(config)])
    assert built.exit_code == 0, built.output
    match = re.search(r"Evidence index: .*tiny\.index\.parquet \((\d+) posts", " ".join(built.output.split()))
    assert match and 20 <= int(match.group(1)) <= 40, built.output
    assert index_path(tmp_path / "models" / "tiny.pkl").is_file()
    scored = runner.invoke(main, ["score", str(trained.creatives), "--config", str(config)])
    assert scored.exit_code == 0, scored.output
    (report,) = (tmp_path / "outbox").glob("*.xlsx")
    header = [c.value for c in load_workbook(report)["Ranking"][1]]
    assert [h for h in header if h in EVIDENCE_COLUMNS] == EVIDENCE_COLUMNS
    report.unlink()

    # One changed byte of the index: scoring refuses it and names the fix.
    index = index_path(tmp_path / "models" / "tiny.pkl")
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0x01
    index.write_bytes(bytes(data))
    refused = runner.invoke(main, ["score", str(trained.creatives), "--config", str(config)])
    assert refused.exit_code == 2
    line = " ".join(refused.output.split())
    assert f"evidence index {index} has changed since it was pinned" in line
    assert "rebuild it with `scorer index DATA --model" in line
    assert not list((tmp_path / "outbox").glob("*.xlsx"))


def test_ledger_keeps_evidence_and_reads_rows_from_before_it(tmp_path: Path) -> None:
    from scorer.ledger.schema import Candidate, Entry, file_row, scored_from_row
    from scorer.results import Lookalikes, Neighbour, Scored

    neighbour = Neighbour("posts.csv line 2", "2024-01-01", 9000, 100, 9100, 0.93, b"\xff\xd8jpeg")
    ev = Lookalikes((neighbour,), 9100.0, 0.85)
    s = Scored("a.jpg", "/in/a.jpg", "ab" * 32, ("Low", "High"), (0.25, 0.75), 10, 20, "PNG", 123, 1.0, 2.0,
               evidence=ev, overlay=b"\x89PNG overlay")
    row = file_row(Entry(Candidate(Path("/in/a.jpg"), "a.jpg", "ab" * 32, 123, 1), "scored", scored=s), 1)
    result = row[6]
    back = scored_from_row(("a.jpg", "/in/a.jpg", "ab" * 32, result, None, "r.xlsx"))
    assert back.evidence == ev and back.overlay == s.overlay
    assert back.evidence.percentile_text == "above 85% of your posts"
    old = json.loads(result)
    del old["evidence"], old["overlay"]
    before = scored_from_row(("a.jpg", "/in/a.jpg", "ab" * 32, json.dumps(old), None, "r.xlsx"))
    assert before.evidence is None and before.overlay is None and before.probs == (0.25, 0.75)


@pytest.mark.slow
def test_watch_stores_evidence_in_the_ledger_and_renders_it(trained: Trained) -> None:
    config = trained.root / "watch.yaml"
    config.write_text(CONFIG.replace("explain: never", "explain: always") + "inbox: watch-in\noutbox: watch-out\n"
                      "watch:\n  settle_seconds: 0.3\n  rescan_seconds: 1\n", encoding="utf-8")
    for name in ("watch-in", "watch-out"):
        (trained.root / name).mkdir()
    for path in sorted(trained.creatives.glob("*.jpg"))[:3]:
        shutil.copy(path, trained.root / "watch-in" / path.name)
    result = CliRunner().invoke(main, ["watch", "--once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (batch,) = (trained.root / "watch-out").glob("engagement-report-*.xlsx")
    for report in (batch, trained.root / "watch-out" / "latest.xlsx"):  # latest.xlsx is rendered from the ledger
        book = load_workbook(report)
        header = [c.value for c in book["Ranking"][1]]
        assert [h for h in header if h in ("Where the model looked", *EVIDENCE_COLUMNS)] == \
            ["Where the model looked", *EVIDENCE_COLUMNS], report
        assert len(book["Ranking"]._images) == 3 * 5, report  # thumbnail, overlay and three look-alikes
        assert all(isinstance(m, int) for m in column(report, "Ranking", MEDIAN))


def test_comparison_names_the_best_supported_way_only_when_the_paired_intervals_say_so() -> None:
    from scorer.training.compare import Way, compare

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    totals = y * 1000 + rng.integers(0, 900, 200)
    good = Way("good", y.copy(), totals + rng.normal(0, 50, 200))
    noisy = Way("noisy", np.where(rng.random(200) < 0.5, y, (y + 1) % 3), rng.normal(0, 1, 200))
    base = Way("always 1", np.ones(200, int), None)
    clear = compare([noisy, good, base], y, totals, 500, 0)
    assert clear.best == "good" and clear.verdict.startswith("good: its accuracy beats every other way's")
    assert clear.accuracy["good"].value == 1.0 and clear.spearman["always 1"].value is None
    assert clear.spearman["good"].value is not None and clear.spearman["good"].value > 0.9
    twin = Way("twin", y.copy(), rng.normal(0, 1, 200))
    tie = compare([twin, good, base], y, totals, 500, 0)
    assert tie.best == "good"
    assert tie.verdict.startswith("none clearly: good ties twin on accuracy and ranks posts better")
    assert tie.lines()["Best supported"] == tie.verdict
