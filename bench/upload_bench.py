"""Benchmark `scorer serve` under an upload flood: memory, how fast the busy ones are refused, /healthz meanwhile.

    python bench/upload_bench.py                            # trains the demo model in a temporary folder first
    python bench/upload_bench.py --config proj/config.yaml  # or uses a project's model

It starts `scorer serve` on a free loopback port and sends 50 uploads at once, each of 100
distinct ~1 MB JPEGs (about 100 MB a body), over raw sockets so that each client reads the
answer while it is still sending, each at its share of a shared link (--link-mbit, default a
gigabit LAN; loopback itself would let 50 clients spin the 2 cores). Meanwhile another thread
asks /healthz every 20 ms and another samples the server's resident memory (its process and its children) every 50 ms.
It prints the answers, the server's RSS peak (target < 1.5 GiB), the time from the end of a
refused upload's headers to its answer (target < 100 ms) and /healthz's p99 (target < 50 ms).
"""

from __future__ import annotations

import argparse
import io
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's scorer, in the subprocesses too
UPLOADS, FILES = 50, 100
BOUNDARY = "scorer-upload-bench"


def _jpeg_about_1mb() -> bytes:
    """One noisy JPEG of about 1 MB (noise keeps the encoder from shrinking it)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1010, 1010, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=92)
    return out.getvalue()


def _parts(jpeg: bytes, upload: int) -> Iterator[bytes | memoryview]:
    """The multipart body's pieces, made as they are sent: each file gets a JPEG comment with its own number,
    so none is a duplicate."""
    for n in range(FILES):
        comment = f"upload {upload:02d} file {n:03d}".encode()
        yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"creatives\"; "
               f"filename=\"creative-{upload:02d}-{n:03d}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        yield jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        yield memoryview(jpeg)[2:]
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def _blocks(jpeg: bytes, upload: int) -> Iterator[bytes | memoryview]:
    for part in _parts(jpeg, upload):
        view = memoryview(part)
        for at in range(0, len(view), 1 << 16):
            yield view[at:at + (1 << 16)]


def _upload(port: int, jpeg: bytes, upload: int, rate: float) -> tuple[int, float | None]:
    """Send one upload at `rate` bytes/s, reading while sending; its status and, when refused early, the
    seconds from its headers to the answer."""
    length = sum(len(p) for p in _parts(jpeg, upload))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST /try HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {length}\r\n"
                 f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode())
    after_headers = time.perf_counter()
    sock.setblocking(False)
    blocks = _blocks(jpeg, upload)
    pending: bytes | memoryview = b""
    answer = b""
    sent_all, sent = False, 0
    try:
        while b"\r\n" not in answer:
            ahead = sent / rate - (time.perf_counter() - after_headers)  # a link's pace, not loopback's
            wait = sent_all or ahead > 0
            readable, writable, _ = select.select([sock], [] if wait else [sock], [], ahead if ahead > 0 else 900)
            if readable:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            elif writable:
                pending = pending or next(blocks, b"")
                if not pending:
                    sent_all = True
                    continue
                try:
                    n = sock.send(pending)
                    pending, sent = pending[n:], sent + n
                except (BlockingIOError, InterruptedError):
                    pass
        took = time.perf_counter() - after_headers
        status = int(answer.split(b" ", 2)[1]) if answer else 0
        return status, (None if sent_all else took)
    finally:
        sock.close()


def _rss_tree(pid: int) -> int:
    """Resident bytes of a process and its children (the decode workers).

    A child that still runs the server's own command line has been forked but not yet exec'd: its pages are
    the server's (shared, or the same memory under vfork), so it is not counted twice.
    """
    total, todo, server = 0, [pid], Path(f"/proc/{pid}/cmdline").read_bytes()
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            if p == pid or Path(f"/proc/{p}/cmdline").read_bytes() != server:
                total += int(next(line.split()[1] for line in status.splitlines()
                                  if line.startswith("VmRSS"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def _sample(pid: int, stop: threading.Event, peaks: list[int]) -> None:
    while not stop.is_set():
        peaks.append(_rss_tree(pid))
        time.sleep(0.05)


def _poll(url: str, stop: threading.Event, times: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            times.append(time.perf_counter() - started)
            time.sleep(0.02)


def _start(config: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--config", str(config), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        assert server.poll() is None, (work / "serve.log").read_text()
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("scorer serve did not answer /healthz in 5 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--link-mbit", type=float, default=1000.0,
                        help="the network the uploads share, in Mbit/s (default 1000: a gigabit LAN)")
    args = parser.parse_args()
    rate = args.link_mbit * 1e6 / 8 / UPLOADS
    work = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    config = args.config
    if config is None:
        (work / "outbox").mkdir()
        config = work / "config.yaml"
        config.write_text("model: models/demo.pkl\n")
        print("training the demo model ...", flush=True)
        subprocess.run([sys.executable, "-m", "scorer", "demo", "--config", str(config)], cwd=work, check=True,
                       stdout=subprocess.DEVNULL, env=ENV)
    jpeg = _jpeg_about_1mb()
    server, url = _start(config, work)
    try:
        port = int(url.rsplit(":", 1)[1])
        idle = _rss_tree(server.pid)
        stop = threading.Event()
        peaks: list[int] = []
        times: list[float] = []
        watchers = [threading.Thread(target=_sample, args=(server.pid, stop, peaks)),
                    threading.Thread(target=_poll, args=(url, stop, times))]
        for w in watchers:
            w.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(UPLOADS) as pool:
            results = list(pool.map(lambda n: _upload(port, jpeg, n, rate), range(UPLOADS)))
        took = time.perf_counter() - started
        time.sleep(1)
        stop.set()
        for w in watchers:
            w.join()
        hwm = next(line for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM"))
        _report(results, idle, max(peaks), hwm, times, took, len(jpeg))
    finally:
        server.terminate()
        server.wait(timeout=60)


def _report(results: list[tuple[int, float | None]], idle: int, peak: int, hwm: str, times: list[float],
            took: float, jpeg_bytes: int) -> None:
    statuses = sorted({s for s, _ in results})
    counts = ", ".join(f"{sum(1 for r, _ in results if r == s)} x {s}" for s in statuses)
    refused = sorted(t for s, t in results if s == 503 and t is not None)
    gib = 2**30
    print(f"{UPLOADS} uploads of {FILES} JPEGs of {jpeg_bytes / 1e6:.2f} MB each, all sent at once; "
          f"done in {took:.1f} s")
    print(f"answers: {counts}")
    print(f"server RSS (process and decode workers): idle {idle / gib:.2f} GiB, peak {peak / gib:.2f} GiB "
          f"(target < 1.5 GiB); main process {hwm.split(':')[1].strip()} at its highest")
    if refused:
        print(f"refused as busy: {len(refused)}, answered after their headers in p50 "
              f"{statistics.median(refused) * 1000:.1f} ms, max {max(refused) * 1000:.1f} ms (target < 100 ms)")
    q = statistics.quantiles(times, n=100)
    print(f"/healthz asked {len(times)} times meanwhile: median {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
          f"worst {max(times) * 1000:.0f} ms (target p99 < 50 ms)")


if __name__ == "__main__":
    main()
