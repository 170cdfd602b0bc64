"""`scorer serve` in a real browser: a `scorer serve` subprocess on a free loopback port, driven by headless Chromium.

Needs Debian's chromium and chromium-driver (.ci/run installs them). Without them the browser tests
fail in CI (CI=true) and elsewhere skip with a message saying so; test_web.py still checks the same
pages over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from tests.support.helpers import Project, after_first_start, tool_or_skip
from tests.support.history import INFO, fill_history, record_launches
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.videogen import reel

TOKEN = "browser-test-token-0123456789abcdef"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("chromium")]  # looked for before the server starts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_learner: Path,
           first_start: Path) -> Iterator[tuple[str, Project]]:
    """`scorer serve` with the tiny learner, a token and a small upload limit, until the module's tests end.

    It starts as the learner's first start left it and draws no Grad-CAM (the page's overlays are checked in
    tests/evidence and test_demo.py), so it opens the export from the fast start, without fastai."""
    project = Project(tmp_path_factory.mktemp("served"))
    for name in ("inbox", "outbox", "models"):
        (project.root / name).mkdir()
    shutil.copy(tiny_learner, project.models / "tiny.pkl")
    after_first_start(first_start, project.root)
    project.write_config(f"model: models/tiny.pkl\nreport:\n  explain: never\nserve:\n  token: {TOKEN}\n"
                         "  max_upload_mb: 0.2\n")
    port = free_port()
    log = open(project.root / "serve.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--config", str(project.config),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (project.root / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "scorer serve did not answer /healthz in 180 s"
            time.sleep(0.3)
        yield url, project
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Chromium and its driver: missing, they fail the tests in CI and skip them elsewhere."""
    what = "the page in a real browser (test_web.py checks it over HTTP)"
    return (tool_or_skip(("chromium", "chromium-browser"), "chromium", what),
            tool_or_skip(("chromedriver",), "chromium-driver", what))


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str], server: tuple[str, Project],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Headless Chromium, logged in to the server through its form, saving downloads to a known folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    binary, chromedriver = chromium
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(120)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        url, _ = server
        driver.get(f"{url}/try")
        # an unauthenticated browser gets the login form, and not the page it asked for
        assert driver.find_element(By.TAG_NAME, "h1").text == "Log in"
        assert [e.get_attribute("type") for e in driver.find_elements(By.ID, "token")] == ["password"]
        assert not driver.find_elements(By.ID, "creatives")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        _wait(driver, lambda: driver.find_elements(By.ID, "creatives"))
        yield driver
    finally:
        driver.quit()


def _wait(driver: object, found: object, seconds: float = 120) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds).until(lambda _: found())  # type: ignore[operator]


def _upload(driver: object, url: str, paths: list[Path]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/try")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "creatives").send_keys("\n".join(str(p) for p in paths))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "score").click()  # type: ignore[attr-defined]
    _wait(driver, lambda: driver.find_elements(By.ID, "results") or driver.find_elements(By.ID, "error"))  # type: ignore[attr-defined]


def test_two_uploads_rank_like_scorer_score_and_download_the_report(server: tuple[str, Project], browser: object,
                                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, project = server
    paths = [write_creative(tmp_path / "in" / "blue.jpg", CLASS_COLOURS["Low"], (80, 60)),
             write_creative(tmp_path / "in" / "red.png", CLASS_COLOURS["High"], (80, 60))]
    _upload(browser, url, paths)
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")  # type: ignore[attr-defined]
    shown = [(c.get_attribute("data-name"), c.get_attribute("data-class")) for c in cards]

    result = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--config", str(project.config)])
    assert result.exit_code == 0, result.output
    report = max(project.reports(), key=lambda p: p.stat().st_mtime)
    ws = load_workbook(report)["Ranking"]
    expected = [(row[1], row[2]) for row in ws.iter_rows(min_row=2, values_only=True)]
    assert shown == expected and shown[0][0] == "red.png"

    browser.find_element(By.ID, "download").click()  # type: ignore[attr-defined]
    folder: Path = browser.downloads  # type: ignore[attr-defined]
    # Chromium may create the final name before all the bytes are in: wait until the download is whole
    def downloaded_whole() -> bool:
        found = list(folder.glob("engagement-report-*.xlsx"))
        return bool(found) and not list(folder.glob("*.crdownload")) and all(zipfile.is_zipfile(p) for p in found)

    _wait(browser, downloaded_whole, 60)
    (downloaded,) = folder.glob("engagement-report-*.xlsx")
    served = load_workbook(io.BytesIO(downloaded.read_bytes()))
    assert served.sheetnames == ["Ranking", "Rejected", "Duplicates", "Model"]
    assert [(r[1], r[2]) for r in served["Ranking"].iter_rows(min_row=2, values_only=True)] == expected


def test_a_video_upload_shows_its_card_with_the_filmstrip_and_its_format(server: tuple[str, Project],
                                                                          browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    clip = reel(tmp_path / "in" / "clip.mp4", [(3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"])])
    browser.get(f"{url}/try")  # type: ignore[attr-defined]
    lead = browser.find_element(By.CLASS_NAME, "lead").text  # type: ignore[attr-defined]
    assert "images or videos" in lead and "Videos (MP4, MOV, WebM, Matroska) up to 900 s" in lead
    _upload(browser, url, [clip])
    card = browser.find_element(By.CSS_SELECTOR, '#gallery .card[data-name="clip.mp4"]')  # type: ignore[attr-defined]
    assert card.find_element(By.CLASS_NAME, "media").text == "video 0:06 · 9:16"
    strip = card.find_element(By.CSS_SELECTOR, "img.filmstrip")
    assert strip.is_displayed()
    # decoded by the browser: about six frames side by side, each above its caption; shown within the card
    width, height = browser.execute_script(  # type: ignore[attr-defined]
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", strip)
    assert width > 4 * height > 0
    assert 0 < strip.size["width"] <= card.size["width"] and strip.size["height"] > 0
    cover = card.find_element(By.CSS_SELECTOR, ".picture img")
    assert browser.execute_script("return arguments[0].naturalWidth", cover) > 0  # type: ignore[attr-defined]


def test_a_rejected_upload_shows_its_reason(server: tuple[str, Project], browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    _upload(browser, server[0], [broken])
    row = browser.find_element(By.CSS_SELECTOR, "#rejected tbody tr")  # type: ignore[attr-defined]
    assert row.find_element(By.CLASS_NAME, "name").text == "broken.jpg"
    assert row.find_element(By.CLASS_NAME, "reason").text == "file is incomplete or corrupt"


def test_an_oversized_upload_gets_a_clear_error(server: tuple[str, Project], browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 300_000)
    _upload(browser, server[0], [big])
    message = browser.find_element(By.ID, "error").text  # type: ignore[attr-defined]
    assert message.startswith("upload too large: 0.3 MB, limit 0.2 MB") and "serve.max_upload_mb" in message


def test_the_model_page_plots_the_track_record(server: tuple[str, Project], browser: object) -> None:
    from selenium.webdriver.common.by import By

    url, project = server
    sha = hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()
    (project.root / "state").mkdir(exist_ok=True)
    made = fill_history(project.root / "state", 30, per_batch=30, days=2, info=replace(INFO, sha256=sha))
    record = record_launches(project.root / "state", made[:24], [int(4000 + 100 * s.score) for s in made[:24]],
                             model=sha)
    browser.get(f"{url}/model")  # type: ignore[attr-defined]
    section = browser.find_element(By.ID, "track")  # type: ignore[attr-defined]
    assert f"Verdict: {record.verdict}" in section.text
    plot = section.find_element(By.CSS_SELECTOR, "svg.scatter")
    assert plot.is_displayed() and plot.size["width"] >= 400 and plot.size["height"] >= 200
    points = plot.find_elements(By.CSS_SELECTOR, "circle.launch")
    assert len(points) == 24 and all(p.is_displayed() for p in points), "one visible point per launched creative"
    # higher scores sit further right: the points are where the data puts them
    x = {float(p.get_attribute("cx")): p.find_element(By.TAG_NAME, "title").get_attribute("textContent")
         for p in points}
    lowest = min(record.launches, key=lambda k: k.creative.score)
    assert x[min(x)].startswith(f"{lowest.post}: score")


def test_the_server_refuses_requests_without_the_token(server: tuple[str, Project]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/try").status_code == 401
    assert httpx.get(f"{url}/reports").status_code == 401
    assert httpx.post(f"{url}/try", files={"creatives": ("a.png", b"x")}).status_code == 401
    assert httpx.get(f"{url}/try", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
