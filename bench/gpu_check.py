"""GPU check: the CUDA path is used, and its probabilities match the CPU's.

    python bench/gpu_check.py [--n 48] [--work DIR]

Trains a small resnet34 learner (pretrained=False), then scores the same generated
creatives with `device: cpu` (ONNX Runtime), `device: cuda` and `device: cuda` with
`precision: fp16`, and with fastai's get_preds on the GPU. Prints one JSON object.
Without a GPU it says so and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import make_set, train_learner  # noqa: E402


def main() -> None:
    """Score one set of creatives on CPU and GPU and compare."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "gpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "message": "no CUDA GPU visible to PyTorch"}))
        raise SystemExit(1)
    from fastai.vision.all import load_learner

    from scorer.config import load_settings
    from scorer.score.run import score_paths
    from scorer.scoring.assembly import open_engine

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    files = make_set(work / "set", [(1080, 1350), (4000, 3000)], args.n, 0)
    model = train_learner(work)
    out: dict[str, object] = {"cuda": True, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                              "files": len(files)}
    probs: dict[str, np.ndarray] = {}
    (work / "outbox").mkdir(exist_ok=True)
    base = load_settings(None, model=model, outbox=work / "outbox", state=work / "state")
    base = dataclasses.replace(base, classes=("Low", "Neutral", "High"))
    for name, overrides in (("cpu-onnx", {"device": "cpu", "runtime": "onnx"}),
                            ("cuda", {"device": "cuda"}), ("cuda-half", {"device": "cuda", "precision": "fp16"})):
        settings = dataclasses.replace(base, **overrides)
        engine = open_engine(settings)
        try:
            score_paths(settings, files[:2], engine=engine)  # warm-up
            start = time.perf_counter()
            run = score_paths(settings, [files[0].parent], engine=engine)
            secs = time.perf_counter() - start
        finally:
            engine.close()
        got = {s.location: s.probs for s in run.result.scored}
        probs[name] = np.array([got[str(f)] for f in files])
        out[name] = {"device": engine.info.device, "runtime": engine.info.runtime,
                     "images_per_s": round(len(files) / secs, 1)}
    learn = load_learner(model, cpu=False)
    vocab = list(learn.dls.vocab)
    learn.get_preds(dl=learn.dls.test_dl(files[:2], num_workers=0))
    start = time.perf_counter()
    ref, _ = learn.get_preds(dl=learn.dls.test_dl(files, bs=32, num_workers=0))
    out["fastai get_preds on cuda, images_per_s"] = round(len(files) / (time.perf_counter() - start), 1)
    ref = ref.cpu().numpy()[:, [vocab.index(c) for c in ("Low", "Neutral", "High")]]
    for name in ("cuda", "cuda-half"):
        diff = np.abs(probs[name] - probs["cpu-onnx"])
        out[f"{name} vs cpu"] = {"top1": float((probs[name].argmax(1) == probs["cpu-onnx"].argmax(1)).mean()),
                                 "max_abs_dp": float(diff.max()), "mean_abs_dp": float(diff.mean())}
    diff = np.abs(probs["cuda"] - ref)
    out["cuda vs fastai get_preds"] = {"top1": float((probs["cuda"].argmax(1) == ref.argmax(1)).mean()),
                                       "max_abs_dp": float(diff.max()), "mean_abs_dp": float(diff.mean())}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
