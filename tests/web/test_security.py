"""`scorer serve` attacked over loopback: a real uvicorn on a free port, real HTTP clients and raw sockets.

One test per finding of issue 21's security read (1-11); each failed against the page before the fix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import stat
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.config import load_settings
from scorer.errors import ConfigError
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine
from scorer.textsafe import display_text
from scorer.web.app import create_app
from scorer.web.auth import TOKEN_RULE, resolve_token
from scorer.web.runs import NICE
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS, write_creative

TOKEN = "security-test-token-Zq8wX2pL5vN7"
REPORT = "engagement-report-20250101-120000.xlsx"
PUBLIC = "scorer.example.com"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, tiny_learner: Path) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("security-engine")
    shutil.copy(tiny_learner, root / "tiny.pkl")
    (root / "config.yaml").write_text("model: tiny.pkl\n")
    engine = open_engine(load_settings(root / "config.yaml"))
    yield engine
    engine.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(project: Project, engine: Engine, extra: str = "", token: str | None = None) -> Iterator[str]:
    """The page on 127.0.0.1:<free port> in a uvicorn thread, as `scorer serve` runs it; yields its URL."""
    project.write_config("model: models/tiny.pkl\n" + extra)
    app = create_app(load_settings(project.config), engine, token)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           proxy_headers=False, server_header=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def _client(url: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=False, timeout=30,
                        transport=httpx.HTTPTransport(local_address=source))


def _raw(url: str, head: str) -> socket.socket:
    """A socket to the server that has sent `head` (request line and headers, CRLF-joined, no blank line)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
    return sock


def _status(sock: socket.socket) -> int:
    return int(sock.recv(4096).split(b" ", 2)[1])


def _login(client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/login", data={"token": TOKEN}, headers=headers or {})


# 1. A proxy in front of a tokenless loopback server let every visitor in.

def test_a_tokenless_server_refuses_forwarded_requests_and_warns_once(project: Project, engine: Engine,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with serving(project, engine) as url, _client(url) as client:
        assert client.get("/model").status_code == 200, "loopback without a proxy still needs no token"
        with caplog.at_level(logging.WARNING, logger="scorer.web.gate"):
            relayed = [client.get("/model", headers={"X-Forwarded-For": "203.0.113.9"}) for _ in range(3)]
    assert {r.status_code for r in relayed} == {400}
    assert "set serve.token and serve.behind_proxy" in relayed[0].text
    assert relayed[0].headers["x-frame-options"] == "DENY", "refusals carry the security headers too"
    warnings = [r for r in caplog.records if "has no token" in r.getMessage()]
    assert len(warnings) == 1, "the operator is told once"


@pytest.mark.parametrize("keys", ["  behind_proxy: true\n", "  trusted_proxies: [10.0.0.5]\n"])
def test_serving_behind_a_proxy_refuses_to_start_without_a_token(project: Project, keys: str) -> None:
    project.write_config("model: models/tiny.pkl\nserve:\n" + keys)
    with pytest.raises(ConfigError, match="behind a proxy every visitor arrives from the proxy"):
        resolve_token(load_settings(project.config).serve, "127.0.0.1")
    result = CliRunner().invoke(main, ["serve", "--config", str(project.config)])
    assert result.exit_code == 2 and "needs a token: set serve.token" in result.output
    assert len(result.output.strip().splitlines()) == 1


# 1, 8 and 10. Behind a TLS proxy that rewrites Host, login works and its cookie is Secure and __Host-.

def test_behind_a_trusted_proxy_login_works_and_its_cookie_is_secure(project: Project, engine: Engine) -> None:
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": PUBLIC, "X-Forwarded-For": "198.51.100.7",
             "Origin": f"https://{PUBLIC}"}
    extra = f"serve:\n  trusted_proxies: [127.0.0.1]\n  allowed_hosts: [{PUBLIC}]\n"
    with serving(project, engine, extra, TOKEN) as url:
        with _client(url) as client:
            assert client.get("/model", headers=proxy).status_code == 401, "a proxy is no way around the token"
            login = _login(client, proxy)
        with _client(url, source="127.0.0.2") as direct:
            untrusted = _login(direct, {**proxy, "Origin": url})
    assert login.status_code == 303, login.text
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("__Host-scorer_session=") and "Secure" in cookie and "Path=/" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
    assert untrusted.status_code == 303 and "Secure" not in untrusted.headers["set-cookie"], \
        "forwarded headers from an address that is not the proxy are not believed"


def test_a_proxy_that_rewrites_host_without_saying_so_still_lets_posts_through(project: Project,
                                                                                engine: Engine) -> None:
    extra = f"serve:\n  behind_proxy: true\n  allowed_hosts: [{PUBLIC}]\n"
    with serving(project, engine, extra, TOKEN) as url, _client(url) as client:
        login = _login(client, {"Origin": f"https://{PUBLIC}", "X-Forwarded-For": "198.51.100.7"})
        evil = client.post("/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert login.status_code == 303, login.text
    assert evil.status_code == 403, "another site's posts are still refused"


# 2. DNS rebinding: a page at an attacker's name that resolves to 127.0.0.1.

def test_a_tokenless_server_answers_only_at_loopback_names(project: Project, engine: Engine) -> None:
    with serving(project, engine) as url, _client(url) as client:
        port = url.rsplit(":", 1)[1]
        rebound = client.get("/reports", headers={"Host": f"evil.example:{port}"})
        upload = client.post("/try", headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
                             files=[("creatives", ("a.png", b"x", "image/png"))])
        fine = [client.get("/reports", headers={"Host": host}).status_code
                for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.1")]
        healthz = client.get("/healthz", headers={"Host": "10.0.0.9"})
    assert rebound.status_code == 421 and "answers only at 127.0.0.1 or localhost" in rebound.text
    assert upload.status_code == 421
    assert fine == [200] * 4
    assert healthz.status_code == 200, "/healthz carries nothing and is asked by address"


def test_with_allowed_hosts_other_names_are_refused_even_with_a_token(project: Project, engine: Engine) -> None:
    with serving(project, engine, "serve:\n  allowed_hosts: [scorer.lan]\n", TOKEN) as url, _client(url) as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        evil = client.get("/model", headers={**headers, "Host": "evil.example"})
        lan = client.get("/model", headers={**headers, "Host": "scorer.lan:8000"})
    assert evil.status_code == 421 and "serve.allowed_hosts" in evil.text
    assert lan.status_code == 200


# 3. A report swapped for a link between the check and the open.

def test_a_report_swapped_for_a_link_is_never_served(project: Project, engine: Engine, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET " * 100)
    real = b"PK report bytes " * 100
    (project.outbox / REPORT).write_bytes(real)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.symlink(secret, project.outbox / ".link")
            os.replace(project.outbox / ".link", project.outbox / REPORT)
            (project.outbox / ".real").write_bytes(real)
            os.replace(project.outbox / ".real", project.outbox / REPORT)
            swaps += 1

    served: list[bytes] = []
    with serving(project, engine) as url, _client(url) as client:
        swapper = threading.Thread(target=swap)
        swapper.start()
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                answer = client.get(f"/reports/{REPORT}/download")
                assert answer.status_code in (200, 404)
                served.append(answer.content if answer.status_code == 200 else b"")
        finally:
            stop.set()
            swapper.join()
    assert swaps > 100 and served.count(real) > 10, "the race was run, and real reports were downloaded"
    assert not [body for body in served if b"SECRET" in body], "a link's target was served"


# 4. Bodies without a limit: 64 MiB of '&' kept the event loop busy for 25 s.

def test_every_body_has_a_limit_before_it_is_parsed(project: Project, engine: Engine) -> None:
    with serving(project, engine, "serve:\n  max_form_kb: 16\n", TOKEN) as url, _client(url) as client:
        started = time.perf_counter()
        sock = _raw(url, f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {64 * 2**20}\r\n"
                         "Content-Type: application/x-www-form-urlencoded")
        declared = _status(sock)
        took = time.perf_counter() - started
        sock.close()

        def ampersands() -> Iterator[bytes]:  # no Content-Length: the limit must hold on the stream itself
            for _ in range(64):
                yield b"&" * 2**16

        streamed = client.post("/login", content=ampersands(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        healthz = client.get("/healthz")
    assert declared == 413 and took < 1.0, f"refused with {declared} after {took:.2f} s"
    assert streamed.status_code == 413 and "serve.max_form_kb" in streamed.text
    assert healthz.status_code == 200


def test_healthz_stays_fast_while_oversized_bodies_arrive(project: Project, engine: Engine) -> None:
    with serving(project, engine, "", TOKEN) as url:
        def attack(_: int) -> int:
            with _client(url) as client:
                body = b"&" * (16 * 2**20)
                return client.post("/login", content=body,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code

        times = []
        with ThreadPoolExecutor(4) as pool, _client(url) as probe:
            attacks = [pool.submit(attack, n) for n in range(4)]
            while not all(a.done() for a in attacks):
                started = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                times.append(time.perf_counter() - started)
                time.sleep(0.02)
            statuses = [a.result() for a in attacks]
    assert statuses == [413] * 4
    assert max(times, default=0) < 0.4, f"/healthz took up to {max(times) * 1000:.0f} ms"


# 5. Uploads were read in full, any number at once, before the busy check.

def test_a_busy_server_refuses_an_upload_at_once_before_reading_it(project: Project, engine: Engine,
                                                                 tmp_path: Path) -> None:
    head = ("POST /try HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n"
            "Content-Type: multipart/form-data; boundary=xyz")
    with serving(project, engine, "serve:\n  max_uploads: 1\n") as url:
        first = _raw(url, head)
        first.sendall(b"--xyz\r\nContent-Disposition: form-data; name=\"creatives\"; filename=\"a.jpg\"\r\n\r\n"
                      + b"\0" * 2**20)
        time.sleep(0.5)  # the first upload is now being received
        started = time.perf_counter()
        second = _raw(url, head)
        status = _status(second)
        took = time.perf_counter() - started
        second.close()
        first.close()
        good = write_creative(tmp_path / "good.png", CLASS_COLOURS["Low"], (48, 48))
        with _client(url) as client:
            deadline = time.monotonic() + 10
            while (after := client.post("/try", files=[("creatives", ("g.png", good.read_bytes()))])).status_code \
                    == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
    assert status == 503 and took < 0.5, f"answered {status} after {took * 1000:.0f} ms"
    assert after.status_code == 303, "the slot comes back once the first client is gone"


def _nice(pid: int, tid: int | None = None) -> int:
    """A process's (or one of its threads') nice value, from /proc."""
    stat_file = Path(f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat")
    return int(stat_file.read_text().rsplit(")", 1)[1].split()[16])


def _children() -> list[int]:
    """This process's child processes, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priority is a Linux feature")
def test_scoring_and_its_decode_workers_give_way_to_the_page(project: Project, engine: Engine,
                                                             tmp_path: Path) -> None:
    good = write_creative(tmp_path / "good.png", CLASS_COLOURS["High"], (48, 48))
    with serving(project, engine) as url, _client(url) as client:
        assert client.post("/try", files=[("creatives", ("good.png", good.read_bytes()))]).status_code == 303
        scoring = [t.native_id for t in threading.enumerate() if t.name.startswith("scorer-engine")]
        workers = [pid for pid in _children()
                   if b"scorer.decoding.pool" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        loop = _nice(os.getpid(), threading.get_native_id())
        assert scoring and workers, "the upload was scored on the pool, with decode workers"
        assert [_nice(os.getpid(), tid) for tid in scoring] == [min(loop + NICE, 19)]
        assert {_nice(pid) for pid in workers} == {min(loop + NICE, 19)}, "the decode workers inherit it"

# 6. keep_uploads followed a link planted at outbox/uploads.

def test_kept_uploads_never_follow_a_planted_link(project: Project, engine: Engine, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project.outbox / "uploads").symlink_to(elsewhere)
    good = write_creative(tmp_path / "good.png", CLASS_COLOURS["High"], (48, 48))
    with caplog.at_level(logging.WARNING, logger="scorer.web.uploads"), \
            serving(project, engine, "serve:\n  keep_uploads: true\n") as url, _client(url) as client:
        answer = client.post("/try", files=[("creatives", ("good.png", good.read_bytes()))])
    assert answer.status_code == 303, "scoring still answers"
    assert not list(elsewhere.rglob("*")), "nothing was written through the link"
    assert any("never followed" in r.getMessage() for r in caplog.records)


# 7. A non-ASCII cookie raised TypeError: a 500 with a traceback.

def test_a_non_ascii_cookie_is_just_not_logged_in(project: Project, engine: Engine) -> None:
    with serving(project, engine, "", TOKEN) as url, _client(url) as client:
        answers = [client.get("/model", headers={"Cookie": value})
                   for value in ("scorer_session=é".encode(), "__Host-scorer_session=ü.1".encode())]
    assert [a.status_code for a in answers] == [401, 401]
    assert 'name="token"' in answers[0].text


# 8. The cookie never expired, and there was no logout.

def test_a_login_expires_and_logout_revokes_it(project: Project, engine: Engine) -> None:
    with serving(project, engine, "serve:\n  session_hours: 0.001\n", TOKEN) as url, _client(url) as client:
        login = _login(client)
        assert "Max-Age=3" in login.headers["set-cookie"]
        value = login.cookies["scorer_session"]
        page = client.get("/model")
        assert page.status_code == 200 and 'action="/logout"' in page.text, "the page has a logout button"
        client.cookies.clear()
        time.sleep(4.1)
        expired = client.get("/model", headers={"Cookie": f"scorer_session={value}"})
        second = _login(client).cookies["scorer_session"]
        client.cookies.clear()
        logout = client.post("/logout", headers={"Cookie": f"scorer_session={second}"})
        replayed = client.get("/model", headers={"Cookie": f"scorer_session={second}"})
        cross = client.post("/logout", headers={"Origin": "http://evil.example"})
    assert expired.status_code == 401, "the cookie expired on the server, not only in the browser"
    assert logout.status_code == 303 and logout.headers["location"] == "/login"
    assert 'scorer_session=""' in logout.headers["set-cookie"] and "Max-Age=0" in logout.headers["set-cookie"]
    assert replayed.status_code == 401, "a logged-out cookie does not come back"
    assert cross.status_code == 403, "logout is checked like every post"


# 9. Weak tokens, readable token files, parallel guessing.

@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "abababababababab", "abcdefghijklmnop", "0123456789876543",
                                  "short"])
def test_weak_tokens_are_refused_with_the_rule(project: Project, weak: str) -> None:
    project.write_config(f"model: models/tiny.pkl\nserve:\n  token: '{weak}'\n")
    with pytest.raises(ConfigError) as refused:
        resolve_token(load_settings(project.config).serve, "0.0.0.0")
    assert TOKEN_RULE in str(refused.value)


def test_a_token_file_others_can_read_is_refused(project: Project, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    project.write_config(f"model: models/tiny.pkl\nserve:\n  token_file: {token_file}\n")
    with pytest.raises(ConfigError, match=f"can be read by other users: run `chmod 600 {token_file}`"):
        resolve_token(load_settings(project.config).serve, "0.0.0.0")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert resolve_token(load_settings(project.config).serve, "0.0.0.0") == TOKEN


def test_parallel_guessing_is_slowed_per_client_address(project: Project, engine: Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's clock stands still, so the first wrong guess's 1 s wait outlasts the burst on a loaded machine.
    monkeypatch.setattr("scorer.web.app.time", types.SimpleNamespace(monotonic=lambda: 1000.0, time=time.time))
    with serving(project, engine, "", TOKEN) as url:
        def guess(n: int) -> int:
            with _client(url) as client:
                return client.post("/login", data={"token": f"wrong-guess-number-{n:04d}"}).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(guess, range(30)))
        with _client(url) as same:
            locked = _login(same)
        with _client(url, source="127.0.0.2") as other:
            elsewhere = _login(other)
    assert statuses.count(401) == 1 and statuses.count(429) == 29, statuses
    assert locked.status_code == 429 and "try again in" in locked.text and "retry-after" in locked.headers
    assert elsewhere.status_code == 303, "another address is not locked out"


# 11. Display names kept bidi, zero-width and C1 characters.

def test_display_names_lose_bidi_zero_width_and_control_characters(project: Project, engine: Engine,
                                                                   tmp_path: Path) -> None:
    spoof = "photo\u202egpj.exe\u200b\u2066\x85\u061c.png"
    good = write_creative(tmp_path / "good.png", CLASS_COLOURS["Neutral"], (48, 48))
    with serving(project, engine) as url, _client(url) as client:
        answer = client.post("/try", files=[("creatives", (spoof, good.read_bytes(), "image/png"))])
        page = client.get(answer.headers["location"])
        xlsx = client.get(answer.headers["location"] + "/report.xlsx").content
    names = [row[1] for row in load_workbook(io.BytesIO(xlsx))["Ranking"].iter_rows(min_row=2, values_only=True)]
    assert names == ["photogpj.exe.png"]
    assert 'data-name="photogpj.exe.png"' in page.text
    for char in "\u202e\u200b\u2066\x85\u061c":
        assert char not in page.text
    assert display_text("a\u202ab\u200fc\u2069d\ufeffe\x1bf\x9fg") == "abcdefg"
