"""What scoring produces: plain data shared by the engine, the report, the ledger and the commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Told of work as it is done: files scored, or bytes copied by a move; 0 says only "still alive" (the watchdog).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ModelInfo:
    """What the report's Model sheet says about the model that did the scoring."""

    path: Path
    sha256: str
    classes: tuple[str, ...]
    device: str
    runtime: str
    preprocessing: str
    versions: dict[str, str]
    card: dict[str, Any] = field(default_factory=dict)
    evidence: str = ""
    explain: str = ""
    decode: str = ""  # the decode check's mode and figures (scorer.checks.decode_check)
    export_check: str = ""  # how far the ONNX export's logits are from PyTorch's, checked at export
    context: str = ""  # whether posting time and caption are used (scorer.context), and why
    precision: str = ""  # fp32 or int8, and the precision check's figures (scorer.checks.precision)
    video: str = ""  # how a video's frames are sampled and weighed into its answer (scorer.decoding.video)


@dataclass(frozen=True)
class Neighbour:
    """A past post that a creative looks like, from the evidence index."""

    source: str
    date: str
    likes: int
    comments: int
    total: int
    similarity: float
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class Lookalikes:
    """What the account's own history says about a creative: its nearest past posts and where its score falls."""

    neighbours: tuple[Neighbour, ...]
    median_total: float
    percentile: float

    @property
    def percentile_text(self) -> str:
        """The account percentile in a marketer's words."""
        return f"above {self.percentile:.0%} of your posts"


@dataclass(frozen=True)
class Advice:
    """What the combined model says of a creative's planned post: its score at the planned time and the best slots."""

    planned_at: str  # local time and zone, "" when the plan gives no time
    planned_score: float | None
    best: tuple[tuple[str, float], ...]  # ("Thu 18:00", score), best first, in the coming week

    @property
    def best_text(self) -> str:
        """The best slots in a marketer's words."""
        return ", ".join(f"{slot} ({score:.1f})" for slot, score in self.best)


@dataclass(frozen=True)
class Frame:
    """One sampled frame of a video: when it is shown, whether it is in the hook, its own score and thumbnail."""

    time: float  # seconds from the first frame
    in_hook: bool
    score: float  # the frame's own Engagement score, as a still of it would get
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class Video:
    """What a video creative adds to its result: its length and its sampled frames, in time order."""

    duration: float
    frames: tuple[Frame, ...]
    codec: str = ""


# Shapes people name a frame by: within 3% of one of these, it is called by its name.
_SHAPES = ((9, 16), (4, 5), (1, 1), (16, 9), (4, 3), (3, 4), (2, 3), (3, 2), (21, 9))


def shape_text(width: int, height: int) -> str:
    """A frame's shape as people name it: 9:16, 1:1, 16:9, ...; otherwise its width to a height of 1."""
    ratio = width / height if height else 0.0
    for w, h in _SHAPES:
        if abs(ratio / (w / h) - 1) <= 0.03:
            return f"{w}:{h}"
    return f"{ratio:.2f}:1"


def duration_text(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def engagement_score(probs: Sequence[float]) -> float:
    """100 × Σ pᵢ·i/(K−1): 0 when surely the lowest class, 100 when surely the highest."""
    k = len(probs)
    return 100.0 * sum(p * i for i, p in enumerate(probs)) / (k - 1)


@dataclass(frozen=True)
class Scored:
    """One creative with its predicted class probabilities, lowest class first."""

    name: str
    location: str
    sha256: str
    classes: tuple[str, ...]
    probs: tuple[float, ...]
    width: int
    height: int
    format: str
    file_bytes: int
    modified: float
    scored_at: float
    thumbnail: bytes | None = None
    notes: str = ""
    report: str = ""
    evidence: Lookalikes | None = None
    overlay: bytes | None = None
    advice: Advice | None = None
    # kept so a launched post can be matched back to it (scorer.outcomes): perceptual hashes, and the
    # model's embedding of the same forward pass as float16 bytes
    prints: bytes | None = None
    embedding: bytes | None = None
    video: Video | None = None  # its frames and length, when the creative is a video

    @property
    def score(self) -> float:
        """The Engagement score, 0–100."""
        return engagement_score(self.probs)

    @property
    def media(self) -> str:
        """What kind of creative it is, as the report's Format column says: image, or video 0:09 · 9:16."""
        if self.video is None:
            return "image"
        return f"video {duration_text(self.video.duration)} · {shape_text(self.width, self.height)}"

    @property
    def predicted(self) -> str:
        """The most probable class."""
        return self.classes[max(range(len(self.probs)), key=self.probs.__getitem__)]

    @property
    def confidence(self) -> float:
        """The probability of the predicted class."""
        return float(max(self.probs))


@dataclass(frozen=True)
class Rejected:
    """An input that could not be scored, with a reason a marketer understands."""

    name: str
    location: str
    reason: str
    sha256: str = ""
    transient: bool = False  # not readable for a moment: the hot folder tries it again before rejecting it


@dataclass(frozen=True)
class Duplicate:
    """An input whose content was already scored: listed with that earlier result, not rescored."""

    name: str
    location: str
    original: Scored


@dataclass
class BatchResult:
    """Everything one batch (or one `scorer score`, or the window of latest.xlsx) produced."""

    scored: list[Scored] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)

    def ranked(self) -> list[Scored]:
        """Scored creatives, best first; ties broken by name so the order is stable."""
        return rank(self.scored)


def rank(scored: Sequence[Scored]) -> list[Scored]:
    """Sort by Engagement score, highest first, then by name."""
    return sorted(scored, key=lambda s: (-round(s.score, 9), s.name))


@dataclass(frozen=True)
class Interval:
    """A figure and its bootstrap 95% interval (None where undefined, e.g. a constant score): cards, track records."""

    value: float | None
    low: float | None
    high: float | None


def show_interval(iv: Interval, *, percent: bool = False, interval: bool = True) -> str:
    """A figure and its 95% interval as the card and the reports show it ("n/a" where undefined)."""
    if iv.value is None or iv.low is None or iv.high is None:
        return "n/a"
    if percent:
        text, low, high = f"{iv.value:.0%}", f"{iv.low:.0%}", f"{iv.high:.0%}"
    else:
        text, low, high = f"{iv.value:.2f}", f"{iv.low:.2f}", f"{iv.high:.2f}"
    return f"{text} (95% CI {low} to {high})" if interval else text
