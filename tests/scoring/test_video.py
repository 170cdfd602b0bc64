"""Videos scored beside stills, for real: reels in every codec, container and shape ranked by `scorer score` in the
learner's order among stills of the same signal, the hook deciding, and each sampled frame's answer as fastai's own.

The learners are built with set weights (tests/support/learners.py): one whose Engagement score climbs smoothly
as the picture's colour goes from blue to red, so that a reel's score can be told apart from its neighbours' by
a few points, and one whose answers follow fine detail, so that any difference in the frames' pixels shows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image

from scorer.config import load_settings
from scorer.results import engagement_score
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Item
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.videogen import Reel, encode, reel

BLUE, RED = np.array(CLASS_COLOURS["Low"]), np.array(CLASS_COLOURS["High"])
SIGNALS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # how far a picture's colour has gone from blue (Low) to red (High)
# each reel's encoding: every codec, container and shape the issue names, each at least twice
ENCODINGS = [("h264", "mp4", "9:16"), ("hevc", "mov", "1:1"), ("vp9", "webm", "16:9"), ("av1", "webm", "9:16"),
             ("mpeg4", "mov", "16:9"), ("av1", "mp4", "1:1"), ("h264", "mov", "16:9"), ("hevc", "mp4", "9:16"),
             ("vp9", "webm", "1:1"), ("mpeg4", "mp4", "9:16"), ("vp9", "mp4", "16:9"), ("av1", "webm", "1:1")]
# small frames of each shape
SHAPES = {"9:16": (72, 128), "1:1": (64, 64), "16:9": (128, 72)}
CLOSE = 3.0  # Engagement score points between a reel and a still of the same signal; neighbours lie 7 or more apart


def signal_colour(signal: float) -> tuple[int, int, int]:
    """The colour `signal` of the way from the blue of Low to the red of High."""
    r, g, b = np.rint(BLUE + signal * (RED - BLUE)).astype(int)
    return int(r), int(g), int(b)


@pytest.fixture(scope="module")
def learners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """'graded': the colour learner made soft, its score 12 for blue, 39 at 0.4 of the way, 92 for red;
    'detail': answers that follow fine detail (learners.detail_design)."""
    from tests.support.learners import build_learner, colour_design, detail_design

    folder = tmp_path_factory.mktemp("video-learners")
    return {"graded": build_learner(folder / "graded.pkl", colour_design(threshold=0.0, gain=4.0, grey_bias=0.0)),
            "detail": build_learner(folder / "detail.pkl", detail_design())}


def _project(root: Path, learner: Path, config: str) -> Project:
    project = Project(root)
    for name in ("inbox", "outbox", "models"):
        (project.root / name).mkdir(parents=True)
    shutil.copy(learner, project.models / learner.name)
    project.write_config(f"model: models/{learner.name}\n{config}")
    return project


def _ranking(report: Path) -> list[dict[str, object]]:
    book = load_workbook(report, read_only=True)
    try:
        rows = list(book["Ranking"].iter_rows(values_only=True))
    finally:
        book.close()
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.mark.slow
def test_reels_rank_among_stills_of_the_same_signal_and_the_hook_decides(tmp_path: Path,
                                                                         learners: dict[str, Path]) -> None:
    project = _project(tmp_path / "proj", learners["graded"], "video:\n  frames: 4\n")
    signal_of = {}
    for k, signal in enumerate(SIGNALS):
        colour = signal_colour(signal)
        signal_of[write_creative(project.inbox / f"still-{k}.png", colour, (72, 96), seed=k).name] = signal
        for codec, container, shape in ENCODINGS[2 * k: 2 * k + 2]:
            path = reel(project.inbox / f"reel-{k}-{codec}-{shape.replace(':', 'x')}.{container}",
                        [(2.0, colour)], size=SHAPES[shape], codec=codec)
            signal_of[path.name] = signal
    hook = [(3.0, signal_colour(1.0)), (3.0, signal_colour(0.0))]  # 6 s: red through the hook, then blue
    (project.inbox / "red-hook.mp4").write_bytes(encode(Reel(tuple(hook), size=SHAPES["9:16"])))
    (project.inbox / "red-end.mp4").write_bytes(encode(Reel(tuple(hook), size=SHAPES["9:16"], reverse=True)))

    proc = subprocess.run([sys.executable, "-m", "scorer", "score", str(project.inbox), "--config",
                           str(project.config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (report,) = project.reports()
    rows = {str(row["File"]): row for row in _ranking(report)}
    assert len(rows) == len(signal_of) + 2, sorted(rows)
    score = {name: float(row["Engagement score"]) for name, row in rows.items()}  # type: ignore[arg-type]
    for name, signal in signal_of.items():
        if name.startswith("reel-"):
            codec, shape = name.split("-")[2], name.split("-")[3].split(".")[0].replace("x", ":")
            still = f"still-{SIGNALS.index(signal)}.png"
            assert rows[name]["Format"] == f"video 0:02 · {shape}", name
            assert abs(score[name] - score[still]) <= CLOSE, (name, codec, score[name], score[still])
    # the learner's order: stills and reels by their signal, strongest first, in one ranking
    ranked = sorted((name for name in signal_of), key=lambda name: int(rows[name]["Rank"]))  # type: ignore[arg-type]
    assert [signal_of[name] for name in ranked] == sorted(signal_of.values(), reverse=True), ranked
    stills = [score[f"still-{k}.png"] for k in range(len(SIGNALS))]
    assert np.all(np.diff(stills) > 2 * CLOSE), stills  # the signals are told apart, not all High or all Low

    # the same frames, last first: the reel whose first 3 s are red ranks above the one that ends red
    assert int(rows["red-hook.mp4"]["Rank"]) < int(rows["red-end.mp4"]["Rank"])  # type: ignore[arg-type]
    assert rows["red-hook.mp4"]["Format"] == rows["red-end.mp4"]["Format"] == "video 0:06 · 9:16"
    # the hook's two frames weigh 0.6 and the rest's two 0.4, each frame scoring as its still does
    red, blue = score[f"still-{len(SIGNALS) - 1}.png"], score["still-0.png"]
    assert score["red-hook.mp4"] == pytest.approx(0.6 * red + 0.4 * blue, abs=CLOSE)
    assert score["red-end.mp4"] == pytest.approx(0.4 * red + 0.6 * blue, abs=CLOSE)


class _Recorder:
    """The engine's classifier, keeping each forward pass's probabilities: every sampled frame's own answer."""

    def __init__(self, model: object) -> None:
        self._model = model
        self.passes: list[np.ndarray] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probs, embedding = self._model.predict_with_embedding(pixels)  # type: ignore[attr-defined]
        self.passes.append(probs)
        return probs, embedding


def _frames_as_shown(path: Path) -> dict[float, Image.Image]:
    """Every frame of a video as a player shows it (upright), by its time from the first frame."""
    with av.open(str(path)) as container:
        frames = [(float(f.time), f.to_image().rotate(f.rotation, expand=True)) for f in container.decode(video=0)]
    return {round(t - frames[0][0], 6): im for t, im in frames}


PARITY_REELS = {
    "graded": [("ramp.mp4", {"codec": "h264", "size": (72, 128)}),
               ("ramp-phone.mov", {"codec": "hevc", "size": (72, 128), "rotate": 90}),
               ("ramp.webm", {"codec": "vp9", "size": (128, 72)})],
    "detail": [("detail.mp4", {"codec": "h264", "size": (96, 160), "detail": True}),
               ("detail.webm", {"codec": "av1", "size": (96, 96), "detail": True, "rotate": 270})],
}


@pytest.mark.slow
@pytest.mark.parametrize("learner", list(PARITY_REELS))
def test_each_sampled_frame_gets_fastais_own_answer_for_it_as_a_png(tmp_path: Path, learners: dict[str, Path],
                                                                     learner: str) -> None:
    """Each frame the engine scored, saved losslessly and run through fastai's get_preds: same top-1, |Δp| ≤ 0.01."""
    from fastai.vision.all import load_learner

    project = _project(tmp_path / "proj", learners[learner], "report:\n  explain: never\nvideo:\n  frames: 8\n")
    ramp = [(0.5, signal_colour(s)) for s in SIGNALS]  # 3 s through every signal: the frames' answers differ
    paths = [reel(project.inbox / name, ramp if learner == "graded" else [(3.0, signal_colour(0.5))], **how)
             for name, how in PARITY_REELS[learner]]
    engine = open_engine(load_settings(project.config))
    recorder = _Recorder(engine.model)
    engine.model = recorder  # type: ignore[assignment]
    scored = []
    try:
        for path in paths:  # one video a call: one forward pass, its rows the video's frames in order
            (result,) = engine.score([Item(path, path.name)]).scored
            scored.append((path, result, recorder.passes[-1]))
    finally:
        engine.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastai's own warning about unpickling
        learn = load_learner(learners[learner])
    columns = [list(learn.dls.vocab).index(c) for c in scored[0][1].classes]
    tops = set()
    for path, result, probs in scored:
        assert result.video is not None and len(probs) == len(result.video.frames) == 8, path.name
        assert [f.score for f in result.video.frames] == [engagement_score(p) for p in probs]
        shown = _frames_as_shown(path)
        stills = []
        for i, frame in enumerate(result.video.frames):
            stills.append(tmp_path / f"{path.stem}-{path.suffix[1:]}-{i}.png")
            shown[frame.time].save(stills[-1])
        theirs = learn.get_preds(dl=learn.dls.test_dl(stills, num_workers=0))[0].numpy()[:, columns]
        assert list(probs.argmax(axis=1)) == list(theirs.argmax(axis=1)), path.name
        assert np.abs(probs - theirs).max() <= 0.01, (path.name, np.abs(probs - theirs).max())
        tops.update(probs.argmax(axis=1).tolist())
    if learner == "graded":
        assert len(tops) >= 2, "the frames' answers differ, so that top-1 is a check"
