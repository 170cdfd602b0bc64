"""Where notifications go: Apprise URLs from config.yaml, notify.urls_file or systemd's credential, never logged.

A URL carries its secrets (a password, a webhook token), so logs name a destination by its number
and scheme only (`2 (json://***)`), and every line Apprise or urllib3 logs (scorer.notify.courier relays
them) has every part of a configured URL blanked, percent-encoded or not.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from scorer.errors import ConfigError
from scorer.settings import NotifySettings

#: The name of the systemd credential (LoadCredential=notify-urls:/path) read from $CREDENTIALS_DIRECTORY.
CREDENTIAL = "notify-urls"
_MASK = "***"
# Parts shorter than this (a port, "hook", "to") carry no secret and would blank half of every line.
_SHORTEST_SECRET = 5


@dataclass(frozen=True)
class Destination:
    """One Apprise URL, its number in the configured order, and a key that names it in state/ without the secret."""

    number: int
    url: str

    @property
    def key(self) -> str:
        """A stable name for the notification queue's rows: the URL's hash, never the URL."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def scheme(self) -> str:
        """The kind of destination (mailtos, slack, json, ...): the one part of its URL that is never secret."""
        return self.url.split("://", 1)[0] if "://" in self.url else "?"

    @property
    def label(self) -> str:
        """How logs and `scorer notify test` name it: its number and scheme, nothing secret."""
        return f"{self.number} ({self.scheme}://{_MASK})"


def load_destinations(notify: NotifySettings, environ: Mapping[str, str] = os.environ) -> list[Destination]:
    """Every configured URL, once, in order: notify.urls, then the credential or else notify.urls_file."""
    urls = list(notify.urls)
    credential = Path(environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / CREDENTIAL
    if credential.is_file():  # systemd hands the urls_file in here, so the file itself can stay root-only
        urls += _read_urls(credential, "the notify-urls credential")
    elif notify.urls_file is not None:
        urls += _read_urls(notify.urls_file, "notify.urls_file")
    found = [Destination(n, url) for n, url in enumerate(dict.fromkeys(urls), start=1)]
    for destination in found:
        if "://" not in destination.url:
            raise ConfigError(f"notify destination {destination.number} is not an Apprise URL (scheme://...): "
                              "fix it in notify.urls or notify.urls_file")
    SECRETS.update(_secret_parts(d.url) for d in found)
    return found


def _read_urls(path: Path, what: str) -> list[str]:
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}): fix its permissions or change "
                          "'notify.urls_file' in config.yaml") from None
    if st.st_mode & stat.S_IROTH:
        raise ConfigError(f"{what} {path} is readable by everyone, and its URLs hold passwords and tokens: "
                          f"run `chmod o-r {path}`")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _secret_parts(url: str) -> frozenset[str]:
    """The URL and each part of it that may be a secret: user, password, host (slack://TOKEN/...), path, query."""
    parts = urlsplit(url)
    pieces = [url, parts.netloc, parts.username or "", parts.password or "", parts.hostname or "", parts.fragment]
    pieces += [unquote(p) for p in re.split(r"[/@:]", parts.netloc + parts.path)]
    pieces += [value for _, value in parse_qsl(parts.query)]
    return frozenset(p for p in pieces if len(p) >= _SHORTEST_SECRET)


class SecretSet:
    """Every secret part of every URL loaded in this process, longest first, for blanking them out of text."""

    def __init__(self) -> None:
        self._parts: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def update(self, groups: Iterable[frozenset[str]]) -> None:
        """Add the parts of more URLs."""
        for group in groups:
            self._parts |= group
        ordered = sorted(self._parts, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def mask(self, text: str) -> str:
        """`text` with every known secret replaced by ***, also where it is percent-encoded (URLs in debug lines)."""
        if self._pattern is None:
            return text
        masked = self._pattern.sub(_MASK, text)
        for decode in (unquote, unquote_plus):
            decoded = decode(masked)
            if self._pattern.search(decoded):  # the line is shown decoded then: its secrets can be blanked
                masked = self._pattern.sub(_MASK, decoded)
        return masked


SECRETS = SecretSet()
