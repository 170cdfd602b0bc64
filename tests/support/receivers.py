"""Real notification receivers on 127.0.0.1: an HTTP server for Apprise's json:// and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseRequestHandler, ThreadingTCPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

SMTP_USER, SMTP_PASSWORD = "scorer", "pw-Xq7s3cret-Zz"
JSON_TOKEN = "tok-9f8e7d6c5b4a"


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def json_url(port: int) -> str:
    """The Apprise URL of a JsonReceiver on this port, with a token in its path as a webhook would carry one."""
    return f"json://127.0.0.1:{port}/hook/{JSON_TOKEN}"


def smtp_url(port: int) -> str:
    """The Apprise URL of an SmtpReceiver on this port: plain SMTP with a login, from and to."""
    return (f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
            "?from=scorer@example.com&to=team@example.com&secure=no")


def notify_section(root: Path, urls: list[str], **notify: object) -> str:
    """config.yaml's notify: section for these URLs, kept in a urls_file under `root` (readable by its owner and group
    only, as the docs advise), with more notify.* keys as given."""
    urls_file = root / "notify-urls"
    urls_file.write_text("# where reports go\n" + "\n".join(urls) + "\n")
    os.chmod(urls_file, 0o640)
    lines = ["notify:", f"  urls_file: {urls_file}"] + [f"  {key}: {value}" for key, value in notify.items()]
    return "\n".join(lines) + "\n"


class JsonReceiver:
    """Apprise's json:// target: records each POSTed body; answers `status` after `delay` seconds."""

    def __init__(self, port: int = 0, *, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                receiver.hits += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(delay)
                if status == 200:
                    receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The Apprise URL, with a token in its path as a webhook would carry one."""
        return json_url(self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class TrickleReceiver:
    """A json:// target that never finishes answering: after each request, one byte of its header every `every` s.

    Each read of the client gets a byte within its socket timeout, so only a deadline on the whole send ends it.
    """

    def __init__(self, every: float = 3.0) -> None:
        self.hits = 0
        self._closed = threading.Event()
        receiver = self

        class Handler(BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)  # the request (its body may follow; it is not needed)
                receiver.hits += 1
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
                    try:
                        self.request.sendall(bytes([byte]))
                    except OSError:  # the client gave up
                        return
                    if receiver._closed.wait(every):
                        return

        self._server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The Apprise URL, with a token in its path as a webhook would carry one."""
        return json_url(self.port)

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()


class SmtpReceiver:
    """An SMTP server that wants a login (over plain SMTP, loopback only) and keeps each mail."""

    def __init__(self, port: int | None = None) -> None:
        self.mails: list[Message] = []
        self.port = port or free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, authenticator=self._login,
                                      auth_require_tls=False)
        self._controller.start()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    @staticmethod
    def _login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (SMTP_USER.encode(),
                                                                                  SMTP_PASSWORD.encode())
        return AuthResult(success=ok)

    @property
    def url(self) -> str:
        """The Apprise URL: plain SMTP with a login, from and to."""
        return smtp_url(self.port)

    def close(self) -> None:
        self._controller.stop()


SECRETS = (SMTP_PASSWORD, JSON_TOKEN)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait until `condition()` holds, or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)
