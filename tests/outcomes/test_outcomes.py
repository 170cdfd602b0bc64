"""`scorer outcomes`: creatives scored by a real `scorer watch`, posted through Instagram-like transforms."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import imagehash
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from scorer.cli import main
from scorer.config import load_settings
from scorer.decoding.prints import phash_bits
from scorer.ledger.schema import LAUNCH_COLUMNS
from scorer.ledger.store import Ledger
from scorer.outcomes.run import _posts, run_outcomes
from tests.support.helpers import after_first_start
from tests.support.history import unrelated_to
from tests.support.outcomegen import as_posted, write_banner
from tests.support.postgen import post_node, save_post, write_malformed, write_rows
from tests.support.receivers import JsonReceiver, wait_for
from tests.support.workbooks import column

SCORED, POSTED, NEVER, EARLY = 48, 40, 60, 2
NO_CAM = "report:\n  explain: never\n"
DAY = 86400.0


@dataclass
class Account:
    """A project whose creatives `scorer watch` scored, and what the ledger says of each."""

    root: Path
    scores: dict[str, float]  # creative file name -> predicted Engagement score
    scored_at: dict[str, float]
    archived: dict[str, Path]

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, tiny_learner: Path, first_start: Path) -> Account:
    """SCORED varied creatives, scored by `scorer watch --once` and archived by it."""
    root = tmp_path_factory.mktemp("outcomes") / "proj"
    for name in ("inbox", "outbox", "models"):
        (root / name).mkdir(parents=True)
    shutil.copy(tiny_learner, root / "models" / "tiny.pkl")
    after_first_start(first_start, root)  # no Grad-CAM: the service opens the export alone
    (root / "config.yaml").write_text(f"model: models/tiny.pkl\n{NO_CAM}", encoding="utf-8")
    for n in range(SCORED):
        write_banner(root / "inbox" / f"creative-{n:02}.jpg", n)
    done = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(root / "config.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ledger = Ledger(root / "state")
    try:
        creatives = ledger.launches.creatives()
    finally:
        ledger.close()
    assert len(creatives) == SCORED
    assert all(k is not None and k.embedding is not None for _, _, k in creatives), "likenesses not kept"
    return Account(root, {s.name: s.score for s, _, _ in creatives}, {s.name: s.scored_at for s, _, _ in creatives},
                   {s.name: Path(s.location) for s, _, _ in creatives})


def copy_of(account: Account, dest: Path) -> Account:
    """A private copy of the scored project, so each test has its own ledger."""
    shutil.copytree(account.root, dest)
    return Account(dest, account.scores, account.scored_at, account.archived)


def posted_names(account: Account) -> list[str]:
    return sorted(account.scores)[:POSTED]


def write_account(account: Account, data: Path, likes_for: dict[str, int]) -> Path:
    """Post POSTED creatives (the first EARLY dated before they were scored) among NEVER never-scored posts."""
    rows = []
    for n, name in enumerate(posted_names(account)):
        as_posted(account.archived[name], data / f"post-{n:02}.jpg", seed=n)
        when = account.scored_at[name] + (-DAY if n < EARLY else DAY * (1 + n % 5))
        rows.append({"file": f"post-{n:02}.jpg", "likes": likes_for[name], "comments": likes_for[name] // 100,
                     "posted_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when))})
    rng = np.random.default_rng(7)
    for n in range(NEVER):
        write_banner(data / "never" / f"never-{n:02}.jpg", 5000 + n)
        as_posted(data / "never" / f"never-{n:02}.jpg", data / f"other-{n:02}.jpg", seed=100 + n)
        likes = int(rng.integers(4000, 14000))
        rows.append({"file": f"other-{n:02}.jpg", "likes": likes, "comments": likes // 100,
                     "posted_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3 * DAY))})
    shutil.rmtree(data / "never")
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    rows.append({"file": "broken.jpg", "likes": 5000, "comments": 50, "posted_at": rows[-1]["posted_at"]})
    return write_rows(data / "posts.csv", rows)


def following(account: Account) -> dict[str, int]:
    """Likes that follow the model's predicted score, with a little noise."""
    rng = np.random.default_rng(3)
    return {name: int(4000 + 100 * score + rng.integers(0, 300)) for name, score in account.scores.items()}


def unrelated(account: Account) -> dict[str, int]:
    """The same likes shuffled until they say nothing of the predicted score, on the counted posts."""
    names = posted_names(account)[EARLY:]
    likes = following(account)
    shuffled = unrelated_to([account.scores[n] for n in names], [likes[n] for n in names])
    return {**likes, **dict(zip(names, shuffled, strict=True))}


def outcomes_rows(root: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(root / "state" / "ledger.sqlite") as db:
        return db.execute("SELECT post, creative, similarity, posted_at, likes, comments, value, label "
                          "FROM outcomes ORDER BY post").fetchall()


LATER = 30 * DAY  # the run happens a month after the posts, so every forward post is mature


@pytest.mark.slow
def test_matches_posts_through_instagram_transforms(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    # creatives scored before likenesses were kept: computed on first need from the archived file
    with sqlite3.connect(account.root / "state" / "ledger.sqlite") as db:
        db.execute("DELETE FROM likeness WHERE rowid IN (SELECT rowid FROM likeness LIMIT 6)")
    data = write_account(account, tmp_path / "shop", following(account))
    run = run_outcomes(load_settings(account.config), data, now=time.time() + LATER)
    rec = run.track
    truth = {f"post-{n:02}.jpg": name for n, name in enumerate(posted_names(account))}
    right = [k for k in rec.launches if truth.get(k.post) == k.creative.name]
    false = [k.post for k in rec.launches if k.post.startswith("other-")]
    assert len(right) >= 0.95 * POSTED, [(k.post, k.creative.name) for k in rec.launches]
    assert len(false) < 0.01 * NEVER, false
    assert rec.matched == len(rec.launches) and rec.unmatched_posts == POSTED + NEVER - rec.matched
    assert rec.early == EARLY and rec.mature == rec.matched - EARLY
    assert rec.not_posted == SCORED - rec.matched
    assert [b.source for b in run.unreadable] == ["posts.csv line 102"]
    assert rec.spearman.low is not None and rec.spearman.low > 0
    assert rec.verdict.startswith("the ranking agrees with what happened (Spearman ")
    assert rec.lift.value is not None and rec.lift.value > 1

    # the same download again changes nothing
    before = outcomes_rows(account.root)
    again = run_outcomes(load_settings(account.config), data, now=time.time() + LATER).track
    assert outcomes_rows(account.root) == before
    assert (again.matched, again.mature, again.verdict) == (rec.matched, rec.mature, rec.verdict)

    # a later download with grown likes: new values, the same counts
    grown = {k: v * 3 // 2 for k, v in following(account).items()}
    later = write_account(account, tmp_path / "later", grown)
    third = run_outcomes(load_settings(account.config), later, now=time.time() + LATER).track
    after = outcomes_rows(account.root)
    assert len(after) == len(before) and (third.matched, third.mature) == (rec.matched, rec.mature)
    assert [r[4] for r in after] != [r[4] for r in before]


@pytest.mark.slow
def test_unrelated_likes_are_no_better_than_a_guess(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    data = write_account(account, tmp_path / "shop", unrelated(account))
    rec = run_outcomes(load_settings(account.config), data, now=time.time() + LATER).track
    assert rec.mature >= 20
    assert rec.spearman.low is not None and rec.spearman.high is not None
    assert rec.spearman.low <= 0 <= rec.spearman.high
    assert rec.verdict == ("no better than a guess on launched creatives: retrain with `scorer train` "
                           "or stop relying on it")

    # the service says so once, in its log and in one notification, and every new batch report says so in its
    # Model sheet's first rows
    receiver = JsonReceiver()
    account.config.write_text(f"model: models/tiny.pkl\n{NO_CAM}watch:\n  max_batch: 1\n"
                              f"notify:\n  urls: [{receiver.url}]\n", encoding="utf-8")
    for n in range(2):
        write_banner(account.root / "inbox" / f"new-{n}.jpg", 900 + n)
    try:
        done = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(account.config)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(f"the track record of model {rec.model_sha256[:12]}") == 1, done.stderr
        wait_for(lambda: len(receiver.bodies) == 3, "two batch messages and one track-record message")
    finally:
        receiver.close()
    guesses = [b for b in receiver.bodies if "no better than a guess" in b["title"]]
    assert len(guesses) == 1 and rec.model_sha256[:12] in guesses[0]["message"]
    reports = sorted((account.root / "outbox").glob("engagement-report-*.xlsx"))
    fresh = [p for p in reports if column(p, "Ranking")[:1] in (["new-0.jpg"], ["new-1.jpg"])]
    assert len(fresh) == 2, "one new creative per batch"
    for report in fresh:
        assert column(report, "Model", "Item")[0] == "Warning"
        assert column(report, "Model", "Value")[0] == f"Track record: {rec.verdict}"


@pytest.mark.slow
def test_command_writes_json_and_counts_only_mature_posts(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    card_path = account.root / "models" / "tiny.card.json"  # as `scorer train` leaves one beside the model
    trained = {"verdict": "better than always answering Neutral", "headline": {"Accuracy": "80% (95% CI 60% to 95%)"}}
    card_path.write_text(json.dumps(trained), encoding="utf-8")
    data = write_account(account, tmp_path / "shop", following(account))
    result = CliRunner().invoke(main, ["outcomes", str(data), "--config", str(account.config),
                                       "--json", str(tmp_path / "record.json")])
    assert result.exit_code == 0, result.output
    assert "skipped posts.csv line 102: image broken.jpg" in result.output
    record = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    for key in ("model_sha256", "matched", "mature", "not_posted", "unmatched_posts", "verdict", "pairs"):
        assert key in record
    for key in ("spearman", "accuracy", "baseline_accuracy", "lift"):
        assert set(record[key]) == {"value", "low", "high"}
    assert set(record["pairs"][0]) >= {"post", "creative", "creative_sha256", "similarity", "posted_at", "scored_at",
                                       "predicted_class", "predicted_score", "total"}
    # posted a day or more after scoring: none is a week old yet
    assert record["mature"] == 0 and record["verdict"] == "too few launched creatives yet (0 of 20)"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    kept = {key: value for key, value in record.items() if key != "pairs"}
    assert card == {**trained, "track_record": kept}, "the card keeps the record beside what training wrote"


def test_perceptual_hash_is_imagehash_phash(tmp_path: Path) -> None:
    for n in range(6):
        with Image.open(write_banner(tmp_path / f"{n}.jpg", n)) as im:
            assert np.array_equal(phash_bits(im), imagehash.phash(im, 16).hash.ravel())


def stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when))


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def old_row(root: Path, post: str, post_sha: str, creative: Path) -> None:
    """A launch as an older version kept it, keyed by the post's base name."""
    with sqlite3.connect(root / "state" / "ledger.sqlite") as db:
        model = db.execute("SELECT DISTINCT json_extract(model, '$.sha256') FROM batches").fetchone()[0]
        db.execute(f"INSERT INTO outcomes ({LAUNCH_COLUMNS}) VALUES (?, ?, ?, ?, 0.9, 0, 5000, 50, 5050, 'Low', NULL, "
                   "NULL)",
                   (post, post_sha, sha_of(creative), model))


@pytest.mark.slow
def test_posts_are_keyed_by_their_path_never_their_base_name(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    names = posted_names(account)
    pool = tmp_path / "pool"  # posts.csv names its images by their whole path, outside the download
    for n, month in enumerate(("jan", "feb", "mar")):
        as_posted(account.archived[names[n]], pool / month / "post.jpg", seed=n)

    def download(folder: str, months: dict[str, int]) -> Path:
        (tmp_path / folder).mkdir()
        return write_rows(tmp_path / folder / "posts.csv", [
            {"file": str(pool / month / "post.jpg"), "likes": 5000 + n, "comments": 50,
             "posted_at": stamp(account.scored_at[names[n]] + DAY)} for month, n in months.items()]).parent

    # an older version kept jan's post as post.jpg (paired then with another creative): it is that post, updated
    old_row(account.root, "post.jpg", sha_of(pool / "jan" / "post.jpg"), account.archived[names[3]])
    run_outcomes(load_settings(account.config), download("shop", {"jan": 0, "feb": 1}), now=time.time() + LATER)
    assert [r[:2] for r in outcomes_rows(account.root)] == [
        (str(pool / "feb" / "post.jpg"), sha_of(account.archived[names[1]])),
        (str(pool / "jan" / "post.jpg"), sha_of(account.archived[names[0]]))]

    # a later download of another post of the same base name leaves the first two alone, and so is a row of
    # another picture under that base name
    old_row(account.root, "post.jpg", sha_of(account.archived[names[4]]), account.archived[names[4]])
    run_outcomes(load_settings(account.config), download("later", {"mar": 2}), now=time.time() + LATER)
    assert [r[0] for r in outcomes_rows(account.root)] == [
        *(str(pool / month / "post.jpg") for month in ("feb", "jan", "mar")), "post.jpg"]


@pytest.mark.slow
def test_a_date_without_a_time_is_the_end_of_that_day_in_the_account_zone(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    zone = "Pacific/Pago_Pago"  # UTC-11: midnight UTC of a local day is always before anything scored that day
    account.config.write_text(f"model: models/tiny.pkl\n{NO_CAM}context:\n  timezone: {zone}\n", encoding="utf-8")
    names, data = posted_names(account)[:2], tmp_path / "shop"
    days = []
    for n, name in enumerate(names):
        as_posted(account.archived[name], data / f"post-{n}.jpg", seed=n)
        scored_day = datetime.fromtimestamp(account.scored_at[name], ZoneInfo(zone)).date()
        days.append(scored_day - timedelta(days=n))  # the first posted the day it was scored, the second the day before
    write_rows(data / "posts.csv", [{"file": f"post-{n}.jpg", "likes": 5000, "comments": 50,
                                     "posted_at": day.isoformat()} for n, day in enumerate(days)])
    record = run_outcomes(load_settings(account.config), data, now=time.time() + LATER).track
    assert (record.matched, record.early) == (2, 1)
    ends = [datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(zone)).timestamp() - 1
            for day in days]
    launches = sorted(record.launches, key=lambda k: k.post)
    assert [(k.post, k.posted_at, k.counted(record.settled)) for k in launches] == [
        ("post-0.jpg", ends[0], True), ("post-1.jpg", ends[1], False)]


@pytest.mark.slow
def test_malformed_metadata_costs_its_post_alone(scored: Account, tmp_path: Path) -> None:
    account = copy_of(scored, tmp_path / "proj")
    data = tmp_path / "shop"
    good = posted_names(account)[:6]
    for n, name in enumerate(good):
        as_posted(account.archived[name], tmp_path / "posted" / f"{n}.jpg", seed=n)
        taken = datetime.fromtimestamp(account.scored_at[name] + DAY * (1 + n), timezone.utc)
        save_post(data, post_node(f"G{n}", taken, 5000 + 100 * n, 50), [tmp_path / "posted" / f"{n}.jpg"])
    reasons = write_malformed(data, post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "x"), copies=2)
    result = CliRunner().invoke(main, ["outcomes", str(data), "--config", str(account.config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, reason in reasons.items():
        assert lines.count(f"  skipped {name}: {reason}") == 1, (name, result.output)
    assert f"{len(good)} posts matched in this download" in result.output


def test_outcomes_on_nothing_usable_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("model: models/none.pkl\nstate: state\n", encoding="utf-8")
    write_malformed(tmp_path / "shop", post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "x"))
    done = subprocess.run([sys.executable, "-m", "scorer", "outcomes", "shop", "--config", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.splitlines() == ["error: shop has no usable post: see the reasons listed, and download the "
                                        "profile again"], done.stderr


@pytest.mark.parametrize("differ", [True, False])
def test_launched_posts_are_labelled_as_the_models_card_labelled_its_own(tmp_path: Path, differ: bool) -> None:
    # a card whose video posts engaged at 3x its images: its thresholds, 7000 and 11000, stand at 21000 and 33000
    # for videos; where its videos engaged alike, every launch is labelled on the same thresholds
    folder = tmp_path / "download"
    for n in range(2):
        write_banner(folder / f"p{n}.jpg", n)
    write_rows(folder / "posts.csv", [{"file": "p0.jpg", "likes": 15000, "comments": 150, "format": "image"},
                                      {"file": "p1.jpg", "likes": 25000, "comments": 250, "format": "video"}])
    settings = load_settings(None, model=tmp_path / "models" / "m.pkl")
    card = {"formats": {"engagement": {"videos": 30, "images": 40, "differ": differ,
                                       "ratio_of_medians": {"value": 3.0, "low": 2.5, "high": 3.5}}}}
    settings.model.parent.mkdir()
    settings.model.with_suffix(".card.json").write_text(json.dumps(card))
    table, bad = _posts(settings, folder)
    assert bad == []
    assert dict(zip(table["format"], table["label"], strict=True)) == {
        "image": "High", "video": "Neutral" if differ else "High"}
