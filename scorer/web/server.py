"""`scorer serve`: check the address and token, load the engine once, then run uvicorn until stopped."""

from __future__ import annotations

import errno
import gc
import logging
import socket
from collections.abc import Callable

from scorer.config import require_writable_dir
from scorer.errors import ConfigError
from scorer.settings import Settings
from scorer.settings_text import log_settings
from scorer.web.auth import resolve_token

log = logging.getLogger(__name__)


def check_address(host: str, port: int) -> None:
    """Refuse an address that cannot be listened on (a port in use, a host of another machine), as uvicorn would."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is not a TCP port: use one from 1 to 65535 (serve.port or --port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed port is free
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use, maybe by another `scorer serve`: stop that, or "
                              "choose another port with --port or serve.port") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): choose an address of this machine "
                          "with --host or serve.host, or another port with --port or serve.port") from None


def page_url(host: str, port: int) -> str:
    """The address to open in a browser."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve_page(settings: Settings, on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve the page on serve.host:serve.port until SIGINT or SIGTERM; the model is loaded before the port opens."""
    host, port = settings.serve.host, settings.serve.port
    token = resolve_token(settings.serve, host)
    if settings.serve.keep_uploads:
        require_writable_dir(settings.outbox, "outbox")
    check_address(host, port)  # in a moment, before seconds of loading the model and the web libraries
    log_settings(settings, log)
    import uvicorn

    from scorer.scoring.assembly import open_engine
    from scorer.web.app import create_app

    engine = open_engine(settings)
    try:
        app = create_app(settings, engine, token)
        # A full collection walked the half a million objects the model and its libraries made, 0.4 s at a
        # time on the event loop while uploads were parsed; they live as long as the server, so they leave
        # the collector's sight.
        gc.collect()
        gc.freeze()
        config = uvicorn.Config(app, host=host, port=port, log_level="info", server_header=False,
                                proxy_headers=False, access_log=False, timeout_graceful_shutdown=30)
        server = uvicorn.Server(config)
        on_ready(page_url(host, port))
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; say why in one line instead
            if server.started:
                raise
        if not server.started:
            raise ConfigError(f"cannot listen on {host}:{port} (in use, or not an address of this machine): "
                              "choose another with --port or serve.port")
    finally:
        engine.close()
