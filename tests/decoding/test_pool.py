"""The decoding pool: a run abandoned while a worker is still decoding leaves nothing behind for the next run."""

from __future__ import annotations

import time
from pathlib import Path

from scorer.decoding.decode import Decoded
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from tests.support.imagegen import write_creative
from tests.support.poison import poison_decode


def test_a_run_stopped_mid_decode_hands_the_next_run_only_its_own_files(tmp_path: Path) -> None:
    slow = write_creative(tmp_path / "slow.jpg", (200, 40, 40), size=(40, 30))
    quick = [write_creative(tmp_path / f"quick-{n}.png", (40, 40, 200), size=(20 + n, 10)) for n in range(3)]
    with DecodePool(DecodeJob(None, ImageLimits(), 0, poison_decode), workers=1, timeout=30) as pool:
        for _ in range(3):
            began = time.monotonic()
            stopped = list(pool.imap([slow, *quick], stop=lambda began=began: time.monotonic() - began > 0.3))
            assert stopped == [], "stopped while the slow file was still being decoded"
            # the worker still owes the slow file's answer: the next run must not take it for one of its own
            for path, reply in pool.imap(quick):
                assert isinstance(reply, Decoded) and reply.width == 20 + int(path.stem[-1]), (path.name, reply)
