"""The errors the scorer raises on purpose.

    ScorerError              anything the user can fix; the CLI prints it on one line, exit 2
    ├── ConfigError          config.yaml has a bad key, value or path
    ├── ModelError           the learner cannot be loaded, trusted or used
    ├── ImageError           one input cannot be scored (it is rejected, never fatal)
    │   └── TransientImageError  not readable for a moment (a share): tried again before rejecting
    ├── DataError            training data cannot be imported
    ├── ContextError         a sidecar or plan.csv row cannot be read (rejected; its creative scores image-only)
    ├── ServiceError         the watcher cannot run (lock held, folders missing)
    └── UploadError          `scorer serve` refuses an upload (too large, too many files, busy)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class ScorerError(Exception):
    """A problem the user can fix; its message names the fix."""


class ConfigError(ScorerError):
    """A config key, value or path is wrong."""


class ModelError(ScorerError):
    """The learner cannot be loaded, trusted or used for scoring."""


class ImageError(ScorerError):
    """One input cannot be scored; the message is the reason shown to marketers."""


class TransientImageError(ImageError):
    """The file could not be read for a reason that may pass (EACCES, ENOENT, EIO on a share)."""


class DataError(ScorerError):
    """Training data cannot be imported or is too small to train on."""


class ContextError(ScorerError):
    """A creative's planned time or caption cannot be read; the message is the reason shown to marketers."""


class ServiceError(ScorerError):
    """The watch service cannot start or keep running."""


class UploadError(ScorerError):
    """`scorer serve` refuses an upload as a whole; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
