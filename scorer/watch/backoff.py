"""Failed writes (reports, latest.xlsx, moves, the ledger): logged with their cause, retried with backoff."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from scorer.textsafe import log_text

log = logging.getLogger(__name__)

_FIRST_RETRY_S, _LAST_RETRY_S = 2.0, 300.0


@dataclass
class WriteBackoff:
    """The write that failed last, and when to try again (doubling from 2 s to 5 min)."""

    cause: str = ""
    delay: float = 0.0
    next_try: float = 0.0

    def failed(self, what: str, exc: BaseException) -> None:
        """Log a failed write with its cause and schedule the next try."""
        detail = getattr(exc, "strerror", None) or str(exc)
        now = time.monotonic()
        # Only a failed retry pushes the next one further out; new work failing meanwhile does not.
        if not self.cause or now >= self.next_try:
            self.delay = min(max(self.delay * 2, _FIRST_RETRY_S), _LAST_RETRY_S)
            self.next_try = now + self.delay
        self.cause = f"cannot write {what}: {detail}"
        log.error("%s: trying again in %.0f s; nothing is lost meanwhile (free space, close the file, or fix "
                  "the permissions)", log_text(self.cause), max(self.next_try - now, 0))

    def cleared(self) -> None:
        """The writes went through."""
        if self.cause:
            log.info("writes work again (after: %s)", log_text(self.cause))
        self.cause, self.delay = "", 0.0

    def due(self) -> bool:
        """Whether something failed and its backoff has passed."""
        return bool(self.cause) and time.monotonic() >= self.next_try
