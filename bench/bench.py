"""Benchmark: scorer's engine against fastai's own inference, on the same files, in one run.

    python bench/bench.py            # full run (about 10 minutes on 2 cores)
    python bench/bench.py --quick    # smaller sets, for a smoke test

It generates photo-like creatives at real sizes and trains two resnet34 learners
(pretrained=False): a robust one, a few epochs on tinted photos (so confident that its top
probability rounds to 1.00; the run records it as saturation),
and a deliberately sensitive one, plain fastai code as a notebook would write it (Resize(224),
ImageNet Normalize, one epoch at a low learning rate: soft outputs). For each it measures
learn.predict in a loop, learn.get_preds on a test_dl, and scorer end to end (decode, vet,
infer, write the Excel report) with each runtime, in the decode mode `images.decode: auto`
chose for that learner (its decode check runs while warming up, on creatives not timed).
On ONNX Runtime it does so twice: with `precision: auto` (int8 where the learner's precision
check allows it; the check, too, finishes on the warm-up creatives) and with `precision: fp32`.
It also times the learner's forward pass alone in scorer's runtime, on creatives decoded
beforehand: the ceiling that no decoding trick can pass. It prints images/s, each figure's
ratio to get_preds, agreement with get_preds, the decode mode, and the peak RSS of
`scorer score` on 200 and 2,000 files. Machines are noisy: compare the ratios within one
run, not absolute figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo(w: int, h: int, seed: int) -> Image.Image:
    """A photo-like image: gradients, soft shapes, texture at several scales and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w
    yy /= h
    img = np.empty((h, w, 3), np.float32)
    base, angle = rng.uniform(40, 200, 3), rng.uniform(0, 2 * np.pi)
    for c in range(3):
        g = np.cos(angle) * xx + np.sin(angle) * yy
        img[..., c] = base[c] + rng.uniform(-60, 60) * g + rng.uniform(-30, 30) * np.sin(
            2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))
    for scale, amp in ((64, 18), (256, 10), (1024, 6)):
        sw, sh = max(2, w * scale // 4000), max(2, h * scale // 4000)
        noise = rng.normal(0, 1, (sh, sw, 3)) * 40 + 128
        up = Image.fromarray(noise.clip(0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        img += (np.asarray(up, np.float32) - 128) * amp / 40
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(6, 14)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.uniform(0.03, 0.25) * min(w, h))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(radius=max(1, w / 1500)))
    arr = np.asarray(im, np.float32) + rng.normal(0, 3.0 if w >= 3000 else 6.0, (h, w, 1))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_set(folder: Path, sizes: list[tuple[int, int]], count: int, seed: int) -> list[Path]:
    """`count` JPEGs (quality 90) cycling through `sizes`; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = folder / f"creative_{i:04d}_{w}x{h}.jpg"
        if not path.exists():
            photo(w, h, seed + i).save(path, quality=90)
        files.append(path)
    return files


def train_learner(work: Path) -> Path:
    """A resnet34 trained for a few epochs on colour-tinted photos: confident but not saturated."""
    out = work / "bench-resnet34.pkl"
    if out.exists():
        return out
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        RandomSplitter,
        Resize,
        accuracy,
        resnet34,
        set_seed,
        vision_learner,
    )

    train = work / "train"
    for i in range(90):
        c = i % 3
        arr = np.asarray(photo(320, 256, 5000 + i), np.float32)
        arr[..., c] += 70
        (train / "rgb"[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(train / "rgb"[c] / f"t{i:03d}.jpg", quality=90)
    set_seed(0)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda p: sorted(p.rglob("*.jpg")),
                    get_y=lambda p: {"r": "High", "g": "Neutral", "b": "Low"}[p.parent.name],
                    splitter=RandomSplitter(0.2, seed=0), item_tfms=Resize(224))
    dls = block.dataloaders(train, bs=16, num_workers=0)
    learn = vision_learner(dls, resnet34, pretrained=False, metrics=accuracy)
    learn.fit_one_cycle(3, 2e-3)
    learn.export(out)
    os.chmod(out, 0o644)
    return out


def train_sensitive_learner(work: Path) -> Path:
    """A soft resnet34 as plain fastai code makes it: ImageNet Normalize, one epoch at a low learning rate."""
    out = work / "bench-resnet34-sensitive.pkl"
    if out.exists():
        return out
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        imagenet_stats,
        resnet34,
        set_seed,
        vision_learner,
    )

    train = work / "train-noisy"
    train.mkdir(parents=True, exist_ok=True)
    items = []
    rng = np.random.default_rng(7)
    for i in range(60):
        c = i % 3
        arr = np.asarray(photo(320, 256, 9000 + i), np.float32) + rng.normal(0, 12, (256, 320, 3))
        arr[..., c] += 35  # a faint tint: the classes overlap, so the answers stay soft
        path = train / f"n{i:03d}.jpg"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        items.append((path, ("High", "Neutral", "Low")[c]))
    set_seed(0)
    dls = ImageDataLoaders.from_lists(train, [p for p, _ in items], [label for _, label in items], valid_pct=0.2,
                                      seed=0, item_tfms=Resize(224), batch_tfms=Normalize.from_stats(*imagenet_stats),
                                      bs=16, num_workers=0)
    learn = vision_learner(dls, resnet34, pretrained=False)
    learn.fit_one_cycle(1, 1e-4)
    learn.export(out)
    os.chmod(out, 0o644)
    return out


def timed(func):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def agreement(probs: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and |Δp| against get_preds."""
    diff = np.abs(probs - ref)
    return {"top1": float((probs.argmax(1) == ref.argmax(1)).mean()), "mean_abs_dp": float(diff.mean()),
            "max_abs_dp": float(diff.max()), "max_abs_dp_per_class": [round(float(d), 5) for d in diff.max(0)]}


def measure_speed(model: Path, files: list[Path], warm: list[Path], work: Path, label: str,
                  predict_n: int) -> list[dict[str, object]]:
    """Every path on the same files, in this process, with their agreement with get_preds."""
    from fastai.vision.all import load_learner

    from scorer.config import load_settings
    from scorer.score.run import score_paths
    from scorer.scoring.assembly import open_engine

    rows: list[dict[str, object]] = []
    learn = load_learner(model)
    vocab = list(learn.dls.vocab)
    order = [vocab.index(c) for c in ("Low", "Neutral", "High")]
    subset = files[:predict_n]
    learn.predict(subset[0])  # warm-up
    _, secs = timed(lambda: [learn.predict(f) for f in subset])
    rows.append({"set": label, "path": "fastai learn.predict loop", "n": len(subset), "ips": len(subset) / secs})
    dl = learn.dls.test_dl(files[:4], bs=32, num_workers=0)
    learn.get_preds(dl=dl)  # warm-up
    (ref, _), secs = timed(lambda: learn.get_preds(dl=learn.dls.test_dl(files, bs=32, num_workers=0)))
    ref = ref.numpy()[:, order]
    base = len(files) / secs
    rows.append({"set": label, "path": "fastai get_preds (test_dl, bs 32)", "n": len(files), "ips": base,
                 "saturation": {"mean_top_p": float(ref.max(1).mean()),
                                "share_inside_0.02_0.98": float(((ref > 0.02) & (ref < 0.98)).mean())}})
    folder = files[0].parent
    for runtime, precision in (("onnx", "auto"), ("onnx", "fp32"), ("torch", "fp32")):
        settings = load_settings(None, model=model, outbox=work / "outbox", state=work / "state")
        settings = dataclasses.replace(settings, runtime=runtime, precision=precision,
                                       classes=("Low", "Neutral", "High"))
        (work / "outbox").mkdir(exist_ok=True)
        engine = open_engine(settings)
        try:
            # warm-up, untimed: workers started, caches filled, and the decode check's first creatives seen
            score_paths(settings, warm, engine=engine)
            start = time.perf_counter()
            run = score_paths(settings, [folder], engine=engine)
            secs = time.perf_counter() - start
        finally:
            engine.close()
        if runtime == "onnx":  # the ceiling: the model alone, on creatives decoded beforehand, batch by batch
            rows.append(model_only(engine, settings, files, label))
        used = "int8" if engine.info.runtime.endswith("int8") else "fp32"
        got = {s.location: s.probs for s in run.result.scored}
        probs = np.array([got[str(f)] for f in files])
        plan = engine.check.geometry() if engine.check else None
        decode = "fastai path" if plan is None else "full size" if plan.max_scale == 1 else f"draft ≤1/{plan.max_scale}"
        rows.append({"set": label, "path": f"scorer end to end ({engine.info.runtime}, precision: {precision})",
                     "n": len(files), "ips": len(files) / secs, "decode": decode, "precision": used,
                     "decode_check": engine.info.decode, "precision_check": engine.info.precision,
                     **agreement(probs, ref)})
    for row in rows:
        row["ratio_to_get_preds"] = float(row["ips"]) / base  # type: ignore[arg-type]
    return rows


def model_only(engine, settings, files: list[Path], label: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The learner's forward pass alone, in scorer's runtime, on pixels decoded beforehand (untimed)."""
    from scorer.decoding.decode import decode_file
    from scorer.decoding.vet import ImageLimits

    model = engine.model
    limits = ImageLimits.from_settings(settings.images)
    pixels = np.stack([decode_file(f, model.geometry, limits, 0).pixels for f in files])
    batch = model.batch_size
    model.predict_with_embedding(pixels[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        model.predict_with_embedding(pixels[i:i + batch])
    secs = time.perf_counter() - start
    return {"set": label, "path": f"model forward only ({engine.info.runtime}, decoded beforehand)",
            "n": len(files), "ips": len(files) / secs}


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    def cmdline(p: int) -> bytes:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return b""

    # A child caught between fork and exec still shares its parent's pages (and shows them as its own
    # RSS): counting it would double the parent for that instant. It is counted once it runs its program.
    root_cmd = cmdline(pid)
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        if p != pid and cmdline(p) == root_cmd:
            continue
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        stack += children.get(p, [])
    return total


def peak_rss(model: Path, folder: Path, work: Path, first_load: bool = False) -> dict[str, float]:
    """Run `scorer score` on a folder and sample the process tree's RSS every 50 ms.

    `first_load`: the run starts from an empty state folder, so its peak includes what a new model
    costs once (its ONNX export, and the decode check on calibration images and on the first
    creatives, decoded both ways). Otherwise it shares a state folder that an earlier run filled,
    as every run after a model's first one does.
    """
    config = work / "mem-config.yaml"
    state = work / ("state-mem-first" if first_load else "state-mem")
    if first_load:
        shutil.rmtree(state, ignore_errors=True)
    config.write_text(f"model: {model}\noutbox: {work / 'outbox'}\nstate: {state}\n"
                      "classes: [Low, Neutral, High]\n")
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "score", str(folder), "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"scorer score failed:\n{err}")
    n = len(list(folder.iterdir()))
    kind = "mixed 1080×1350 + 4000×3000" if any("4000x3000" in p.name for p in folder.iterdir()) else "1080×1350"
    return {"files": n, "kind": kind, "peak_tree_rss_mib": peak / 1024,
            "wall_s_with_startup": time.perf_counter() - start, "first_load": first_load}


def machine() -> str:
    """A one-line description of this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    import onnxruntime
    import torch

    return (f"{os.cpu_count()} cores, {cpu} ({isa}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def markdown(rows: list[dict[str, object]], memory: list[dict[str, float]], about: str) -> str:
    """The results as the Markdown table bench/RESULTS.md shows."""
    lines = [f"Machine: {about}.", "",
             "| learner | set | path | decode (auto) | precision | images/s | × get_preds | top-1 agreement "
             "| mean \\|Δp\\| | max \\|Δp\\| |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        agree = (f"{r['top1']:.1%} | {r['mean_abs_dp']:.4f} | {r['max_abs_dp']:.4f}" if "top1" in r else "– | – | –")
        lines.append(f"| {r['learner']} | {r['set']} | {r['path']} | {r.get('decode', '–')} "
                     f"| {r.get('precision', '–')} | {r['ips']:.1f} "
                     f"| {r['ratio_to_get_preds']:.2f}× | {agree} |")
    lines += ["", "| files scored by `scorer score` | peak RSS (process tree) | wall time incl. start-up |",
              "| ---: | ---: | ---: |"]
    lines += [f"| {m['files']} {m.get('kind', '')}{', a new model (first load)' if m.get('first_load') else ''} "
              f"| {m['peak_tree_rss_mib']:.0f} MiB | {m['wall_s_with_startup']:.0f} s |" for m in memory]
    steady = [m for m in memory if not m.get("first_load")]
    if len(steady) == 2:
        growth = steady[1]["peak_tree_rss_mib"] / steady[0]["peak_tree_rss_mib"] - 1
        lines.append(f"\nPeak RSS for {steady[1]['files']} files is {growth:+.0%} against {steady[0]['files']}.")
    return "\n".join(lines)


def main() -> None:
    """Generate the sets, run every measurement, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sets, for a smoke test")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results", help="where sets and results go")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 200/2,000-file memory runs")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    n = 16 if args.quick else 64
    print("generating creatives and training the benchmark learner...", flush=True)
    mixed = make_set(work / ("mixed-q" if args.quick else "mixed"), [(1080, 1350), (4000, 3000)], n, 0)
    only1080 = make_set(work / ("1080-q" if args.quick else "1080"), [(1080, 1350)], n, 1000)
    warm = make_set(work / "warm", [(1080, 1350), (4000, 3000)], 20, 50000)
    model = train_learner(work)
    rows: list[dict[str, object]] = []
    for name, learner in (("robust", model), ("sensitive", train_sensitive_learner(work))):
        got = measure_speed(learner, mixed, warm, work, "mixed 1080×1350 + 4000×3000", 8 if args.quick else 16)
        got += measure_speed(learner, only1080, warm, work, "1080×1350 only", 8 if args.quick else 16)
        rows += [{"learner": name, **row} for row in got]
    memory = []
    if not args.skip_memory:
        memory.append(peak_rss(model, mixed[0].parent, work, first_load=True))  # camera-size files, new model
        shutil.rmtree(work / "state-mem", ignore_errors=True)
        peak_rss(model, warm[0].parent, work)  # fills the shared state folder, as a model's first run does
        for count in ((20, 200) if args.quick else (200, 2000)):
            folder = work / f"mem-{count}"
            make_set(folder, [(1080, 1350)], count, 20000)
            memory.append(peak_rss(model, folder, work, first_load=True))
            memory.append(peak_rss(model, folder, work))
    about = machine()
    table = markdown(rows, memory, about)
    print()
    print(table)
    (work / "bench.md").write_text(table + "\n")
    (work / "bench.json").write_text(json.dumps({"machine": about, "speed": rows, "memory": memory}, indent=2))
    print(f"\nsaved {work / 'bench.md'} and {work / 'bench.json'}")


if __name__ == "__main__":
    main()
