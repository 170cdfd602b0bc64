"""Finding files, and reproducing fastai's validation-time Resize pixel for pixel."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scorer.decoding.decode import ItemGeometry, decode_file, model_and_shown, resize_like_fastai
from scorer.decoding.vet import ImageLimits, find_candidates, is_ignored_name
from scorer.errors import ImageError
from tests.support.imagegen import creative, write_creative


@pytest.mark.parametrize("name", [".hidden.jpg", "~$deck.jpg", "a.jpg.part", "b.jpg.crdownload", "c.tmp", ".DS_Store"])
def test_hidden_and_temporary_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", ["a.jpg", "banner.png", "x.tmp.jpg", "part.jpg"])
def test_ordinary_names_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)


def test_candidates_walk_folders_skip_temp_names_and_sort_by_mtime_then_name(tmp_path: Path) -> None:
    for name, mtime in [("b.jpg", 100), ("a.jpg", 100), ("sub/c.png", 50), ("notes.pdf", 200),
                        (".hidden.jpg", 10), ("d.jpg.part", 10), (".cache/e.jpg", 10), ("a.txt", 10),
                        ("plan.csv", 10)]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    (tmp_path / "link.jpg").symlink_to(tmp_path / "a.jpg")
    os.utime(tmp_path / "link.jpg", (300, 300), follow_symlinks=False)
    found = [p.relative_to(tmp_path).as_posix() for p in find_candidates([tmp_path])]
    # Symlinks and non-images are kept so that they are rejected with a reason, not skipped; sidecars and
    # plans (a.txt, plan.csv: scorer.context.plan) go with their creatives and are never candidates.
    assert found == ["sub/c.png", "a.jpg", "b.jpg", "notes.pdf", "link.jpg"]


def _fastai_resize(im: Image.Image, method: str, size: tuple[int, int], pad_mode: str) -> np.ndarray:
    from fastai.vision.all import PILImage, Resize

    tfm = Resize((size[1], size[0]), method=method, pad_mode=pad_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(tfm(PILImage(im), split_idx=1))


def _fastai_rrc(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    from fastai.vision.all import PILImage, RandomResizedCrop

    tfm = RandomResizedCrop((size[1], size[0]), min_scale=0.35)
    return np.asarray(tfm(PILImage(im), split_idx=1))


@pytest.mark.parametrize("source", [(300, 200), (200, 300), (97, 61), (64, 64)])
@pytest.mark.parametrize(
    ("method", "pad_mode"), [("crop", "reflection"), ("squish", "reflection"), ("pad", "zeros"),
                             ("pad", "border"), ("pad", "reflection")],
)
@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_fit_matches_fastai_resize_exactly(source: tuple[int, int], method: str, pad_mode: str,
                                           size: tuple[int, int]) -> None:
    im = creative((200, 120, 40), source, seed=3)
    ours = np.asarray(resize_like_fastai(im, ItemGeometry(method, size, pad_mode)))
    theirs = _fastai_resize(im, method, size, pad_mode)
    assert ours.shape == theirs.shape == (size[1], size[0], 3)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("source", [(300, 200), (120, 160)])
def test_fit_matches_random_resized_crop_at_validation(source: tuple[int, int]) -> None:
    im = creative((20, 120, 240), source, seed=5)
    size = (32, 32)
    xtra = int(np.ceil(32 * 0.14 / 8) * 8)
    ours = np.asarray(resize_like_fastai(im, ItemGeometry("center", size, squish_to=(32 + xtra, 32 + xtra))))
    assert np.array_equal(ours, _fastai_rrc(im, size))


def test_jpeg_is_decoded_in_draft_mode_at_no_less_than_twice_the_target(tmp_path: Path) -> None:
    path = write_creative(tmp_path / "big.jpg", (10, 200, 30), size=(2000, 1500))
    seen: list[tuple[int, int]] = []
    real_resize = resize_like_fastai

    def spy(im: Image.Image, geometry: ItemGeometry, full_size: tuple[int, int], scale: int) -> Image.Image:
        seen.append((im.size, full_size, scale))
        return real_resize(im, geometry, full_size, scale)

    import scorer.decoding.decode as images

    images.resize_like_fastai, saved = spy, images.resize_like_fastai
    try:
        decoded = decode_file(path, ItemGeometry("crop", (224, 224)), ImageLimits(), 64)
    finally:
        images.resize_like_fastai = saved
    assert (decoded.width, decoded.height) == (2000, 1500)
    # 2000×1500 at 1/2 scale is 1000×750, the smallest DCT scale that keeps both sides ≥ 448
    assert seen == [((1000, 750), (2000, 1500), 2)]
    assert decoded.pixels is not None and decoded.pixels.shape == (224, 224, 3)
    assert decoded.thumbnail and Image.open(__import__("io").BytesIO(decoded.thumbnail)).size == (64, 48)


def test_decode_reports_facts_and_content_hash(tmp_path: Path) -> None:
    import hashlib

    path = write_creative(tmp_path / "a.png", (1, 2, 3), size=(80, 60))
    decoded = decode_file(path, ItemGeometry("squish", (32, 32)), ImageLimits(), 0)
    assert decoded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (decoded.width, decoded.height, decoded.format) == (80, 60, "PNG")
    assert decoded.file_bytes == path.stat().st_size
    assert decoded.thumbnail is None and decoded.notes == ()


def test_normalise_keeps_rgb_untouched() -> None:
    im = creative((5, 6, 7), (20, 10))
    notes: list[str] = []
    model, shown = model_and_shown(im, notes)
    assert np.array_equal(np.asarray(model), np.asarray(im)) and shown is model
    assert notes == []


def test_a_file_that_vanishes_is_rejected_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="disappeared"):
        decode_file(tmp_path / "gone.jpg", None, ImageLimits(), 0)
