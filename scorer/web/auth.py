"""Who may use the page: the token, the login form's cookie, and the headers every answer carries.

Bound to loopback, no token is needed (but one set is still checked). Bound anywhere else the
server refuses to start without one. The cookie holds an HMAC of the token, not the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable

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
    """The token to require (serve.token, else serve.token_file's first line); None only on loopback."""
    token = serve.token
    if serve.token_file is not None:
        try:
            lines = serve.token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"serve.token_file {serve.token_file} cannot be read ({exc.strerror}): "
                              "create it with the token on its first line") from None
        token = lines[0].strip() if lines else ""
    if token is not None and len(token) < _MIN_TOKEN:
        raise ConfigError(f"the serve token is shorter than {_MIN_TOKEN} characters: use a long random one, e.g. "
                          "from `python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    if token is None and not is_loopback(host):
        raise ConfigError(f"serving on {host} lets other machines in, so it needs a token: set serve.token or "
                          "serve.token_file in config.yaml, or listen on 127.0.0.1")
    return token


def session_value(token: str) -> str:
    """What the login cookie holds: proof of the token that is not the token itself."""
    return hmac.new(token.encode(), b"scorer serve session", hashlib.sha256).hexdigest()


def authorised(request: Request, token: str) -> bool:
    """Whether the request carries the token as the login cookie or as `Authorization: Bearer`."""
    cookie = request.cookies.get(COOKIE, "")
    if cookie and hmac.compare_digest(cookie, session_value(token)):
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def check_login(given: str, token: str) -> bool:
    """Whether a login form's token is right; a wrong one costs a second, to slow guessing."""
    if hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    await asyncio.sleep(1)
    return False


def set_session(response: Response, token: str, secure: bool) -> None:
    """Give the browser the login cookie: not readable by scripts, never sent by other sites."""
    response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict", secure=secure, path="/")


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from this site's own pages (or from no page at all)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def guard(token: str | None, login_page: Callable[[Request], Response]
          ) -> Callable[[Request, Handler], Awaitable[Response]]:
    """HTTP middleware: refuse cross-site posts and, with a token, anyone without it; add the security headers."""

    async def middleware(request: Request, call_next: Handler) -> Response:
        path = request.url.path
        if request.method not in ("GET", "HEAD") and not same_origin(request):
            response = Response("cross-site request refused: use the page itself", 403, media_type="text/plain")
        elif token is not None and not path.startswith(OPEN_PATHS) and not authorised(request, token):
            response = login_page(request)
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return middleware

