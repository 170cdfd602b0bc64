"""`scorer train` with context: the ablation in the card on two synthetic accounts, and the combined model's file.

"Hour carries the signal": posts at 18:00 get twice the likes whatever the picture, so the
combined model must beat image alone. "Hour is noise": the doubling is random, so the card
keeps image-only. The noise account comes as an Instaloader folder, the signal one as posts.csv
(fixtures in conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scorer.config import load_settings
from scorer.context.combined import context_path
from scorer.context.signals import caption_counts
from scorer.errors import ModelError
from scorer.model.integrity import verify_context
from tests.support.contextgen import Account

pytestmark = pytest.mark.slow


def _ways(card: dict) -> dict[str, dict]:
    return card["context"]["comparison"]["accuracy"]


def test_when_the_hour_carries_the_signal_the_card_makes_the_combined_model_the_default(hour_signal: Account) -> None:
    context = hour_signal.card["context"]
    gain = context["gain"]
    assert context["use"] is True
    assert gain["low"] > 0, gain
    ways = _ways(hour_signal.card)
    assert list(ways)[:3] == ["Image alone", "Context alone (time, caption)", "Image + context"]
    assert list(ways)[3].startswith("Majority baseline (always ")
    # Every way has an interval, and the combined one is well above image alone.
    assert all(w["low"] is not None and w["low"] <= w["value"] <= w["high"] for w in ways.values())
    assert ways["Image + context"]["value"] > ways["Image alone"]["value"] + 0.15
    assert context["verdict"].startswith("posting time and caption help")
    assert hour_signal.card["headline"]["Posting time and caption"].startswith("combined model in use")
    page = hour_signal.model.with_name("engagement.card.md").read_text(encoding="utf-8")
    assert "## Posting time and caption" in page and "Scoring uses the combined model." in page


def test_when_the_hour_is_noise_the_card_keeps_image_only(hour_noise: Account) -> None:
    context = hour_noise.card["context"]
    assert context["use"] is False
    assert context["gain"]["low"] <= 0
    assert context["verdict"].startswith("posting time and caption do not measurably help")
    assert len(_ways(hour_noise.card)) == 4
    page = hour_noise.model.with_name("engagement.card.md").read_text(encoding="utf-8")
    assert "Scoring stays image-only." in page
    # Instaloader's dates and captions were used with no extra work: the model knows the account's last post.
    saved = json.loads(context_path(hour_noise.model).read_text(encoding="utf-8"))
    assert saved["account"]["last_posted"].startswith("2024-11-")


def test_the_combined_model_is_pinned_and_a_tampered_one_is_refused(hour_signal: Account, tmp_path: Path) -> None:
    path = context_path(hour_signal.model)
    assert hour_signal.card["context"]["file"] == path.name
    verify_context(load_settings(hour_signal.config), path)  # as trained: accepted

    # the account is shared by every test worker, so the file is tampered with in a copy, pins and all
    root = hour_signal.config.parent
    copy = shutil.copytree(root, tmp_path / "proj")
    pins = copy / "state" / "model-pins.json"
    pins.write_text(pins.read_text(encoding="utf-8").replace(str(root.resolve()), str(copy.resolve())),
                    encoding="utf-8")
    tampered = copy / path.relative_to(root)
    tampered.write_bytes(tampered.read_bytes().replace(b'"use": true', b'"use": false'))
    with pytest.raises(ModelError, match=r"combined model .* has changed since it was pinned.*scorer train"):
        verify_context(load_settings(copy / "config.yaml"), tampered)


def test_caption_features_count_hashtags_mentions_and_emoji() -> None:
    assert caption_counts("New in \U0001F525 #spring #sale with @anna and @shop.co \u2728") == {
        "caption_length": 48, "hashtags": 2, "mentions": 2, "emoji": 2}
