"""The report on paper and on screen: A4 pages a marketer can read, wrapped Model lines, the demo said, look-alikes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import load_workbook
from openpyxl.utils import column_index_from_string
from openpyxl.worksheet.worksheet import Worksheet

from scorer.report.evidence_columns import LOOKS_LIKE
from scorer.report.workbook import ReportContent, save_report
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected
from tests.support.workbooks import evidenced, lines_needed, printed_scale

CLASSES = ("Low", "Neutral", "High")
EMU_PER_PT = 12700
# The Model sheet's decoding line as the demo's model gets it, some 600 characters.
SCALE = "mean |Δp| 0.0006, max 0.0013, 0 top-1 flips on 2 images, decoding 2.0× faster"
DECODE = ("auto: full-size decoding while the first creatives are checked (0 of 16), then JPEG draft decoding down to "
          "1/8 if the figures hold. Draft vs full decode: " + "; ".join(f"1/{s}: {SCALE}" for s in (2, 4, 8))
          + " (6 calibration images, 0 creatives). A scale needs mean |Δp| ≤ 0.002 and no flips")
CARD = {"verdict": "better than always answering Neutral: accuracy 90% (95% CI 81% to 98%) vs 36%",
        "Majority baseline (always Neutral)": "accuracy 36% (95% CI 21% to 50%), Spearman n/a",
        "kNN estimate (3 nearest posts)": "accuracy 90% (95% CI 81% to 98%), Spearman 0.80 (95% CI 0.63 to 0.88)"}


def _info(path: Path = Path("/models/m.pkl")) -> ModelInfo:
    return ModelInfo(path, "ab" * 32, CLASSES, "cpu", "onnxruntime-1.0", "crop to 224×224",
                     {"fastai": "2.8.12", "torch": "2.14.1"}, CARD, decode=DECODE,
                     evidence="models/m.index.parquet: 168 past posts", explain="Grad-CAM for the predicted class")


def _report(tmp_path: Path, info: ModelInfo | None = None, count: int = 12) -> Path:
    scored = [evidenced(f"creative-{n:02}.jpg", (0.1, 0.2 + n / 100, 0.7 - n / 100)) for n in range(count)]
    original = scored[0]
    result = BatchResult(scored, [Rejected("broken.jpg", "/in/broken.jpg", "file is incomplete or corrupt")],
                         [Duplicate("again.jpg", "/in/again.jpg", original)])
    return save_report(tmp_path / "r.xlsx", ReportContent(result, info or _info()))


def _common_page(ws: Worksheet) -> None:
    """What every sheet prints with: A4, page numbers, the file and sheet named, margins, gridlines."""
    setup = ws.page_setup
    assert int(setup.paperSize) == int(ws.PAPERSIZE_A4) and ws.sheet_properties.pageSetUpPr.fitToPage, ws.title
    assert setup.fitToHeight == 0, "as many pages long as it takes"
    assert "&P" in ws.oddFooter.center.text and "&N" in ws.oddFooter.center.text, ws.title
    assert ws.oddHeader.left.text and ws.oddHeader.right.text, "the file and the sheet are named on each page"
    assert 0.3 <= ws.page_margins.left <= 0.8 and 0.3 <= ws.page_margins.top <= 1.0
    assert ws.print_options.gridLines


def test_ranking_prints_on_a_few_legible_a4_landscape_pages_repeating_header_and_name(tmp_path: Path) -> None:
    book = load_workbook(_report(tmp_path))
    ws = book["Ranking"]
    assert ws.max_column == 23
    _common_page(ws)
    assert ws.page_setup.orientation == "landscape" and ws.page_setup.fitToWidth in (2, 3)
    assert ws.page_setup.pageOrder == "downThenOver", "the key columns are printed first, for every creative"
    assert ws.print_title_rows == "$1:$1" and ws.print_title_cols == "$A:$B"
    assert printed_scale(ws) >= 0.75, "legible: at most a quarter smaller than on screen"
    assert ws.freeze_panes == "C2", "on screen the name stays beside every column too"
    for name in ("Rejected", "Duplicates", "Model"):
        _common_page(book[name])
        assert book[name].page_setup.fitToWidth == 1 and printed_scale(book[name]) >= 0.75, name


def test_model_sheet_wraps_every_line_and_no_long_line_shrinks_the_page(tmp_path: Path) -> None:
    ws = load_workbook(_report(tmp_path))["Model"]
    widths = [ws.column_dimensions[letter].width for letter in "AB"]
    assert printed_scale(ws) >= 0.95 and ws.max_column == 2
    rows = list(ws.iter_rows(min_row=2))
    assert dict((a.value, b.value) for a, b in rows)["Decoding"] == DECODE
    for label, value in rows:
        assert label.alignment.wrap_text and value.alignment.wrap_text, label.value
        assert label.alignment.vertical == value.alignment.vertical == "top"
        needed = max(lines_needed(str(label.value), widths[0]), lines_needed(str(value.value), widths[1]))
        height = ws.row_dimensions[label.row].height or 15
        assert height >= 14 * needed, f"{label.value}: {needed} lines in {height} pt"
    assert widths[0] >= len("Model card: verdict"), "the usual labels fit on one line"


def _rows_fit_their_wrapped_text(ws: Worksheet) -> int:
    """Check that each row is as tall as its wrapped cells need; return how many cells wrapped onto several lines."""
    several = 0
    for row in ws.iter_rows(min_row=2):
        for c in row:
            if c.value is None or not c.alignment.wrap_text or c.coordinate in ws.merged_cells:
                continue
            needed = lines_needed(str(c.value), ws.column_dimensions[c.column_letter].width)
            several += needed > 1
            height = ws.row_dimensions[c.row].height or 15  # LibreOffice grows no row for wrapped text
            assert height >= 14 * needed, f"{ws.title}!{c.coordinate}: {needed} lines in {height} pt: {c.value}"
    return several


def test_every_row_is_as_tall_as_its_wrapped_names_reasons_and_paths(tmp_path: Path) -> None:
    from dataclasses import replace

    from scorer.settings import ReportSettings

    long = "spring-campaign-2026-final-version-approved-by-client-banner-hero-1080x1350-v3-FINAL.jpg"
    plain = [replace(evidenced(name, (0.2, 0.3, 0.5)), thumbnail=None, overlay=None, evidence=None,
                     notes="converted from CMYK; first frame of an animation")
             for name in (long, "short.jpg")]
    rejected = [Rejected(long, f"/srv/inbox/campaigns/spring/{long}", "GIF files are not accepted (accepted: JPEG, "
                         "PNG, WEBP): convert it, or add GIF to images.formats")]
    result = BatchResult(plain, rejected, [Duplicate(long, f"/srv/inbox/again/{long}", plain[1])])
    content = ReportContent(result, _info(), ReportSettings(thumbnails=False))
    book = load_workbook(save_report(tmp_path / "r.xlsx", content))
    assert sum(_rows_fit_their_wrapped_text(book[name]) for name in book.sheetnames) >= 8


def _demo_model(tmp_path: Path, trained_on: Path) -> ModelInfo:
    """A model at models/demo.pkl whose card says which posts trained it, as `scorer train` writes the card."""
    model = tmp_path / "models" / "demo.pkl"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"a learner")
    card = {"verdict": CARD["verdict"], "data": {"source": str(trained_on), "format": "posts.csv"}}
    model.with_suffix(".card.json").write_text(json.dumps(card), encoding="utf-8")
    return _info(model)


def test_a_workbook_of_the_demo_model_says_so_atop_the_ranking_and_on_the_model_sheet(tmp_path: Path) -> None:
    book = load_workbook(_report(tmp_path, _demo_model(tmp_path, tmp_path / "demo" / "posts")))
    ws = book["Ranking"]
    note = str(ws["A1"].value)
    assert note.startswith("Demo model:") and "synthetic" in note and "real creatives" in note
    assert ws["A1"].font.b and ws["A1"].alignment.wrap_text and "A1:B1" in ws.merged_cells
    assert [c.value for c in ws[2]][:2] == ["Rank", "File"] and ws["B3"].value == "creative-00.jpg"
    assert ws.print_title_rows == "$1:$2", "every printed page says it"
    assert ws.freeze_panes == "C3" and ws.auto_filter.ref.startswith("A2:")
    widths = ws.column_dimensions["A"].width + ws.column_dimensions["B"].width
    assert (ws.row_dimensions[1].height or 15) >= 14 * lines_needed(note, widths)
    model = list(book["Model"].iter_rows(min_row=2))
    assert model[0][0].value == "Demo model" and "synthetic" in str(model[0][1].value), "said first"
    assert model[0][1].font.b and model[1][0].value == "Model file"


def test_a_model_trained_on_the_account_at_the_demo_path_is_not_called_the_demo(tmp_path: Path) -> None:
    # models/demo.pkl is also where `scorer train` exports with the default config.yaml
    book = load_workbook(_report(tmp_path, _demo_model(tmp_path, tmp_path / "acme" / "posts")))
    assert book["Ranking"]["A1"].value == "Rank" and book["Ranking"].print_title_rows == "$1:$1"
    assert book["Model"]["A2"].value == "Model file"


def test_look_alike_captions_sit_on_their_own_picture_not_on_the_next_row(tmp_path: Path) -> None:
    ws = load_workbook(_report(tmp_path, count=3))["Ranking"]
    columns = {column_index_from_string(c.column_letter) - 1 for c in ws[1] if c.value in LOOKS_LIKE}
    pictures = [image for image in ws._images if image.anchor._from.col in columns]
    assert len(pictures) == 9
    for image in pictures:
        start = image.anchor._from
        caption = ws.cell(start.row + 1, start.col + 1)
        assert caption.value and caption.alignment.vertical == "top", "the date and likes head their picture"
        row_emu = ws.row_dimensions[start.row + 1].height * EMU_PER_PT
        caption_emu = 14 * EMU_PER_PT
        assert start.rowOff >= caption_emu, "the picture starts below its caption"
        assert start.rowOff - caption_emu <= 4 * EMU_PER_PT, "right below it"
        gap = row_emu - (start.rowOff + image.anchor.ext.cy)
        assert gap >= 8 * EMU_PER_PT, "a clear gap before the next row's caption"


@pytest.mark.parametrize("thumbnail_px", [48, 96, 160])
def test_rows_fit_the_thumbnail_and_the_look_alikes_whatever_the_thumbnail_size(tmp_path: Path,
                                                                                   thumbnail_px: int) -> None:
    from scorer.settings import ReportSettings

    scored = [evidenced("a.jpg", (0.1, 0.2, 0.7), thumbnail_px)]
    content = ReportContent(BatchResult(scored), _info(), ReportSettings(thumbnail_px=thumbnail_px))
    ws = load_workbook(save_report(tmp_path / "r.xlsx", content))["Ranking"]
    row_emu = ws.row_dimensions[2].height * EMU_PER_PT
    for image in ws._images:
        assert image.anchor._from.rowOff + image.anchor.ext.cy <= row_emu, "no picture reaches the next row"
