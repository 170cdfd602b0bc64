"""Benchmark: `scorer bulk` against `scorer score` on the same 2,000 creatives, in one run.

    python bench/bulk_bench.py             # 2,000 files (about 10 minutes on 2 cores)
    python bench/bulk_bench.py --files 200 # a smoke test

Three runs on the same files and learner (bench.py's resnet34; 400 generated 1080×1350 photos,
and mirrored, flipped, shifted and tinted variants of them up to 2,000 distinct files):
`scorer score`; `scorer bulk` with Ray started on this machine; and `scorer bulk` against a
two-node Ray cluster started here (`ray start --head --num-cpus=1`, then a second node with
`ray start --address ... --num-cpus=1`), stopped afterwards. Each prints its throughput,
the ratio to `scorer score`, and the peak RSS of its whole process tree (for the cluster:
the driver plus every process of both nodes). Answers are compared with `scorer score`'s
report, and the cluster run's placement is read from Ray's own task events in its GCS.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import make_set, train_learner, tree_rss_kb  # noqa: E402

BIN = Path(sys.executable).parent


def variant_set(folder: Path, base: list[Path], count: int) -> list[Path]:
    """`count` distinct JPEGs: the generated photos, then mirrored, flipped, shifted and tinted copies.

    Generating 2,000 photos takes half an hour on a busy 2-core machine; variants cost the
    scorer exactly as much to decode and score, and each has its own SHA-256.
    """
    from PIL import Image, ImageChops, ImageOps

    ops = [lambda im: im, ImageOps.mirror, ImageOps.flip, lambda im: ImageChops.offset(im, 137, 211),
           lambda im: im.point(lambda v: min(255, v + 12))]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"variant_{i:04d}.jpg"
        if not path.exists():
            with Image.open(base[i % len(base)]) as im:
                ops[(i // len(base)) % len(ops)](im.convert("RGB")).save(path, quality=90)
        files.append(path)
    return files


def matching_pids(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (the cluster's own temp folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def measured(cmd: list[str], env: dict[str, str], also: Callable[[], list[int]] = list) -> dict[str, float]:
    """Run a command; its wall time and the peak RSS of its process tree (plus `also`'s trees), every 50 ms."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(proc.pid) + sum(tree_rss_kb(p) for p in also()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return {"wall_s": wall, "peak_tree_rss_mib": peak / 1024}


def compare(report: Path, dest: Path, classes: list[str]) -> dict[str, float]:
    """Top-1 agreement and max |Δp| of a bulk DEST against `scorer score`'s report, file by file."""
    import pyarrow.dataset as pads
    from openpyxl import load_workbook

    ws = load_workbook(report, read_only=True)["Ranking"]
    header = [c.value for c in next(ws.iter_rows(max_row=1))]
    ref = {r[header.index("Location")]: [r[header.index(f"P({c})")] for c in classes]
           for r in ws.iter_rows(min_row=2, values_only=True)}
    rows = pads.dataset(dest, format="parquet").to_table().to_pylist()
    scored = {r["path"]: [r[f"p_{c}"] for c in classes] for r in rows if r["status"] == "scored"}
    assert len(rows) == len({r["path"] for r in rows}), "a path has two rows"
    assert scored.keys() == ref.keys(), "bulk and score decided different files"
    dp = max(abs(a - b) for k in ref for a, b in zip(ref[k], scored[k], strict=True))
    same = sum(max(range(3), key=ref[k].__getitem__) == max(range(3), key=scored[k].__getitem__) for k in ref)
    return {"rows": len(rows), "top1_agreement": same / len(ref), "max_abs_dp": dp}


class Cluster:
    """A two-node Ray cluster on this machine: its own temp folder, port and auth token; stopped by pid."""

    def __init__(self, work: Path) -> None:
        self.temp = Path(f"/tmp/scorer-bench-ray-{os.getpid()}")  # short: Ray's socket paths have a length limit
        self.temp.mkdir(exist_ok=True)
        token = self.temp / "auth_token"
        token.write_text(secrets.token_hex(32))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}

    def start(self) -> None:
        """The head, then a worker node, one CPU each."""
        common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        self._ray(["start", "--head", f"--port={self.port}", f"--temp-dir={self.temp}", "--include-dashboard=false",
                   *common])
        self._ray(["start", f"--address={self.address}", *common])

    def _ray(self, args: list[str]) -> None:
        subprocess.run([str(BIN / "ray"), *args], env=self.env, check=True, capture_output=True, timeout=300)

    def pids(self) -> list[int]:
        """Every process of both nodes (their command lines name the cluster's temp folder)."""
        return matching_pids(str(self.temp))

    def placement(self) -> dict[str, object]:
        """Which node ran each of the job's tasks and actors, from the task events in Ray's GCS."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("RAY_")})  # read when ray loads
        import ray
        from ray._private.state import state

        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            nodes = {n["NodeID"]: f"{'head' if n['Resources'].get('node:__internal_head__') else 'worker'} node"
                     for n in ray.nodes() if n["Alive"]}
            # A task's name and the node it ran on may arrive in separate events: join them by task and attempt.
            names: dict[tuple[bytes, int], str] = {}
            ran_on: dict[tuple[bytes, int], str] = {}
            for event in state._get_all_task_events():
                key = (event.task_id, event.attempt_number)
                if event.task_info.name:
                    names[key] = event.task_info.name
                node = event.state_updates.node_id or event.task_info.node_id
                if node:
                    ran_on[key] = node.hex()
        finally:
            ray.shutdown()
        where = Counter((names[k].split(".")[0], nodes.get(n, n[:8])) for k, n in ran_on.items() if k in names)
        return {"nodes": len(nodes), "tasks": {f"{name} on {node}": n for (name, node), n in sorted(where.items())}}

    def stop(self) -> None:
        """SIGTERM every process of the cluster, then SIGKILL what is left after 10 s; remove its temp folder."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


def main() -> None:
    """Generate or reuse the set and learner, run the three measurements, print and save them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="creatives in the set")
    parser.add_argument("--photos", type=int, default=400, help="generated photos the set is varied from")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results", help="where sets and results go")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print("generating creatives and training the benchmark learner (reused when there)...", flush=True)
    model = train_learner(work)
    base = make_set(work / "bulk-base", [(1080, 1350)], min(args.files, args.photos), 20000)
    folder = work / f"bulk-{args.files}"
    variant_set(folder, base, args.files)
    config = work / "bulk-config.yaml"
    config.write_text(f"model: {model}\noutbox: {work / 'outbox'}\nstate: {work / 'state'}\n"
                      "classes: [Low, Neutral, High]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    scorer = [sys.executable, "-m", "scorer"]
    runs: dict[str, dict[str, object]] = {}
    (work / "outbox").mkdir(exist_ok=True)
    before = set((work / "outbox").glob("*.xlsx"))
    runs["scorer score"] = measured([*scorer, "score", str(folder), "--config", str(config)], env)
    (report,) = set((work / "outbox").glob("*.xlsx")) - before
    dest = work / f"bulk-local-{os.getpid()}"
    runs["scorer bulk, Ray on this machine"] = measured(
        [*scorer, "bulk", str(folder), "--out", str(dest), "--config", str(config)], env)
    runs["scorer bulk, Ray on this machine"].update(compare(report, dest, ["Low", "Neutral", "High"]))

    cluster = Cluster(work)
    try:
        cluster.start()
        dest = work / f"bulk-cluster-{os.getpid()}"
        key = "scorer bulk, two-node cluster (1 CPU each)"
        runs[key] = measured([*scorer, "bulk", str(folder), "--out", str(dest), "--config", str(config),
                              "--address", cluster.address], cluster.env, cluster.pids)
        runs[key].update(compare(report, dest, ["Low", "Neutral", "High"]))
        runs[key]["placement"] = cluster.placement()
    finally:
        cluster.stop()
    print(summary(runs, args.files))
    (work / "bulk_bench.json").write_text(json.dumps(runs, indent=2))
    print(f"\nsaved {work / 'bulk_bench.json'}")


def summary(runs: dict[str, dict[str, object]], files: int) -> str:
    """The Markdown table bench/RESULTS.md shows, then the cluster's placement."""
    base = files / float(runs["scorer score"]["wall_s"])  # type: ignore[arg-type]
    lines = [f"{files} creatives at 1080×1350, resnet34 at 224 px; wall time includes start-up.", "",
             "| run | images/s | × `scorer score` | peak RSS (process tree) | top-1 agreement | max \\|Δp\\| |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in runs.items():
        ips = files / float(r["wall_s"])  # type: ignore[arg-type]
        agree = f"{r['top1_agreement']:.1%} | {r['max_abs_dp']:.1e}" if "max_abs_dp" in r else "– | –"
        lines.append(f"| {name} | {ips:.1f} | {ips / base:.2f}× | {r['peak_tree_rss_mib']:.0f} MiB | {agree} |")
    for name, r in runs.items():
        if "placement" in r:
            lines += ["", f"Placement in '{name}', from Ray's task events:", "```",
                      json.dumps(r["placement"], indent=2), "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
