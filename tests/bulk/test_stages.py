"""Bulk's decoding tasks, called as Ray calls them: a file they cannot take is rejected with the reason that the
decoding workers of `scorer score` give for it (scorer.decoding.reasons)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scorer.bulk.stages import REJECTED, DecodeStage
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from tests.support.imagegen import CLASS_COLOURS, write_creative

GEOMETRY = ItemGeometry("squish", (16, 16))


def _bug(*args: object) -> Decoded:
    raise KeyError("a decoder bug")


def _hungry(*args: object) -> Decoded:
    raise MemoryError


@pytest.mark.parametrize(("decode", "reason"), [(_bug, reasons.undecodable(KeyError("a decoder bug"))),
                                                (_hungry, reasons.out_of_memory())], ids=["bug", "memory"])
def test_a_file_the_decoder_cannot_take_is_rejected_with_the_reason_scorer_score_gives(
        tmp_path: Path, decode: Callable[..., Decoded], reason: str) -> None:
    path = write_creative(tmp_path / "a.png", CLASS_COLOURS["High"])
    with DecodePool(DecodeJob(GEOMETRY, ImageLimits(), 0, decode), workers=1, timeout=20) as pool:
        ((_, error),) = pool.imap([path])
    decided = DecodeStage(GEOMETRY, ImageLimits(), decode=decode)({"path": np.array([str(path)], dtype=object)})
    assert (decided["status"][0], decided["reason"][0]) == (REJECTED, str(error)) == (REJECTED, reason)
