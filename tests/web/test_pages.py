"""`scorer serve` over HTTP: a real engine on the tiny learner, driven through Starlette's TestClient.

The browser tests (test_web_browser.py) drive the same pages through Chromium; these run everywhere.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from scorer.cli import main
from scorer.config import load_settings
from scorer.score.run import score_paths
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine
from scorer.settings_text import describe_settings, documented_keys
from scorer.web.app import create_app
from scorer.web.auth import resolve_token
from tests.support.helpers import Project, scorer_imports, tool_or_warn
from tests.support.history import INFO, fill_history, record_launches
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.videogen import reel

TOKEN = "a-long-enough-test-token-0123456789"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def engine(watched: Project) -> Iterator[Engine]:
    """The tiny learner's engine on the defaults (Grad-CAM included), its ONNX export made at its first start."""
    engine = open_engine(load_settings(watched.config))
    yield engine
    engine.close()


def _client(project: Project, engine: Engine, extra: str = "", token: str | None = None) -> TestClient:
    project.write_config("model: models/tiny.pkl\n" + extra)
    # A tokenless page answers only at loopback names (TestClient's default is "testserver").
    return TestClient(create_app(load_settings(project.config), engine, token), base_url="http://127.0.0.1",
                      follow_redirects=False)


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("creatives", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _ranking(xlsx: bytes) -> list[dict[str, object]]:
    ws = load_workbook(io.BytesIO(xlsx))["Ranking"]
    header = [c.value for c in ws[1]]
    return [dict(zip(header, row, strict=True)) for row in ws.iter_rows(min_row=2, values_only=True)]


def _probs(row: dict[str, object]) -> list[float]:
    return [float(row[f"P({c})"]) for c in ("Low", "Neutral", "High")]  # type: ignore[arg-type]


@pytest.mark.slow
def test_twenty_uploads_score_exactly_as_scorer_score(project: Project, engine: Engine, tmp_path: Path) -> None:
    kinds = [(label, n) for n in range(7) for label in CLASS_COLOURS][:20]
    paths = [write_creative(tmp_path / "in" / f"{label.lower()}-{n}.png", CLASS_COLOURS[label], (80, 60), seed=n)
             for label, n in kinds]
    with _client(project, engine) as client:
        answer = client.post("/try", files=_files(paths))
        assert answer.status_code == 303, answer.text
        page = client.get(answer.headers["location"])
        assert page.status_code == 200 and page.text.count('class="card"') == 20
        xlsx = client.get(answer.headers["location"] + "/report.xlsx")
    assert xlsx.headers["content-type"] == XLSX
    assert "attachment" in xlsx.headers["content-disposition"]
    served = _ranking(xlsx.content)
    run = score_paths(load_settings(project.config), [tmp_path / "in"], engine=engine)
    scored = _ranking(run.report.read_bytes())
    assert [r["File"] for r in served] == [r["File"] for r in scored]
    assert [r["Predicted class"] for r in served] == [r["Predicted class"] for r in scored]
    worst = max(abs(a - b) for s, r in zip(served, scored, strict=True) for a, b in zip(_probs(s), _probs(r),
                                                                                         strict=True))
    assert worst <= 1e-6
    assert {r["Location"] for r in served} == {"uploaded to scorer serve"}, "private paths are never shown"
    on_cards = dict(re.findall(r'data-name="([^"]+)" data-class="[^"]+"\s+data-probs="([^"]+)"', page.text))
    assert max(abs(float(a) - b) for r in scored for a, b in zip(on_cards[r["File"]].split(), _probs(r),
                                                                   strict=True)) <= 1e-6, "the cards show them too"
    first = page.text.index(f'data-name="{served[0]["File"]}"')
    assert first < page.text.index(f'data-name="{served[-1]["File"]}"'), "the gallery is ranked like the report"


def test_rejected_upload_shows_its_reason_and_names_are_never_paths(project: Project, engine: Engine,
                                                                    tmp_path: Path) -> None:
    good = write_creative(tmp_path / "good.jpg", CLASS_COLOURS["High"], (64, 48))
    files = [("creatives", ("../../escape.jpg", good.read_bytes(), "image/jpeg")),
             ("creatives", ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")),
             ("creatives", ("anim.gif", b"GIF89a" + b"\0" * 40, "image/gif"))]
    with _client(project, engine) as client:
        answer = client.post("/try", files=files)
        page = client.get(answer.headers["location"])
        runs = client.app.state.web.runs.root  # type: ignore[attr-defined]
        assert [p.name for p in (runs / answer.headers["location"].rsplit("/", 1)[1]).iterdir()] == [
            next((runs / answer.headers["location"].rsplit("/", 1)[1]).glob("*.xlsx")).name
        ], "uploads are deleted once scored"
    assert 'data-name="escape.jpg"' in page.text
    assert "file is incomplete or corrupt" in page.text
    assert "GIF files are not accepted" in page.text
    assert not (tmp_path.parent / "escape.jpg").exists() and not list(project.root.rglob("escape.jpg"))


def test_kept_uploads_go_to_the_outbox_under_their_hash(project: Project, engine: Engine, tmp_path: Path) -> None:
    good = write_creative(tmp_path / "good.png", CLASS_COLOURS["Low"], (64, 48))
    with _client(project, engine, "serve:\n  keep_uploads: true\n") as client:
        assert client.post("/try", files=_files([good])).status_code == 303
    kept = list((project.outbox / "uploads" / date.today().isoformat()).iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".png" and len(kept[0].stem) == 64
    assert kept[0].read_bytes() == good.read_bytes()


def test_oversized_or_too_many_or_no_uploads_get_a_clear_error(project: Project, engine: Engine,
                                                               tmp_path: Path) -> None:
    small = write_creative(tmp_path / "small.png", CLASS_COLOURS["Low"], (32, 32))
    with _client(project, engine, "serve:\n  max_upload_mb: 0.05\n  max_files: 2\n") as client:
        big = client.post("/try", files=[("creatives", ("big.png", b"\x89PNG" + b"\0" * 80_000, "image/png"))])
        many = client.post("/try", files=_files([small, small, small]))
        none = client.post("/try", files=[("creatives", ("", b"", "application/octet-stream"))])
    assert big.status_code == 413
    assert "upload too large: 0.1 MB, limit 0.05 MB" in big.text and "serve.max_upload_mb" in big.text
    assert many.status_code == 413 and "too many files: 3, limit 2" in many.text
    assert none.status_code == 400 and "no file chosen" in none.text


def test_token_is_required_on_every_page_but_healthz(project: Project, engine: Engine) -> None:
    with _client(project, engine, token=TOKEN) as client:
        refused = client.get("/try")
        assert refused.status_code == 401 and 'name="token"' in refused.text
        assert client.post("/try", files=[("creatives", ("a.png", b"x", "image/png"))]).status_code == 401
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/try", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        right = client.post("/login", data={"token": TOKEN})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
        assert client.get("/model").status_code == 200, "the cookie lets the browser in"
        wrong = client.post("/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "not right" in wrong.text


def test_binding_beyond_loopback_needs_a_long_token(project: Project, tmp_path: Path) -> None:
    serve = load_settings(project.config).serve
    assert resolve_token(serve, "127.0.0.1") is None and resolve_token(serve, "::1") is None
    with pytest.raises(Exception, match="serving on 0.0.0.0 lets other machines in, so it needs a token"):
        resolve_token(serve, "0.0.0.0")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    project.write_config(f"model: models/tiny.pkl\nserve:\n  token_file: {tmp_path / 'token'}\n")
    assert resolve_token(load_settings(project.config).serve, "0.0.0.0") == TOKEN
    project.write_config(f"model: models/tiny.pkl\nserve:\n  token: {TOKEN}\n")
    described = describe_settings(load_settings(project.config))
    assert "settings: serve.token = (set, not shown)" in described and TOKEN not in "".join(described), \
        "logs never show it"
    project.write_config("model: models/tiny.pkl\nserve:\n  token: short\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(project.config), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "too weak (shorter than 16 characters)" in result.output


def test_security_headers_and_cross_site_posts(project: Project, engine: Engine) -> None:
    with _client(project, engine) as client:
        page = client.get("/try")
        refused = client.post("/try", headers={"Origin": "http://evil.example"}, files=[("creatives", ("a", b"x"))])
        missing = client.get("/reports/..%2Fconfig.yaml/download")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin" and "server" not in page.headers
    assert refused.status_code == 403
    assert missing.status_code == 404


@pytest.mark.slow
def test_reports_model_and_health_pages_show_the_watch_service(project: Project, engine: Engine) -> None:
    for label, colour in CLASS_COLOURS.items():
        write_creative(project.inbox / f"{label.lower()}.jpg", colour, (64, 48))
    reel(project.inbox / "clip.mp4", [(3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"])])
    project.write_config("model: models/tiny.pkl\nwatch:\n  settle_seconds: 0.2\n")
    watch = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(project.config)],
                           capture_output=True, text=True, timeout=300)
    assert watch.returncode == 0, watch.stderr
    (report,) = project.reports()
    card = {"verdict": "better than always answering Neutral", "classes": ["Low", "Neutral", "High"],
            "headline": {"Accuracy": "80% (95% CI 60% to 95%)"}, "data": {"valid": 12},
            "metrics": {"confusion": [[3, 1, 0], [0, 4, 0], [0, 1, 3]]}}
    (project.models / "tiny.card.json").write_text(json.dumps(card))
    with _client(project, engine, "watch:\n  settle_seconds: 0.2\n") as client:
        listing = client.get("/reports").text
        batch = client.get(f"/reports/{report.name}").text
        download = client.get(f"/reports/{report.name}/download")
        model = client.get("/model").text
        health = client.get("/health").text
    assert report.name in listing and listing.count('class="card"') == 4, "latest.xlsx's ranking is shown"
    assert batch.count('class="card"') == 4 and "high.jpg" in batch
    # the video's card as the ledger keeps it: its Format text and its frames' filmstrip
    assert batch.count('<img class="filmstrip"') == 1 and '<span class="media">video 0:06 · 9:16</span>' in batch
    assert download.content == report.read_bytes()
    assert "better than always answering Neutral" in model and "80% (95% CI 60% to 95%)" in model
    assert "<td>4</td>" in model and engine.opened.sha256 in model
    assert report.name in health and "Files waiting in the inbox</th><td>0" in health


def test_model_page_shows_the_track_record_or_how_to_make_one(project: Project, engine: Engine) -> None:
    with _client(project, engine) as client:
        before = client.get("/model").text
    assert "No track record for this model yet" in before and "<svg" not in before
    sha, state = engine.opened.sha256, project.root / "state"
    state.mkdir(exist_ok=True)
    made = fill_history(state, 30, per_batch=30, days=2, info=replace(INFO, sha256=sha))
    record = record_launches(state, made[:24], [int(4000 + 100 * s.score) for s in made[:24]], model=sha,
                             after_days=-1)  # posted before they were scored: listed, never counted
    with _client(project, engine) as client:
        page = client.get("/model").text
    assert f"<strong>Verdict:</strong> {record.verdict}" in page
    assert page.count('<svg class="scatter"') == 1 and page.count("<circle ") == 24
    assert page.count('<circle class="launch counted"') == 0 and f"{record.launches[0].post}: score" in page


def test_each_heat_map_on_a_card_has_a_caption(project: Project, engine: Engine, tmp_path: Path) -> None:
    paths = [write_creative(tmp_path / f"{label.lower()}.png", colour, (64, 48)) for label, colour in
             CLASS_COLOURS.items()]
    with _client(project, engine) as client:
        page = client.get(client.post("/try", files=_files(paths)).headers["location"]).text
    figures = re.findall(r'<figure class="heatmap">\s*<img class="overlay"[^>]*>\s*<figcaption>(.*?)</figcaption>',
                         page, re.S)
    assert len(figures) == page.count('class="overlay"') == 3, "every overlay, and only overlays, captioned"
    classes = re.findall(r'data-class="([^"]+)"', page)
    assert [" ".join(f.split()) for f in figures] == [f"Where the model looked: red drove “{c}” most" for c in classes]


def test_model_page_shows_the_ways_of_predicting_in_one_table(project: Project, engine: Engine) -> None:
    ways = {"kNN estimate (3 nearest posts)": (0.9, 0.8), "Classifier": (0.88, 0.79),
            "Majority baseline (always Neutral)": (0.36, None)}
    comparison = {"accuracy": {name: {"value": acc, "low": acc - 0.1, "high": acc + 0.05} for name, (acc, _) in
                               ways.items()},
                  "spearman": {name: {"value": rho, "low": rho and rho - 0.2, "high": rho and rho + 0.1}
                               for name, (_, rho) in ways.items()},
                  "best": "kNN estimate (3 nearest posts)", "verdict": "none clearly: kNN estimate ties Classifier"}
    # the headline repeats each way as a line, as `scorer train` writes it for the report's Model sheet
    headline = {"Accuracy": "88% (95% CI 78% to 93%)", **{name: f"accuracy {acc:.0%}" for name, (acc, _) in
                                                          ways.items()},
                "Best supported": comparison["verdict"], "Posting time and caption": "image-only: no help"}
    card = {"verdict": "better than always answering Neutral", "classes": ["Low", "Neutral", "High"],
            "headline": headline, "data": {"valid": 42}, "comparison": comparison}
    (project.models / "tiny.card.json").write_text(json.dumps(card))
    with _client(project, engine) as client:
        page = client.get("/model").text
    for name in ways:
        assert page.count(f"<th>{name}</th>") == 1, f"{name}: one row, in the table of ways"
    assert page.count(comparison["verdict"]) == 1
    assert "<th>Accuracy</th><td>88% (95% CI 78% to 93%)</td>" in page, "the metrics stay"
    assert "<th>Posting time and caption</th><td>image-only: no help</td>" in page


def test_service_serve_prints_a_hardened_unit(project: Project) -> None:
    result = CliRunner().invoke(main, ["service", "--serve", "--config", str(project.config)])
    assert result.exit_code == 0, result.output
    unit = result.stdout
    assert f"ExecStart={Path(sys.executable).with_name('scorer')} serve --config {project.config}" in unit
    assert f"ReadWritePaths={project.root / 'state'}\n" in unit, "only the state folder is writable"
    for line in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=true", "PrivateTmp=true", "ProtectSystem=strict",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert line in unit
    assert "sudo systemctl enable --now scorer-serve" in result.stderr
    if tool_or_warn("systemd-analyze", "systemd", "the unit's syntax") is None:
        return
    (project.root / "state").mkdir()
    (project.root / "scorer-serve.service").write_text(unit)
    check = subprocess.run(["systemd-analyze", "verify", str(project.root / "scorer-serve.service")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_a_port_in_use_is_told_at_once_before_the_model_loads(watched: Project) -> None:
    watched.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = scorer_imports("serve", "--port", str(port), "--config", str(watched.config), cwd=watched.root)
    assert run.returncode == 2
    assert run.stderr == (f"error: port {port} on 127.0.0.1 is in use, maybe by another `scorer serve`: stop that, "
                          "or choose another port with --port or serve.port\n"), "no model loaded, no settings logged"
    assert not run.packages & {"onnxruntime", "torch", "fastai", "uvicorn", "fastapi"}
    watched.write_config(f"model: models/tiny.pkl\nserve:\n  token: {TOKEN}\n")  # any host but loopback needs one
    other = scorer_imports("serve", "--host", "192.0.2.1", "--config", str(watched.config), cwd=watched.root)
    assert other.returncode == 2 and not other.packages & {"onnxruntime", "uvicorn"}
    assert other.stderr == ("error: cannot listen on 192.0.2.1:8000 (Cannot assign requested address): choose an "
                            "address of this machine with --host or serve.host, or another port with --port or "
                            "serve.port\n")


def test_the_start_up_log_shows_the_port_in_force_and_only_what_differs(watched: Project) -> None:
    watched.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--port", str(port), "--config",
                             str(watched.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=watched.root, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"Open http://127.0.0.1:{port}/ in a browser (Ctrl-C stops)\n"
        proc.send_signal(signal.SIGINT)
        _, log = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    settings = [line for line in log.splitlines() if ": settings" in line]
    assert settings == [
        f"INFO scorer.web.server: settings from {watched.config}: 3 of {len(documented_keys())} differ from the "
        "defaults (-v shows all)",
        f"INFO scorer.web.server: settings: model = {watched.models / 'tiny.pkl'}",
        "INFO scorer.web.server: settings: report.explain = never",
        f"INFO scorer.web.server: settings: serve.port = {port}",
    ], log
