"""The fast start: what a learner's first start keeps, numpy's batch preparation, and a record read back whole or
not at all (opening a learner from it: tests/scoring/test_loading.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer.model.fast_start import Preprocessing, fast_start_path, read_fast_start, softmax


def test_numpy_prepares_batches_as_fastai_does_with_normalize_and_refuses_other_transforms(tiny_learner: Path) -> None:
    from fastai.vision.all import Brightness, Normalize, Transform, imagenet_stats

    from scorer.model.learner import batch_transform, is_softmax, load, plain_preprocessing

    learn = load(tiny_learner, tiny_learner.read_bytes())
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    plain = plain_preprocessing(learn, pixels)
    assert plain == Preprocessing(255.0)
    assert is_softmax(learn)
    logits = np.array([[1.0, 2.0, 3.0], [-50.0, 0.0, 50.0]], dtype=np.float32)
    assert np.allclose(softmax(logits).sum(axis=1), 1) and softmax(logits).argmax(axis=1).tolist() == [2, 2]

    pipeline = learn.dls.valid.after_batch
    pipeline.add(Normalize.from_stats(*imagenet_stats))  # as a pretrained learner normalises
    pipeline.add(Brightness(p=1.0))  # an augmentation: training only, so not part of scoring
    plain = plain_preprocessing(learn, pixels)
    assert plain is not None and plain.mean is not None and plain.std is not None
    assert np.array_equal(plain.apply(pixels), batch_transform(learn)(pixels))

    class Invert(Transform):  # a transform the fast start cannot describe
        order = 100

        def encodes(self, x: object) -> object:
            return 1 - x  # type: ignore[operator]

    pipeline.add(Invert())
    assert plain_preprocessing(learn, pixels) is None


def test_a_record_is_read_back_whole_or_not_at_all(tmp_path: Path) -> None:
    assert read_fast_start(tmp_path, "ab" * 32) is None
    path = fast_start_path(tmp_path, "ab" * 32)
    path.parent.mkdir(parents=True)
    for text in ("{", "[]", '{"version": 1}', '{"version": 99, "vocab": ["a", "b"]}'):
        path.write_text(text)
        assert read_fast_start(tmp_path, "ab" * 32) is None
