"""Benchmark `scorer serve`: the page agrees with `scorer score`, and /healthz stays fast while it scores.

    python bench/serve_bench.py                          # trains the demo model in a temporary folder first
    python bench/serve_bench.py --config proj/config.yaml  # or uses a project's model

It starts `scorer serve` on a free loopback port, then:
1. uploads 20 generated creatives through the Try form, downloads the page's .xlsx and compares its
   probabilities with `scorer score`'s report on the same files (max |Δp|, target <= 1e-6);
2. uploads 100 creatives (1080×1350 JPEGs) in one request while another thread asks /healthz every
   50 ms, and prints the worst, median and 99th-percentile answer times (target: worst < 1 s).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from openpyxl import load_workbook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorer.demo import PALETTES, creative  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's scorer, in the subprocesses too


def _scorer(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "scorer", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=ENV)


def _creatives(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    colours = list(PALETTES.values())
    paths = []
    for i in range(n):
        path = folder / f"creative-{i:03d}.jpg"
        creative(colours[i % 3], size, rng).save(path, quality=90)
        paths.append(path)
    return paths


def _ranking(xlsx: bytes) -> dict[str, list[float]]:
    ws = load_workbook(io.BytesIO(xlsx))["Ranking"]
    header = [c.value for c in ws[1]]
    columns = [i for i, h in enumerate(header) if str(h).startswith("P(")]
    return {row[1]: [float(row[i]) for i in columns] for row in ws.iter_rows(min_row=2, values_only=True)}


def _upload(client: httpx.Client, paths: list[Path]) -> bytes:
    files = [("creatives", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    answer = client.post("/try", files=files, timeout=900)
    assert answer.status_code == 303, answer.text[-500:]
    return client.get(answer.headers["location"] + "/report.xlsx").content


def _poll(client: httpx.Client, stop: threading.Event, times: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        assert client.get("/healthz", timeout=30).status_code == 200
        times.append(time.perf_counter() - started)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    config = args.config
    if config is None:
        (work / "outbox").mkdir()
        config = work / "config.yaml"
        config.write_text("model: models/demo.pkl\n")
        print("training the demo model ...", flush=True)
        _scorer("demo", "--config", str(config), cwd=work)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--config", str(config), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}")
        for _ in range(600):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        twenty = _creatives(work / "twenty", 20, (320, 400), seed=1)
        page = _ranking(_upload(client, twenty))
        _scorer("score", str(work / "twenty"), "--config", str(config), "--out", str(work), cwd=work)
        (report,) = work.glob("engagement-report-*.xlsx")
        cli = _ranking(report.read_bytes())
        assert sorted(page) == sorted(cli)
        worst_dp = max(abs(a - b) for name in cli for a, b in zip(page[name], cli[name], strict=True))
        print(f"20 creatives, page vs scorer score: max |dp| = {worst_dp:.2e} (target <= 1e-6)")

        hundred = _creatives(work / "hundred", 100, (1080, 1350), seed=2)
        times: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=_poll, args=(httpx.Client(base_url=client.base_url), stop, times))
        poller.start()
        started = time.perf_counter()
        scored = _ranking(_upload(client, hundred))
        took = time.perf_counter() - started
        stop.set()
        poller.join()
        assert len(scored) == 100
        q = statistics.quantiles(times, n=100)
        print(f"100 uploads of 1080x1350 JPEGs scored in {took:.1f} s; /healthz asked {len(times)} times meanwhile: "
              f"worst {max(times) * 1000:.0f} ms, median {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.0f} ms; "
              f"worst / 1 s target = {max(times):.2f}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
