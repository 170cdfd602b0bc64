"""Typed settings: every key with its default, type, lower bound and one line of documentation.

Defaults live here; config.yaml only overrides them (scorer.config reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def _opt(default: Any, doc: str, *, minimum: float | None = None, secret: bool = False) -> Any:
    """A settings field with its one-line documentation, an optional lower bound, and whether logs may show it."""
    meta = {"doc": doc, "min": minimum, "secret": secret}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ImageSettings:
    """What the scorer accepts as an image, and how hard it works to decode one."""

    formats: tuple[str, ...] = _opt(("JPEG", "PNG", "WEBP"), "Pillow format names that are accepted")
    max_file_mb: float = _opt(100.0, "larger files are rejected unread", minimum=0.001)
    max_megapixels: float = _opt(100.0, "larger images are rejected before decoding", minimum=0.001)
    decode_workers: int = _opt(2, "decoding processes, overlapped with inference", minimum=1)
    decode_timeout: float = _opt(60.0, "seconds before a file that hangs a decoder is rejected", minimum=1)
    decode_memory_mb: int = _opt(1024, "bound on pixels being decoded at once", minimum=16)
    decode: Literal["auto", "exact", "fast"] = _opt(
        "auto", "JPEG decoding: auto drafts only where a per-model check shows it harmless; exact: full size; "
        "fast: always draft"
    )


@dataclass(frozen=True)
class VideoSettings:
    """What the scorer accepts as a video (MP4, MOV, M4V, WebM: by content), and how it samples one."""

    max_seconds: float = _opt(900.0, "longer videos are rejected before any frame is decoded", minimum=0.1)
    max_megapixels: float = _opt(9.0, "videos with larger frames are rejected before decoding (4K is 8.3 MP)",
                                 minimum=0.001)
    max_streams: int = _opt(8, "videos with more streams (video, audio, subtitles, data) are rejected", minimum=1)
    max_file_mb: float = _opt(512.0, "larger video files are rejected unread", minimum=0.001)
    frames: int = _opt(16, "frames sampled and scored per video: the cover, the hook, then evenly over the rest",
                       minimum=1)
    hook_seconds: float = _opt(3.0, "the hook: the first seconds, where half the frames are sampled", minimum=0)
    hook_weight: float = _opt(0.6, "the hook's frames' share of a video's probabilities, the rest sharing the "
                              "remainder; above 0.5 the hook weighs more than all the rest together", minimum=0)
    max_memory_mb: int = _opt(1024, "memory a decoding worker may use for one video, beyond its file; more is "
                              "rejected", minimum=64)
    timeout: float = _opt(120.0, "seconds before a video that hangs a decoder is rejected", minimum=1)


@dataclass(frozen=True)
class ReportSettings:
    """How the Excel report looks."""

    thumbnails: bool = _opt(True, "embed a thumbnail of each creative")
    thumbnail_px: int = _opt(96, "longest side of a thumbnail, in pixels", minimum=16)
    explain: Literal["auto", "always", "never"] = _opt(
        "auto", "Grad-CAM overlay of where the model looked: auto (small batches), always or never"
    )
    explain_max: int = _opt(50, "with explain: auto, batches of at most this many creatives get overlays", minimum=1)


@dataclass(frozen=True)
class WatchSettings:
    """The hot-folder service."""

    polling: bool = _opt(False, "poll instead of inotify: set for SMB/NFS shares and sync clients")
    poll_interval: float = _opt(1.0, "seconds between polls when polling", minimum=0.1)
    settle_seconds: float = _opt(2.0, "a file is complete once its size and mtime are unchanged this long; "
                                 "a batch closes once no file has become complete for this long", minimum=0.1)
    rescan_seconds: float = _opt(30.0, "full rescan of the inbox, catches missed events", minimum=0.5)
    max_batch: int = _opt(200, "most files in one batch report", minimum=1)
    max_batch_age: float = _opt(60.0, "seconds after which a growing batch is scored anyway", minimum=0.1)
    after_scoring: Literal["move", "keep"] = _opt(
        "move", "move: archive scored/rejected files; keep: leave them (read-only shares)"
    )
    archive: Path | None = _opt(None, "where scored files go; default outbox/scored (a dated folder inside)")
    rejected: Path | None = _opt(None, "where rejected files go, with <name>.reason.txt; default outbox/rejected")
    latest_days: int = _opt(30, "outbox/latest.xlsx covers everything scored in this many days", minimum=1)
    latest_rows: int = _opt(1000, "outbox/latest.xlsx lists the best this many creatives (and the newest this many "
                            "rejected and duplicates); its Summary sheet counts them all", minimum=1)
    latest_interval: float = _opt(10.0, "outbox/latest.xlsx is rewritten at most once in this many seconds, "
                                  "off the scoring path, and only when something changed", minimum=0.1)
    max_attempts: int = _opt(3, "a file being scored each time the service died, this many times, is rejected",
                             minimum=1)
    orphan_hours: float = _opt(24.0, "a sidecar (.txt, .json) with no creative beside it for this many hours goes "
                               "to rejected/ with its reason; fractions allowed", minimum=0.001)


@dataclass(frozen=True)
class ServeSettings:
    """`scorer serve`, the local web page."""

    host: str = _opt("127.0.0.1", "address to listen on; anything but loopback needs a token")
    port: int = _opt(8000, "TCP port to listen on", minimum=1)
    token: str | None = _opt(None, "the token the login form asks for; required when host is not loopback",
                             secret=True)
    token_file: Path | None = _opt(None, "a file whose first line is the token, instead of writing it here")
    max_upload_mb: float = _opt(200.0, "largest upload (all its files together); larger ones are refused",
                                minimum=0.001)
    max_files: int = _opt(100, "most creatives in one upload", minimum=1)
    queue: int = _opt(4, "uploads waiting to be scored before more are refused as busy", minimum=1)
    keep_uploads: bool = _opt(False, "keep uploaded creatives in outbox/uploads/<date>/ under their SHA-256; "
                              "false deletes them once scored")
    max_uploads: int = _opt(2, "uploads received or scored at once; more are refused as busy before their "
                            "bodies are read", minimum=1)
    max_form_kb: float = _opt(64.0, "largest body of any other request (login, logout); larger ones are refused "
                              "unread", minimum=1)
    session_hours: float = _opt(12.0, "a login lasts this long, then the token is asked again", minimum=0.001)
    behind_proxy: bool = _opt(False, "a reverse proxy on this machine forwards to the page: needs a token, and "
                              "its X-Forwarded-Proto/-Host/-For are believed")
    trusted_proxies: tuple[str, ...] = _opt((), "addresses of the reverse proxies whose X-Forwarded-* headers are "
                                            "believed; setting any needs a token")
    allowed_hosts: tuple[str, ...] = _opt((), "names the page may be reached at (its Host), besides loopback ones; "
                                          "empty: any name when a token is set")


@dataclass(frozen=True)
class CleanSettings:
    """The article's rules for dropping posts that were probably advertised."""

    drop_is_ad: bool = _opt(True, "drop posts whose is_ad column is true")
    min_comment_ratio: float = _opt(0.005, "drop posts with comments/likes below this", minimum=0)
    max_comment_ratio: float = _opt(0.02, "drop posts with comments/likes above this", minimum=0)
    max_likes: int = _opt(16000, "drop posts with more likes than this", minimum=0)


@dataclass(frozen=True)
class LabelSettings:
    """How likes + comments become engagement classes."""

    method: Literal["thresholds", "quantiles"] = _opt(
        "thresholds", "thresholds: fixed cut points; quantiles: equal-sized classes"
    )
    thresholds: tuple[float, ...] = _opt(
        (7000.0, 11000.0),
        "cut points on likes+comments, lowest first, one fewer than classes (7000 and 11000 are both Neutral); "
        "ratios such as [0.8, 1.25] with rolling_median",
    )
    classes: tuple[str, ...] = _opt(("Low", "Neutral", "High"), "class names, lowest engagement first")
    normalize: Literal["none", "rolling_median"] = _opt(
        "none", "rolling_median: divide each total by the median of the last `window` posts up to it"
    )
    window: int = _opt(30, "posts in the rolling median", minimum=1)


@dataclass(frozen=True)
class TrainSettings:
    """`scorer train`."""

    arch: str = _opt("resnet34", "a torchvision (or timm, if installed) architecture name")
    pretrained: bool = _opt(True, "start from ImageNet weights (needs the weights file: see docs/training.md)")
    epochs: int = _opt(3, "fine-tuning epochs; the article saw overfitting after 3", minimum=1)
    image_size: int = _opt(224, "training and scoring size, in pixels", minimum=16)
    batch_size: int = _opt(32, "training batch size", minimum=1)
    learning_rate: float = _opt(0.002, "peak learning rate of the one-cycle schedule", minimum=1e-7)
    workers: int = _opt(0, "processes that decode training images; 0 decodes them in the main process", minimum=0)
    valid_pct: float = _opt(0.2, "share of posts held out (the newest, when dates are known)", minimum=0.01)
    seed: int = _opt(42, "random seed for the split, augmentation and bootstrap")
    bootstrap: int = _opt(1000, "bootstrap resamples for the 95% intervals", minimum=100)
    clean: CleanSettings = _opt(CleanSettings(), "")
    label: LabelSettings = _opt(LabelSettings(), "")


@dataclass(frozen=True)
class ContextSettings:
    """Posting time and caption beside the image (scorer.context)."""

    timezone: str = _opt("UTC", "the account's time zone (IANA name, e.g. Europe/Paris): posting hours and "
                         "weekdays are read in it, and sidecar times without an offset are taken in it")


@dataclass(frozen=True)
class BulkSettings:
    """`scorer bulk`: an archive on Ray into Parquet (scorer.bulk)."""

    flush_rows: int = _opt(1000, "finished rows are written to DEST as a Parquet part at least every this many "
                           "(a part holds at most this many), so a hard kill of the driver loses at most this many",
                           minimum=1)


@dataclass(frozen=True)
class OutcomeSettings:
    """`scorer outcomes`: launched posts matched back to their creatives, and the track record."""

    min_age_days: float = _opt(7.0, "a post counts once it is this many days old, when its likes have settled",
                               minimum=0)
    min_similarity: float = _opt(0.88, "a post and a creative this similar (0-1) are the same picture",
                                 minimum=0.5)
    min_pairs: int = _opt(20, "mature launched creatives needed before the track record gives a verdict",
                          minimum=3)


@dataclass(frozen=True)
class NotifySettings:
    """Messages after each batch report, and when the service is in trouble (scorer.notify, through Apprise)."""

    urls: tuple[str, ...] = _opt((), "Apprise URLs to notify (mailtos://, slack://, json://, ...); better kept out "
                                 "of config.yaml in notify.urls_file or systemd's LoadCredential=", secret=True)
    urls_file: Path | None = _opt(None, "a file with one Apprise URL per line (# comments allowed), readable by "
                                  "its owner and group only")
    retry_hours: float = _opt(24.0, "a message a destination does not take is retried with backoff this long, "
                              "then given up with one log line", minimum=0.0001)
    trouble_minutes: float = _opt(15.0, "a write to the outbox failing this long sends a trouble message",
                                  minimum=0.01)
    queue: int = _opt(1000, "most messages waiting to be sent; beyond it the oldest is given up with one log line",
                      minimum=1)
    timeout_seconds: float = _opt(8.0, "seconds a destination has to answer a send: past them the send is ended "
                                  "(its process killed) and retried with backoff; `scorer notify test` waits as long",
                                  minimum=0.5)


@dataclass(frozen=True)
class Settings:
    """Everything the scorer reads from config.yaml, with paths already resolved."""

    model: Path = _opt(Path("models/demo.pkl"), "the learner saved with learn.export()")
    model_sha256: str | None = _opt(None, "pinned SHA-256 of the model; `scorer model pin` writes it")
    inbox: Path = _opt(Path("inbox"), "the hot folder marketers drop creatives into")
    outbox: Path = _opt(Path("outbox"), "where reports (and archived creatives) go")
    state: Path = _opt(Path("state"), "the ledger, model pins and the ONNX cache live here")
    device: Literal["auto", "cpu", "cuda"] = _opt("auto", "auto picks CUDA when available")
    runtime: Literal["auto", "onnx", "torch"] = _opt("auto", "auto: PyTorch on CUDA, else ONNX Runtime, else PyTorch")
    precision: Literal["auto", "fp32", "fp16"] = _opt(
        "auto", "auto: int8 on ONNX Runtime where a per-model check shows it harmless and faster, fp32 elsewhere; "
        "fp32: never int8; fp16: half precision on CUDA (refused on the CPU)")
    classes: tuple[str, ...] | None = _opt(None, "the learner's classes, lowest engagement first; inferred when unset")
    threads: int = _opt(0, "CPU threads for inference and training; 0 means all cores", minimum=0)
    batch_size: int = _opt(16, "images per inference batch", minimum=1)
    images: ImageSettings = _opt(ImageSettings(), "")
    video: VideoSettings = _opt(VideoSettings(), "")
    report: ReportSettings = _opt(ReportSettings(), "")
    watch: WatchSettings = _opt(WatchSettings(), "")
    train: TrainSettings = _opt(TrainSettings(), "")
    serve: ServeSettings = _opt(ServeSettings(), "")
    context: ContextSettings = _opt(ContextSettings(), "")
    bulk: BulkSettings = _opt(BulkSettings(), "")
    outcomes: OutcomeSettings = _opt(OutcomeSettings(), "")
    notify: NotifySettings = _opt(NotifySettings(), "")
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def archive_dir(self) -> Path:
        """Where `scorer watch` moves scored files."""
        return self.watch.archive or self.outbox / "scored"

    @property
    def rejected_dir(self) -> Path:
        """Where `scorer watch` moves rejected files."""
        return self.watch.rejected or self.outbox / "rejected"
