"""Context at scoring time: sidecars and plan.csv in `scorer score` and a real `scorer watch`, advice in the report.

The model is the "hour carries the signal" account's (conftest.py): its card made the combined
model the default, so a creative with a planned time gets the posting-time advice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.context.combined import context_path
from tests.support.contextgen import Account
from tests.support.imagegen import CLASS_COLOURS, write_creative

pytestmark = pytest.mark.slow

PLANNED = "posted_at: 2026-12-03 18:00\nNew colours for spring #spring @anna\n"


def _rows(report: Path, sheet: str) -> dict[str, dict[str, object]]:
    rows = list(load_workbook(report)[sheet].iter_rows(values_only=True))
    header = rows[0]
    return {str(row[0] if sheet != "Ranking" else row[1]): dict(zip(header, row, strict=True)) for row in rows[1:]}


def _project(account: Account, root: Path, extra: str = "") -> Path:
    """A project that scores with the account's model, its own state folder and outbox."""
    root.mkdir(parents=True)
    config = root / "config.yaml"
    model = account.model
    config.write_text(f"model: {model}\nstate: {root / 'state'}\nthreads: 1\nreport:\n  explain: never\n{extra}",
                      encoding="utf-8")
    for name in ("inbox", "outbox"):
        (root / name).mkdir()
    return config


def _score(config: Path, folder: Path) -> Path:
    out = folder.with_name(folder.name + "-report")
    result = CliRunner().invoke(main, ["score", str(folder), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = out.glob("engagement-report-*.xlsx")
    return report


def test_a_creative_with_a_sidecar_gets_advice_and_without_one_an_image_only_note(hour_signal: Account,
                                                                                   tmp_path: Path) -> None:
    config = _project(hour_signal, tmp_path / "proj")
    with_plan, without = tmp_path / "with", tmp_path / "without"
    for folder in (with_plan, without):
        write_creative(folder / "banner.jpg", CLASS_COLOURS["High"], (32, 32), seed=7)
    (with_plan / "banner.txt").write_text(PLANNED, encoding="utf-8")
    write_creative(with_plan / "morning.jpg", CLASS_COLOURS["High"], (32, 32), seed=8)
    (with_plan / "morning.json").write_text(json.dumps({"posted_at": "2026-12-03T10:00",
                                                               "caption": PLANNED.splitlines()[1]}))

    rows = _rows(_score(config, with_plan), "Ranking")
    assert set(rows) == {"banner.jpg", "morning.jpg"}, "sidecars are never scored as images"
    banner = rows["banner.jpg"]
    assert banner["Planned time"] == "Thu 2026-12-03 18:00 (UTC)"
    best = str(banner["Best times (coming week)"]).split(", ")
    assert len(best) == 3 and all(" 18:00 (" in slot for slot in best), best  # the hour that carries the signal
    assert float(str(best[0]).split("(")[1].rstrip(")")) >= float(str(banner["Score at planned time"]))
    # The model learnt that 18:00 doubles the likes: the planned 18:00 post scores above the 10:00 one.
    assert banner["Score at planned time"] > rows["morning.jpg"]["Score at planned time"] + 10
    assert not banner["Notes"]

    (plain,) = _rows(_score(config, without), "Ranking").values()
    assert "Planned time" not in plain, "no advice columns when no creative has a plan"
    assert plain["Engagement score"] == banner["Engagement score"], "the image score is the same either way"
    assert str(plain["Notes"]).startswith("image-only: no planned time (add a sidecar")


def test_a_sidecar_with_a_malformed_time_is_rejected_and_its_creative_scored_image_only(hour_signal: Account,
                                                                                        tmp_path: Path) -> None:
    config = _project(hour_signal, tmp_path / "proj")
    folder = tmp_path / "in"
    write_creative(folder / "sale.jpg", CLASS_COLOURS["Low"], (32, 32), seed=3)
    (folder / "sale.txt").write_text("posted_at: next friday 6pm\nBig sale\n", encoding="utf-8")
    report = _score(config, folder)
    reason = _rows(report, "Rejected")["sale.txt"]["Reason"]
    assert reason == ("sale.txt: the time 'next friday 6pm' is not a date and time: write it as 2026-12-03 18:00 "
                      "(taken in context.timezone, UTC) or 2026-12-03T18:00+01:00")
    sale = _rows(report, "Ranking")["sale.jpg"]
    assert sale["Notes"] == "image-only: its sidecar sale.txt was rejected (see the Rejected sheet)"
    assert 0 <= float(str(sale["Engagement score"])) <= 100


def test_when_the_card_kept_image_only_a_plan_gets_a_note_not_advice(hour_noise: Account, tmp_path: Path) -> None:
    config = _project(hour_noise, tmp_path / "proj")
    folder = tmp_path / "in"
    write_creative(folder / "banner.jpg", CLASS_COLOURS["High"], (32, 32), seed=7)
    (folder / "banner.txt").write_text(PLANNED, encoding="utf-8")
    report = _score(config, folder)
    (row,) = _rows(report, "Ranking").values()
    assert "Planned time" not in row
    assert str(row["Notes"]).startswith("image-only: the model card kept image-only: posting time and caption do "
                                        "not measurably help")
    model_sheet = dict(load_workbook(report)["Model"].iter_rows(min_row=2, values_only=True))
    assert str(model_sheet["Posting time and caption"]).startswith("image-only: the model card kept image-only")


def test_scorer_watch_archives_each_sidecar_beside_its_creative(hour_signal: Account, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    config = _project(hour_signal, root, "watch:\n  settle_seconds: 0.3\n  rescan_seconds: 1\n")
    inbox = root / "inbox"
    for name in ("a", "b", "c"):
        write_creative(inbox / f"{name}.jpg", CLASS_COLOURS["Neutral"], (32, 32), seed=ord(name))
    (inbox / "a.txt").write_text(PLANNED, encoding="utf-8")
    (inbox / "b.json").write_text('{"posted_at": "tomorrow", "caption": "x"}', encoding="utf-8")
    (inbox / "plan.csv").write_text("file,posted_at,caption\nc.jpg,2026-12-04 18:00,from the plan\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(config)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (day,) = (root / "outbox" / "scored").iterdir()
    assert sorted(p.name for p in day.iterdir()) == ["a.jpg", "a.txt", "b.jpg", "c.jpg"]
    assert (day / "a.txt").read_text(encoding="utf-8") == PLANNED, "the sidecar is archived whole"
    rejected = root / "outbox" / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == ["b.json", "b.json.reason.txt"]
    assert sorted(p.name for p in inbox.iterdir()) == ["plan.csv"], "the plan stays for the creatives to come"
    (report,) = (root / "outbox").glob("engagement-report-*.xlsx")
    ranking = _rows(report, "Ranking")
    assert ranking["a.jpg"]["Planned time"] == "Thu 2026-12-03 18:00 (UTC)"
    assert ranking["c.jpg"]["Planned time"] == "Fri 2026-12-04 18:00 (UTC)"
    assert ranking["b.jpg"]["Planned time"] is None
    assert ranking["b.jpg"]["Notes"] == "image-only: its sidecar b.json was rejected (see the Rejected sheet)"
    assert "b.json: the time 'tomorrow' is not a date and time" in str(_rows(report, "Rejected")["b.json"]["Reason"])
    # latest.xlsx is rendered from the ledger: the advice survived it.
    latest = _rows(root / "outbox" / "latest.xlsx", "Ranking")
    assert latest["a.jpg"]["Best times (coming week)"] == ranking["a.jpg"]["Best times (coming week)"]


def test_a_tampered_combined_model_is_refused_with_the_fix(hour_signal: Account, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    copy.mkdir()
    for path in (hour_signal.model, context_path(hour_signal.model)):
        shutil.copy(path, copy / path.name)
    os.chmod(copy / hour_signal.model.name, 0o644)
    account = Account(hour_signal.config, copy / hour_signal.model.name, hour_signal.card)
    config = _project(account, tmp_path / "proj")
    folder = tmp_path / "in"
    write_creative(folder / "x.jpg", CLASS_COLOURS["Low"], (32, 32))
    _score(config, folder)  # first use pins it
    saved = context_path(account.model)
    saved.write_text(saved.read_text(encoding="utf-8").replace('"use": true', '"use": false'), encoding="utf-8")
    result = CliRunner().invoke(main, ["score", str(folder), "--config", str(config)])
    assert result.exit_code == 2
    assert "combined model" in result.output and "has changed since it was pinned" in result.output
    assert "train again with `scorer train`" in result.output
