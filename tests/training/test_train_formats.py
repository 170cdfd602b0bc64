"""`scorer train` on downloads with Reels: the card's formats, labels per format where videos engage differently,
video posts trained on their frames (or their cover) and judged as scoring would judge them.

Two generated Instaloader downloads (tests/support/contextgen.py): one whose Reels get three times the likes +
comments of its pictures, one whose Reels get as many; 72 posts each, 24 of them Reels (4 with their cover alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scorer.config import load_settings
from scorer.decoding.video import decode_video, video_probabilities
from scorer.decoding.video_probe import VideoLimits
from scorer.results import engagement_score
from scorer.training.formats import groups_of
from scorer.training.frames import training_geometry
from scorer.training.index import scoring_classifier
from scorer.training.labels import label
from scorer.training.prepare import prepare
from tests.support.contextgen import VIDEO_CONFIG, Account, train_account, write_video_account


@pytest.fixture(scope="module")
def reels_engage_more(tmp_path_factory: pytest.TempPathFactory) -> Account:
    root = tmp_path_factory.mktemp("reels-more")
    return train_account(root, write_video_account(root / "shop", video_ratio=3.0), VIDEO_CONFIG)


@pytest.fixture(scope="module")
def reels_engage_alike(tmp_path_factory: pytest.TempPathFactory) -> Account:
    root = tmp_path_factory.mktemp("reels-alike")
    return train_account(root, write_video_account(root / "shop", video_ratio=1.0, seed=1), VIDEO_CONFIG)


def _prepared(account: Account) -> pd.DataFrame:
    return prepare(load_settings(account.config), Path(account.card["data"]["source"])).table


def _page(account: Account) -> str:
    return account.model.with_name(account.card["files"]["page"]).read_text(encoding="utf-8")


def _high_share(table: pd.DataFrame) -> dict[str, float]:
    return {str(g): float((table["label"][groups_of(table["format"]) == g] == "High").mean())
            for g in ("image", "video")}


@pytest.mark.slow
def test_reels_that_engage_more_are_reported_and_labelled_per_format(reels_engage_more: Account) -> None:
    card = reels_engage_more.card
    engagement = card["formats"]["engagement"]
    assert engagement["differ"] is True and (engagement["videos"], engagement["images"]) == (24, 48)
    ratio = engagement["ratio_of_medians"]
    assert 1 < ratio["low"] <= ratio["value"] <= ratio["high"] and 2 < ratio["value"] < 4
    assert engagement["verdict"].endswith("they engage differently, so each format is labelled on its own")
    assert card["labelling"]["by_format"] is True and card["labelling"]["how"].startswith("each format's own quantiles")
    table = _prepared(reels_engage_more)
    # Each group's own quantiles: half of its posts High, as the two classes of `method: quantiles` would be.
    for group, share in _high_share(table).items():
        assert abs(share - 0.5) <= 1 / (groups_of(table["format"]) == group).sum(), (group, share)
    assert _high_share(label(table.drop(columns=["label"]), load_settings(reels_engage_more.config).train.label))[
        "video"] > 0.9, "labelled together, nearly every Reel would be High: a label that only says 'a video'"
    assert card["headline"]["Video against image engagement"] == engagement["verdict"]
    assert f"**Video against image engagement: {engagement['verdict']}: each format's own quantiles" in _page(
        reels_engage_more)


@pytest.mark.slow
def test_reels_that_engage_alike_are_labelled_together(reels_engage_alike: Account) -> None:
    card = reels_engage_alike.card
    engagement = card["formats"]["engagement"]
    ratio = engagement["ratio_of_medians"]
    assert engagement["differ"] is False and ratio["low"] <= 1 <= ratio["high"]
    assert engagement["verdict"].endswith("no clear difference (the interval includes 1), so all posts are "
                                          "labelled together")
    assert card["labelling"] == {**card["labelling"], "by_format": False} and "how" not in card["labelling"]
    table = _prepared(reels_engage_alike)
    settings = load_settings(reels_engage_alike.config).train.label
    together = label(table.drop(columns=["label"]), settings).sort_index()
    assert list(together["label"]) == list(table["label"]), "one set of quantiles over every post"
    assert f"**Video against image engagement: {engagement['verdict']}.**" in _page(reels_engage_alike)


@pytest.mark.slow
def test_the_card_counts_formats_and_says_what_each_video_post_trained_on(reels_engage_more: Account) -> None:
    formats, data = reels_engage_more.card["formats"], Path(reels_engage_more.card["data"]["source"])
    assert {fmt: n["train"] + n["valid"] for fmt, n in formats["counts"].items()} == {
        "image": 40, "video": 24, "carousel": 8}
    assert sum(n["valid"] for n in formats["counts"].values()) == reels_engage_more.card["data"]["valid"]
    with_video = {f"{p.name.removesuffix('.mp4')}.json.xz" for p in data.glob("*.mp4")}
    assert len(with_video) == 20 and set(formats["frames"]) == with_video
    assert len(formats["cover"]) == 4 and not {c["source"] for c in formats["cover"]} & with_video
    assert {c["why"] for c in formats["cover"]} == {"only its cover was given (no video beside it)"}
    page = _page(reels_engage_more)
    assert "Video posts trained on their frames: 20; on their cover only: 4." in page
    cover = formats["cover"][0]["source"]
    assert f"| {cover} | its cover only: only its cover was given (no video beside it) |" in page
    assert reels_engage_more.card["headline"]["Formats"] == (
        "40 images, 24 videos (20 trained on their frames, 4 on their cover only), 8 carousels")


@pytest.mark.slow
def test_held_out_reels_are_judged_on_their_frames_as_scoring_scores_them(reels_engage_more: Account) -> None:
    settings = load_settings(reels_engage_more.config)
    card = reels_engage_more.card
    predictions = pd.read_csv(reels_engage_more.model.with_name(card["files"]["predictions"]))
    classifier = scoring_classifier(settings, reels_engage_more.model, card["model"]["sha256"])
    assert classifier.geometry == training_geometry(settings.train), "trained on the frames scoring will give it"
    reels = predictions[predictions["trained on"] == "frames"]
    assert len(reels) >= 3, "some held-out Reels trained on their frames"
    data = Path(card["data"]["source"])
    index = pd.read_parquet(reels_engage_more.model.with_name(card["index"]["file"])).set_index("source")
    for _, row in reels.iterrows():
        video = decode_video(data / row["source"].replace(".json.xz", ".mp4"), classifier.geometry,
                             VideoLimits.from_settings(settings.video), 0)
        assert video.pixels is not None and len(video.pixels) == 4 and sum(video.in_hook) == 2
        frames, _ = classifier.predict_with_embedding(video.pixels)
        scored = video_probabilities(frames, video.in_hook, settings.video.hook_weight)
        assert np.allclose(row[["P(Low)", "P(High)"]].to_numpy(dtype=float), scored, atol=1e-4), row["source"]
        assert index.loc[row["source"], "score"] == pytest.approx(engagement_score(scored), abs=1e-3), "the index too"
    assert set(predictions["trained on"]) == {"frames", "cover", "picture"}


@pytest.mark.slow
def test_accuracy_against_the_baseline_is_reported_per_format(reels_engage_more: Account) -> None:
    card = reels_engage_more.card
    predictions = pd.read_csv(reels_engage_more.model.with_name(card["files"]["predictions"]))
    table = _prepared(reels_engage_more)
    for fmt, figures in card["formats"]["accuracy"].items():
        held = predictions[predictions["format"] == fmt]
        taught = table[(table["format"] == fmt) & ~table["is_valid"]]["label"].value_counts()
        assert figures["posts"] == len(held) > 0
        assert figures["accuracy"]["value"] == pytest.approx((held["true"] == held["predicted"]).mean())
        assert figures["majority_class"] == taught.idxmax()
        assert figures["baseline"]["value"] == pytest.approx((held["true"] == taught.idxmax()).mean())
        assert card["headline"][f"Accuracy, {fmt} posts"].endswith(
            f"for always {figures['majority_class']} ({len(held)} held out)")
    assert set(card["formats"]["accuracy"]) == set(predictions["format"]) == {"image", "video", "carousel"}
