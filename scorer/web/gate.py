"""What every request passes before the application sees it: who sent it, to which name, and how big it may be.

A pure ASGI middleware, so that each check runs on the headers alone, before any body is read:
- forwarded headers are believed only from a trusted proxy (serve.behind_proxy, serve.trusted_proxies),
  which then sets the scheme, the Host and the client address the rest of the page sees;
- a server without a token answers only at loopback names (DNS rebinding) and never through a proxy;
- every body has a limit, refused at once when declared and cut off when streamed past it;
- at most serve.max_uploads upload bodies are received (and scored) at once; one more is busy at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from scorer.settings import ServeSettings
from scorer.web.auth import SECURITY_HEADERS, host_name, is_loopback

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Render a refusal page: (scope, status, message) -> (body, content type).
Refusal = Callable[[Scope, int, str], tuple[bytes, str]]

UPLOAD_PATH = "/try"
OPEN_HOST_PATHS = ("/healthz",)  # carries nothing, and load balancers ask it by address
FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip")
_DRAIN_BYTES = 4 * 2**20  # read on past a refusal this far, so a client still sending sees the answer
_DRAIN_SECONDS = 2.0


class BodyTooLarge(Exception):
    """A request body went past its limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def trusted_networks(serve: ServeSettings) -> list[Network]:
    """The proxies whose forwarded headers are believed: serve.trusted_proxies, else loopback when behind_proxy."""
    named = serve.trusted_proxies or (("127.0.0.0/8", "::1") if serve.behind_proxy else ())
    return [ipaddress.ip_network(address, strict=False) for address in named]


class Gate:
    """The ASGI middleware described above, in front of the whole application."""

    def __init__(self, app: ASGIApp, serve: ServeSettings, token: str | None, refusal: Refusal) -> None:
        self.app = app
        self.serve = serve
        self.token = token
        self.refusal = refusal
        self.proxies = trusted_networks(serve)
        self.receiving = 0
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._forwarding(scope) or self._host(scope) or self._declared(scope)
        if refused is not None:
            await self._refuse(scope, receive, send, *refused)
            return
        upload = scope["method"] == "POST" and scope["path"] == UPLOAD_PATH
        if upload and self.receiving >= self.serve.max_uploads:
            await self._refuse(scope, receive, send, 503, f"busy: {self.receiving} uploads are being received or "
                               "scored: try again in a minute, or raise serve.max_uploads in config.yaml")
            return
        self.receiving += upload
        body = _Counted(receive, self._limit(scope))
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, body.receive, sending)
        except Exception:  # BodyTooLarge, or a middleware's exception group around it
            if started or body.over is None:
                raise
            await self._refuse(scope, receive, send, 413, self._too_large(scope, body.over))
        finally:
            self.receiving -= upload

    def _forwarding(self, scope: Scope) -> tuple[int, str] | None:
        """Believe a trusted proxy's forwarded headers; refuse any on a server without a token."""
        headers = dict(scope["headers"])
        forwarded = [name for name in FORWARDED if name in headers]
        client = scope.get("client")
        if client and forwarded and _in(client[0], self.proxies):
            _apply_forwarded(scope, headers)
        elif forwarded and self.token is None:
            if not self._warned:
                self._warned = True
                log.warning("refused a request with %s headers: a proxy forwards to this server, which has no "
                            "token; set serve.token and serve.behind_proxy", forwarded[0].decode())
            return 400, ("this server has no token, so it does not answer through a proxy: set serve.token and "
                         "serve.behind_proxy: true in its config.yaml")
        return None

    def _host(self, scope: Scope) -> tuple[int, str] | None:
        """Without a token only loopback names are answered; with serve.allowed_hosts, only those and loopback."""
        if scope["path"] in OPEN_HOST_PATHS:
            return None
        host = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        allowed = tuple(name.lower() for name in self.serve.allowed_hosts)
        if is_loopback(host) or host in allowed or (self.token is not None and not allowed):
            return None
        if self.token is None:
            return 421, (f"this page answers only at 127.0.0.1 or localhost, not at {host or 'no name'}: open it "
                         "there, or set serve.token and serve.allowed_hosts to reach it by another name")
        return 421, f"this page does not answer at {host or 'no name'}: add it to serve.allowed_hosts in config.yaml"

    def _limit(self, scope: Scope) -> int:
        if scope["method"] == "POST" and scope["path"] == UPLOAD_PATH:
            return int(self.serve.max_upload_mb * 2**20)
        return int(self.serve.max_form_kb * 2**10)

    def _declared(self, scope: Scope) -> tuple[int, str] | None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._limit(scope):
            return 413, self._too_large(scope, self._limit(scope), int(declared))
        return None

    def _too_large(self, scope: Scope, limit: int, size: int | None = None) -> str:
        if scope["path"] == UPLOAD_PATH:
            return upload_too_large(size, self.serve.max_upload_mb)
        return f"request too large: over {limit // 1024} KB, limit serve.max_form_kb: send the page's own form"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        """Answer at once, then read a little of the body on, so a client still sending sees the answer."""
        body, content_type = self.refusal(scope, status, message)
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"),
                   *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
        if status == 503:
            headers.append((b"retry-after", b"30"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        try:
            await asyncio.wait_for(_drain(receive), _DRAIN_SECONDS)
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b""})


def upload_too_large(size: int | None, limit_mb: float) -> str:
    """The one message for an upload over serve.max_upload_mb."""
    got = f"{size / 2**20:.1f} MB" if size is not None else "more"
    return (f"upload too large: {got}, limit {limit_mb:g} MB: send fewer or smaller files, "
            "or raise serve.max_upload_mb in config.yaml")


def _in(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _last(value: bytes) -> str:
    """The last entry of a forwarded list: the one the trusted proxy itself added."""
    return value.decode("latin-1").rsplit(",", 1)[-1].strip()


def _apply_forwarded(scope: Scope, headers: dict[bytes, bytes]) -> None:
    """What the trusted proxy says becomes the request's scheme, Host and client, as uvicorn would set them."""
    if b"x-forwarded-proto" in headers and _last(headers[b"x-forwarded-proto"]).lower() in ("http", "https"):
        scope["scheme"] = _last(headers[b"x-forwarded-proto"]).lower()
    if b"x-forwarded-for" in headers and _last(headers[b"x-forwarded-for"]):
        scope["client"] = (_last(headers[b"x-forwarded-for"]), 0)
    if b"x-forwarded-host" in headers and _last(headers[b"x-forwarded-host"]):
        host = _last(headers[b"x-forwarded-host"]).encode("latin-1")
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", host)]


class _Counted:
    """A request's receive that counts body bytes and raises BodyTooLarge past the limit (noting it in `over`)."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0
        self.over: int | None = None

    async def receive(self) -> Message:
        """The next message, counted."""
        message = await self._receive()
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            self.over = self.limit
            raise BodyTooLarge(self.limit)
        return message


async def _drain(receive: Receive) -> None:
    read = 0
    while read <= _DRAIN_BYTES:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
