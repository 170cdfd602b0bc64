"""`scorer bulk` when things go wrong, on a real local Ray: a tampered model, a stopped driver, a damaged DEST,
a worker folder planted by someone else, a video that crashes or hangs FFmpeg."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer.bulk.output import PART_GLOB, schema
from scorer.bulk.pipeline import run_bulk
from scorer.bulk.shipping import ShippedModel, pack_model
from scorer.decoding import reasons
from scorer.errors import ModelError
from scorer.settings import Settings
from tests.support.helpers import ROOT, Project, bulk_settings, campaign, parquet_rows
from tests.support.imagegen import CLASS_COLOURS
from tests.support.poison import poison_video_decode
from tests.support.videogen import reel

# `scorer bulk` itself, with one test hook: the content named in GATE is held back in decoding (tests.support.helpers'
# gated_decode) and each count of newly decided inputs is appended to DECIDED once the driver has taken them.
GATED_CLI = """
import functools, sys
from pathlib import Path
import scorer.bulk.pipeline as pipeline
from tests.support.helpers import gated_decode
gate, decided, run_bulk = Path(sys.argv[1]), Path(sys.argv[2]), pipeline.run_bulk
def gated(*args, progress, **kwargs):
    def tell(n):
        progress(n)
        with decided.open("a") as f:
            f.write(f"{n}\\n")
    return run_bulk(*args, decode=functools.partial(gated_decode, gate), progress=tell, **kwargs)
pipeline.run_bulk, pipeline.PATHS_PER_BLOCK = gated, 2
del sys.argv[1:3]
from scorer.cli import run
run()
"""

# Each project starts as the tiny learner's first start leaves it, so a driver or an actor that has the
# fast start opens the export without fastai (bulk draws no Grad-CAM).
pytestmark = pytest.mark.usefixtures("watched")


def _cli(args: list[str], *, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """`scorer ARGS` in a subprocess run from the repository, as a user would start it."""
    command = prefix or ["-m", "scorer"]
    return subprocess.Popen([sys.executable, *command, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_workers_refuse_a_tampered_model_whose_own_sha256_was_recomputed(
        local_ray: str, project: Project, renamed_learner: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    campaign(project.inbox, range(1))
    pin = hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()
    project.write_config(f"model: models/tiny.pkl\nmodel_sha256: {pin}\n")
    other = renamed_learner.read_bytes()  # a real learner, just not the pinned one

    def tampered(settings: Settings, sha256: str) -> ShippedModel:
        """What reaches the workers when the object is altered on its way."""
        return dataclasses.replace(pack_model(settings, sha256), learner=other)

    monkeypatch.setattr("scorer.bulk.pipeline.pack_model", tampered)
    with pytest.raises(ModelError) as caught:
        run_bulk(bulk_settings(project), [str(project.inbox)], tmp_path / "dest")
    message = str(caught.value)
    assert "\n" not in message
    assert (f"the model shipped to this worker has changed since it was pinned (sha256 "
            f"{hashlib.sha256(other).hexdigest()[:12]}…, pinned {pin[:12]}… in model_sha256 in config.yaml)") in message
    assert not parquet_rows(tmp_path / "dest")


def _decided(path: Path) -> int:
    return sum(int(n) for n in path.read_text().split()) if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "flush_rows", "may_lose"), [(signal.SIGINT, None, 0), (signal.SIGKILL, 2, 1)],
                         ids=["ctrl-c", "hard-kill"])
def test_a_stopped_driver_keeps_its_decided_rows_and_resume_finishes_the_rest(
        local_ray: str, project: Project, tmp_path: Path, sig: signal.Signals, flush_rows: int | None,
        may_lose: int) -> None:
    files = campaign(project.inbox, range(4))
    bulk = "" if flush_rows is None else f"bulk:\n  flush_rows: {flush_rows}\n"  # None: the default, 1,000
    project.write_config(f"model: models/tiny.pkl\nbatch_size: 2\n{bulk}")
    gate, decided, dest = tmp_path / "gate", tmp_path / "decided", tmp_path / "dest"
    gate.write_text(hashlib.sha256(files[-1].read_bytes()).hexdigest())  # the newest file: in the last block
    args = ["bulk", str(project.inbox), "--out", str(dest), "--config", str(project.config), "--address", local_ray]
    driver = _cli([str(gate), str(decided), *args], prefix=["-c", GATED_CLI])
    deadline = time.monotonic() + 240
    while _decided(decided) < len(files) // 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert driver.poll() is None and _decided(decided) >= len(files) // 2, "the driver decided half the files"
    driver.send_signal(sig)  # mid-run: the held file cannot have been decided
    driver.communicate(timeout=120)
    gate.unlink()

    rows = parquet_rows(dest)
    assert len(rows) >= _decided(decided) - may_lose
    assert all(pq.read_metadata(part).num_rows <= (flush_rows or 1000) for part in dest.glob(PART_GLOB))
    leftover = dest / ".~part-killed-00007.parquet.4242.tmp"  # what a kill in the middle of writing a part leaves
    leftover.write_bytes(b"PAR1 half a part")
    resumed = _cli([*args, "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not leftover.exists()
    assert sorted(str(r["path"]) for r in parquet_rows(dest)) == sorted(map(str, files))  # each input exactly once


def _real_part(dest: Path, project: Project) -> Path:
    """A part as `scorer bulk` writes it (the documented schema), for one of the project's creatives."""
    creative = campaign(project.inbox, range(1))[0]
    row = {"path": str(creative), "sha256": "ab" * 32, "status": "rejected", "reason": "test",
           "model_sha256": hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()}
    dest.mkdir()
    part = dest / "part-20250101-000000-abcdef-00000.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=schema(("Low", "Neutral", "High"))), part)
    return part


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_part_stops_resume_with_one_line_naming_it_and_the_fix(
        local_ray: str, project: Project, tmp_path: Path, damage: str) -> None:
    part = _real_part(tmp_path / "dest", project)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    proc = _cli(["bulk", str(project.inbox), "--out", str(tmp_path / "dest"), "--resume", "--config",
                 str(project.config), "--address", local_ray])
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {part} is damaged: delete it and run again with --resume, "
                                            "which scores its inputs again")  # after the start-up log lines


def _plant(root: Path, how: str, elsewhere: Path) -> None:
    """Take the worker folder's fixed name before bulk does, as another user (or a careless one) could."""
    if how == "link":
        root.symlink_to(elsewhere, target_is_directory=True)
        return
    root.mkdir()
    if how == "other-owner":
        os.chown(root, 65534, 65534)  # nobody; the tests run as root, whom the folder's mode would not stop
        root.chmod(0o700)
    else:
        root.chmod(0o777)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["other-owner", "link", "open-to-all"])
def test_a_worker_folder_planted_first_is_never_written_and_bulk_still_scores(
        local_ray: str, worker_tmp: Path, project: Project, tmp_path: Path, how: str) -> None:
    files = campaign(project.inbox, range(1))
    root = worker_tmp / f"scorer-bulk-{os.getuid()}"
    if root.is_symlink() or root.is_file():
        root.unlink()
    shutil.rmtree(root, ignore_errors=True)  # made, as ours, by this module's earlier runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(root, how, elsewhere)
    before = set(worker_tmp.iterdir())

    run = run_bulk(bulk_settings(project), [str(project.inbox)], tmp_path / "dest")

    assert run.counts["scored"] == len(files)
    assert not any(elsewhere.iterdir()) and (how == "link" or not any(root.iterdir()))
    fresh = [p for p in set(worker_tmp.iterdir()) - before if p.name.startswith("scorer-bulk-")]
    assert fresh, "the workers kept the model in a fresh folder of their own"
    for folder in fresh:
        st = os.lstat(folder)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
        assert list(folder.glob("*/tiny.pkl")), "the model was written there"
        assert list(folder.glob("*/state/fast-start/*.json")), "with the driver's fast start: no fastai there"


@pytest.mark.slow
def test_a_video_that_crashes_or_hangs_ffmpeg_costs_its_row_and_the_job_goes_on(
        local_ray: str, project: Project, tmp_path: Path) -> None:
    """poison_video_decode segfaults on a name with 'crash' and never returns on one with 'hang': in the Ray task
    itself, either would have it started again without end; in its decoding worker, each costs its own row."""
    stills = campaign(project.inbox, range(1))
    hook_red = [(3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"])]
    for name in ("crash.mp4", "hang.mp4", "clip.mp4"):
        reel(project.inbox / name, hook_red)
    project.write_config("model: models/tiny.pkl\nvideo:\n  timeout: 3\n")
    run = run_bulk(bulk_settings(project), [str(project.inbox)], tmp_path / "dest", decode_video=poison_video_decode)

    rows = {Path(str(r["path"])).name: r for r in parquet_rows(tmp_path / "dest")}
    assert len(rows) == len(stills) + 3
    assert (rows["crash.mp4"]["status"], rows["crash.mp4"]["reason"]) == ("rejected", reasons.crashes(video=True))
    assert (rows["hang.mp4"]["status"], rows["hang.mp4"]["reason"]) == ("rejected", reasons.video_hangs(3))
    assert (rows["clip.mp4"]["status"], rows["clip.mp4"]["media"]) == ("scored", "video")
    assert run.counts == {"scored": len(stills) + 1, "rejected": 2, "duplicate": 0}
