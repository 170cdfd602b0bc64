"""A launch and a track record: what `scorer outcomes` keeps in the ledger and the reports and the web page show.

A launch is a launched post paired with the creative scored before it; a model's track record is its
figures on the outcomes of its launches, with a verdict (scorer.outcomes.figures computes them), and the
same figures on the launches of each format (image, video, carousel) beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from scorer.results import Interval, Scored, show_interval

GUESS = "no better than a guess on launched creatives: retrain with `scorer train` or stop relying on it"
_FIGURES = ("spearman", "accuracy", "baseline_accuracy", "lift")


@dataclass(frozen=True)
class Launch:
    """A launched post paired with the creative scored before it, as the ledger's outcomes table keeps it."""

    post: str  # the post's image, by its path inside the download it came from
    post_sha256: str
    creative: Scored  # as it was scored: its name, content, prediction, time and thumbnail
    model: str  # SHA-256 of the model that scored the creative: each model has a track record of its own
    similarity: float  # how alike post and creative are, 0-1 (scorer.outcomes.match)
    posted_at: float | None  # Unix time; None when the download gives no date
    likes: int
    comments: int
    value: float  # likes + comments, normalised as the labelling rule (train.label) does
    real_class: str  # the class the labelling rule gives the real engagement
    post_thumbnail: bytes | None = None  # the post as launched
    format: str = "image"  # the post's: image, video (a Reel, a clip) or carousel

    @property
    def total(self) -> int:
        """Likes + comments."""
        return self.likes + self.comments

    @property
    def forward(self) -> bool:
        """Posted after its creative was scored, so the prediction came first (a post without a date cannot tell)."""
        return self.posted_at is not None and self.posted_at >= self.creative.scored_at

    def counted(self, settled: float) -> bool:
        """Among the launches a track record's figures use: forward, and posted by `settled`, once likes settle."""
        return self.forward and self.posted_at is not None and self.posted_at <= settled


@dataclass(frozen=True)
class FormatRecord:
    """A track record's figures on the launches of one format alone."""

    matched: int
    mature: int
    spearman: Interval
    accuracy: Interval
    baseline_accuracy: Interval
    lift: Interval

    def line(self) -> str:
        """The figures in one line, as the headline gives them."""
        if self.accuracy.value is None:  # fewer than three counted
            return f"{self.matched} matched, {self.mature} counted: too few for figures yet"
        return (f"{self.matched} matched, {self.mature} counted: Spearman {show_interval(self.spearman)}, "
                f"accuracy {show_interval(self.accuracy, percent=True)} against a baseline of "
                f"{show_interval(self.baseline_accuracy, percent=True, interval=False)}, "
                f"lift {show_interval(self.lift)}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json, the model card and the ledger."""
        return asdict(self)

    @classmethod
    def kept(cls, data: dict[str, Any]) -> FormatRecord:
        """A format's figures from their `as_dict`."""
        return cls(data["matched"], data["mature"], *(Interval(**data[name]) for name in _FIGURES))


@dataclass(frozen=True)
class TrackRecord:
    """A model's predictions against the outcomes of its launches, with a verdict."""

    model_sha256: str
    settled: float  # a launch posted by then counts: the time of `scorer outcomes` less outcomes.min_age_days
    matched: int  # launches of creatives this model scored
    mature: int  # of which counted
    early: int  # posted before their creative was scored: listed, never counted
    not_posted: int  # creatives this model scored that no post matched
    unmatched_posts: int  # posts of the download that matched no scored creative
    spearman: Interval
    accuracy: Interval
    baseline_accuracy: Interval
    lift: Interval
    calibration: list[dict[str, Any]]
    verdict: str
    launches: tuple[Launch, ...] = ()  # oldest post first: all of them as computed, the newest few as read back
    formats: dict[str, FormatRecord] = field(default_factory=dict)  # each format's own, of those launched

    @property
    def no_better_than_guess(self) -> bool:
        """The verdict is a guess's, on enough launches to say so: whoever reads the scores must be told."""
        return self.verdict == GUESS

    @property
    def headline(self) -> dict[str, str]:
        """The few lines the console, the reports and the web page show, as display strings, the verdict first;
        then a line per format where videos or carousels were launched (an account of pictures keeps its own)."""
        by_format = {f"{fmt.capitalize()} launches": figures.line() for fmt, figures in self.formats.items()}
        return {
            "Verdict": self.verdict,
            "Launched creatives": f"{self.matched} matched, {self.mature} mature and counted, "
                                  f"{self.early} posted before they were scored (not counted)",
            "Spearman (score vs real engagement)": show_interval(self.spearman),
            "Accuracy": show_interval(self.accuracy, percent=True),
            "Baseline": show_interval(self.baseline_accuracy, percent=True, interval=False),
            "Lift (top third vs bottom third)": show_interval(self.lift),
            "Not posted": f"{self.not_posted} scored creatives not found among the posts",
            **(by_format if set(self.formats) - {"image"} else {}),
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json, the model card and the ledger: the figures, a row per launch, the headline."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "launches"}
        plain |= {name: asdict(plain[name]) for name in _FIGURES}
        plain["formats"] = {fmt: figures.as_dict() for fmt, figures in self.formats.items()}
        return {**plain, "pairs": [self._row(launch) for launch in self.launches], "headline": self.headline,
                "no_better_than_guess": self.no_better_than_guess}

    def _row(self, launch: Launch) -> dict[str, Any]:
        """One launch as --json lists it (its key "pairs" and these keys are older than the word launch)."""
        creative = launch.creative
        return {"post": launch.post, "creative": creative.name, "creative_sha256": creative.sha256,
                "similarity": round(launch.similarity, 4), "posted_at": launch.posted_at,
                "scored_at": creative.scored_at, "predicted_class": creative.predicted,
                "predicted_score": round(creative.score, 2), "total": launch.total, "real_class": launch.real_class,
                "counted": launch.counted(self.settled), "format": launch.format}

    @classmethod
    def kept(cls, data: dict[str, Any], launches: tuple[Launch, ...]) -> TrackRecord:
        """A track record from its `as_dict`, with these of its launches; one written before `settled` was kept
        gets it back from its rows: the counted launches are the `mature` earliest forward ones. One written
        before formats were kept has none."""
        settled = data.get("settled")
        if settled is None:
            forward = sorted(row["posted_at"] for row in data["pairs"]
                             if row["posted_at"] is not None and row["posted_at"] >= row["scored_at"])
            settled = forward[data["mature"] - 1] if data["mature"] else float("-inf")
        plain: dict[str, Any] = {f.name: data[f.name] for f in fields(cls)
                                 if f.name not in ("settled", "launches", "formats")}
        plain |= {name: Interval(**plain[name]) for name in _FIGURES}
        formats = {fmt: FormatRecord.kept(figures) for fmt, figures in data.get("formats", {}).items()}
        return cls(**plain, settled=float(settled), launches=launches, formats=formats)
