"""Who may use the page: the token, the login form's cookie, and the headers every answer carries.

Bound to loopback, no token is needed (but one set is still checked). Bound anywhere else, or
behind a proxy, the server refuses to start without one, and a weak one. The cookie holds its
issue time signed with a key made from the token, never the token, and expires; logging out
revokes it. Wrong tokens are throttled per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from scorer.errors import ConfigError
from scorer.settings import ServeSettings

COOKIE = "scorer_session"
OPEN_PATHS = ("/healthz", "/login", "/static/", "/favicon.ico")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers send `Origin: null` on the page's own forms.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}
_MIN_TOKEN = 16
_MIN_DISTINCT = 8
TOKEN_RULE = (f"at least {_MIN_TOKEN} characters, at least {_MIN_DISTINCT} of them different, and at most half of "
              "it in runs like aaa, abc or 321")
_MAX_WAIT = 600.0
_THROTTLED = 4096  # client addresses remembered; the oldest is forgotten first

Handler = Callable[[Request], Awaitable[Response]]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(serve: ServeSettings, host: str) -> str | None:
    """The token to require (serve.token, else serve.token_file's first line); None only on loopback, unproxied."""
    token = serve.token if serve.token_file is None else _read_token_file(serve.token_file)
    if token is not None and (why := weak_token(token)) is not None:
        raise ConfigError(f"the serve token is too weak ({why}): use {TOKEN_RULE}, e.g. a random one from "
                          "`python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    if token is None and not is_loopback(host):
        raise ConfigError(f"serving on {host} lets other machines in, so it needs a token: set serve.token or "
                          "serve.token_file in config.yaml, or listen on 127.0.0.1")
    if token is None and (serve.behind_proxy or serve.trusted_proxies):
        raise ConfigError("behind a proxy every visitor arrives from the proxy, so the page needs a token: set "
                          "serve.token or serve.token_file in config.yaml")
    for address in serve.trusted_proxies:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(f"serve.trusted_proxies lists {address!r}, which is not an IP address or network: "
                              "give the proxy's address, like 10.0.0.5") from None
    return token


def _read_token_file(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"serve.token_file {path} cannot be read ({exc.strerror}): "
                          "create it with the token on its first line") from None
    if mode & 0o077:
        raise ConfigError(f"serve.token_file {path} can be read by other users: run `chmod 600 {path}`")
    return lines[0].strip() if lines else ""


def weak_token(token: str) -> str | None:
    """Why a token is easy to guess (shown to the operator), or None for one that follows TOKEN_RULE."""
    if len(token) < _MIN_TOKEN:
        return f"shorter than {_MIN_TOKEN} characters"
    if len(set(token)) < _MIN_DISTINCT:
        return f"only {len(set(token))} different characters"
    steps = [ord(b) - ord(a) for a, b in zip(token, token[1:], strict=False)]
    runs = [(step, len(list(group))) for step, group in itertools.groupby(steps)]
    # characters in runs of 3 or more where each steps by -1, 0 or +1 from the one before
    steady = sum(n + 1 for step, n in runs if abs(step) <= 1 and n >= 2)
    if steady * 2 > len(token):
        return "mostly runs like aaa, abc or 321"
    return None


class Sessions:
    """Login cookies: their issue time, signed with a key made from the token, good for serve.session_hours."""

    def __init__(self, token: str, hours: float) -> None:
        self.token = token
        self._key = hmac.new(token.encode(), b"scorer serve session", hashlib.sha256).digest()
        self.lifetime = int(hours * 3600)
        self._revoked: dict[str, float] = {}

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float) -> str:
        """A new cookie value."""
        issued = str(int(now))
        return f"{issued}.{self._sign(issued)}"

    def valid(self, value: str, now: float) -> bool:
        """Whether a cookie value was issued here, has not expired and was not logged out."""
        issued, _, signature = value.partition(".")
        if not (value.isascii() and issued.isdigit()) or value in self._revoked:
            return False
        if not hmac.compare_digest(signature.encode(), self._sign(issued).encode()):
            return False
        return now - self.lifetime < int(issued) <= now + 60

    def revoke(self, value: str, now: float) -> None:
        """Log a cookie out before it expires (remembered only until it would have)."""
        self._revoked = {v: t for v, t in self._revoked.items() if t > now}
        if self.valid(value, now):
            self._revoked[value] = int(value.partition(".")[0]) + self.lifetime


class Throttle:
    """Failed logins per client address: after k wrong tokens in a row it waits 2^(k-1) s (at most 10 min).

    A try is booked before the token is read, so parallel guesses from one address get one answer
    and 429 for the rest. IPv6 addresses count per /64, since one machine holds a whole /64.
    """

    def __init__(self) -> None:
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @staticmethod
    def key(address: str) -> str:
        """The address a client is counted under."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)

    def book(self, address: str, now: float) -> float:
        """Seconds this address must still wait (then nothing is booked), or 0 with its try booked."""
        failures, next_at = self._state.get(self.key(address), (0, 0.0))
        if now < next_at:
            return next_at - now
        self._remember(address, failures, now + 1)
        return 0.0

    def failed(self, address: str, now: float) -> None:
        """A wrong token came from this address."""
        failures = self._state.get(self.key(address), (0, 0.0))[0] + 1
        self._remember(address, failures, now + min(2.0 ** (failures - 1), _MAX_WAIT))

    def succeeded(self, address: str) -> None:
        """The right token came from this address: its count starts again."""
        self._state.pop(self.key(address), None)

    def _remember(self, address: str, failures: int, next_at: float) -> None:
        key = self.key(address)
        self._state[key] = (failures, next_at)
        self._state.move_to_end(key)
        while len(self._state) > _THROTTLED:
            self._state.popitem(last=False)


def cookie_name(secure: bool) -> str:
    """The login cookie's name: with the __Host- prefix over https, so no other site or path can set it."""
    return f"__Host-{COOKIE}" if secure else COOKIE


def authorised(request: Request, sessions: Sessions) -> bool:
    """Whether the request carries a live login cookie, or the token as `Authorization: Bearer`."""
    now = time.time()
    if any(sessions.valid(request.cookies.get(cookie_name(secure), ""), now) for secure in (True, False)):
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and right_token(given, sessions.token)


def right_token(given: str, token: str) -> bool:
    """Whether `given` is the token, compared in constant time (any text, ASCII or not)."""
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def set_session(response: Response, value: str, secure: bool, lifetime: int) -> None:
    """Give the browser the login cookie: not readable by scripts, never sent by other sites, expiring."""
    response.set_cookie(cookie_name(secure), value, max_age=lifetime, httponly=True, samesite="strict",
                        secure=secure, path="/")


def end_session(response: Response) -> None:
    """Clear the login cookie, under either name."""
    for secure in (True, False):
        response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="strict")


def host_name(host: str) -> str:
    """The name in a Host header or an origin, without its port or an IPv6 address's brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return (host.rpartition(":")[0] if host.count(":") == 1 else host).lower()


def same_origin(request: Request, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a state-changing request comes from this site's own pages (or from no page at all).

    The Host it is compared with has passed the gate (loopback, allowed, or set by a trusted proxy);
    a proxy that rewrites Host without saying so is covered by naming the public name in allowed_hosts.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    where = origin.split("://", 1)[-1]
    return where == request.headers.get("host", "") or host_name(where) in allowed_hosts


def guard(sessions: Sessions | None, allowed_hosts: tuple[str, ...],
          login_page: Callable[[Request], Response]) -> Callable[[Request, Handler], Awaitable[Response]]:
    """HTTP middleware: refuse cross-site posts and, with a token, anyone without it; add the security headers."""
    allowed_hosts = tuple(name.lower() for name in allowed_hosts)

    async def middleware(request: Request, call_next: Handler) -> Response:
        path = request.url.path
        if request.method not in ("GET", "HEAD") and not same_origin(request, allowed_hosts):
            response = Response("cross-site request refused: use the page itself", 403, media_type="text/plain")
        elif sessions is not None and not path.startswith(OPEN_PATHS) and not authorised(request, sessions):
            response = login_page(request)
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return middleware
