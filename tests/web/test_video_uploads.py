"""Videos on `scorer serve`'s Try page: taken by their content within the upload limits, scored as `scorer score`
scores them, each on a card with its cover, its Format text, its filmstrip and the hook's heat map."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scorer.config import load_settings
from scorer.report.evidence_columns import FILMSTRIP_PX
from scorer.report.filmstrip import filmstrip
from scorer.score.run import score_paths
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine
from scorer.web.app import create_app
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS
from tests.support.videogen import Reel, encode, photo_jpeg

HOOK_RED = ((3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"]))  # 6 s: the hook red (High), the rest blue


@pytest.fixture
def engine(watched: Project) -> Iterator[Engine]:
    """The tiny learner's engine on the defaults (Grad-CAM included), its ONNX export made at its first start."""
    engine = open_engine(load_settings(watched.config))
    yield engine
    engine.close()


def _client(project: Project, engine: Engine, extra: str = "") -> TestClient:
    project.write_config("model: models/tiny.pkl\n" + extra)
    return TestClient(create_app(load_settings(project.config), engine, None), base_url="http://127.0.0.1",
                      follow_redirects=False)


def _card(page: str, name: str) -> str:
    """The HTML of the card of the creative called `name`."""
    found = re.search(rf'<li class="card" data-name="{re.escape(name)}".*?</li>', page, re.S)
    assert found, f"no card for {name}"
    return found.group(0)


def _data_url(html: str, css_class: str) -> bytes:
    """The bytes of the data: URL of the first <img> with class `css_class`."""
    found = re.search(rf'<img class="{css_class}" src="data:image/jpeg;base64,([^"]+)"', html)
    assert found, f"no {css_class} image"
    return base64.b64decode(found.group(1))


def test_a_video_upload_is_scored_by_its_content_on_a_card_with_its_filmstrip(
        project: Project, engine: Engine, tmp_path: Path) -> None:
    clip = encode(Reel(HOOK_RED), "mp4")
    files = [("creatives", ("clip.jpg", clip, "image/jpeg")),  # an MP4 under a still's name
             ("creatives", ("photo.mp4", photo_jpeg(), "video/mp4"))]  # and a JPEG under a video's
    with _client(project, engine) as client:
        answer = client.post("/try", files=files)
        assert answer.status_code == 303, answer.text
        page = client.get(answer.headers["location"]).text
        run = client.app.state.web.runs.get(answer.headers["location"].rsplit("/", 1)[1])  # type: ignore[attr-defined]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.jpg").write_bytes(clip)
    (tmp_path / "in" / "photo.mp4").write_bytes(photo_jpeg())
    reference = {s.name: s for s in score_paths(load_settings(project.config), [tmp_path / "in"],
                                                engine=engine).result.scored}
    served = {s.name: s for s in run.result.scored}

    video = served["clip.jpg"]
    assert video.video is not None and reference["clip.jpg"].video is not None
    assert max(abs(a - b) for a, b in zip(video.probs, reference["clip.jpg"].probs, strict=True)) <= 1e-6
    card = _card(page, "clip.jpg")
    assert video.media == reference["clip.jpg"].media == "video 0:06 · 9:16"
    assert f'<span class="media">{video.media}</span>' in card
    assert _data_url(card, "filmstrip") == filmstrip(video.video.frames, FILMSTRIP_PX), "the report's filmstrip"
    assert video.thumbnail and base64.b64encode(video.thumbnail).decode() in card, "its cover"
    caption = re.search(r"<figcaption>(.*?)</figcaption>", card.split('class="heatmap"')[1], re.S)
    assert caption and " ".join(caption.group(1).split()) == (
        f"Where the model looked in the hook: red drove “{video.predicted}” most")

    still = _card(page, "photo.mp4")
    assert '<span class="media">image</span>' in still and served["photo.mp4"].video is None
    assert 'class="filmstrip"' not in still
    assert "in the hook" not in still, "a still's heat map is its own"


def test_the_try_page_offers_videos_and_says_their_limits(project: Project, engine: Engine) -> None:
    with _client(project, engine, "serve:\n  max_upload_mb: 50\nvideo:\n  max_seconds: 120\n") as client:
        page = client.get("/try").text
        refused = client.post("/try", files=[("creatives", ("", b"", "application/octet-stream"))]).text
    accepted = re.search(r'<input id="creatives"[^>]* accept="([^"]+)"', page)
    assert accepted and {"video/mp4", "video/quicktime", "video/webm", ".mkv"} <= set(accepted.group(1).split(","))
    lead = " ".join(re.search(r'<p class="lead">(.*?)</p>', page, re.S).group(1).split())  # type: ignore[union-attr]
    assert "images or videos (up to 100 files, 50 MB in all)" in lead
    assert "Videos (MP4, MOV, WebM, Matroska) up to 120 s are scored on their sampled frames" in lead
    assert "Videos (MP4, MOV, WebM, Matroska) up to 120 s" in refused, "the error page says it too"


def test_a_kept_video_upload_is_named_by_its_content(project: Project, engine: Engine) -> None:
    clip = encode(Reel(HOOK_RED), "mp4")
    with _client(project, engine, "serve:\n  keep_uploads: true\n") as client:
        assert client.post("/try", files=[("creatives", ("clip.mov", clip, "video/quicktime"))]).status_code == 303
    kept = list((project.outbox / "uploads" / date.today().isoformat()).iterdir())
    assert [p.suffix for p in kept] == [".mp4"] and kept[0].read_bytes() == clip
