"""`scorer bulk` on a real local Ray (2 CPUs, started once for the module) against `scorer score`."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.bulk.output import PART_GLOB
from scorer.bulk.pipeline import run_bulk
from scorer.bulk.shipping import pack_model, unpack_model
from scorer.cli import main
from scorer.decoding.decode import Decoded, ItemGeometry, decode_bytes
from scorer.decoding.vet import ImageLimits
from scorer.errors import ConfigError, ModelError
from scorer.model.fast_start import fast_start_path, read_fast_start
from scorer.score.run import score_paths
from tests.support.helpers import Project, bulk_settings, campaign, gated_decode, parquet_rows
from tests.support.hostile import make_corpus
from tests.support.imagegen import CLASS_COLOURS
from tests.support.videogen import hostile_videos, reel

ROOT = Path(__file__).resolve().parents[2]

# The README's schema table, as pyarrow types: the tiny learner's classes are Low < Neutral < High.
SCHEMA = [
    ("path", pa.string()), ("sha256", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("predicted", pa.string()), ("confidence", pa.float64()), ("engagement_score", pa.float64()),
    ("p_Low", pa.float64()), ("p_Neutral", pa.float64()), ("p_High", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()), ("file_bytes", pa.int64()),
    ("modified", pa.timestamp("us", tz="UTC")), ("notes", pa.string()), ("scored_at", pa.timestamp("us", tz="UTC")),
    ("model_sha256", pa.string()), ("scorer_version", pa.string()),
    ("media", pa.string()), ("duration_s", pa.float64()), ("frames_scored", pa.int32()),
]
ADDED_FOR_VIDEOS = ["media", "duration_s", "frames_scored"]  # after the columns of earlier parts

# Each project starts as the tiny learner's first start leaves it, so a driver or an actor that has the
# fast start opens the export without fastai (bulk draws no Grad-CAM).
pytestmark = pytest.mark.usefixtures("watched")


def test_bulk_matches_score_on_hostile_input_and_writes_the_documented_schema(
        local_ray: str, project: Project, tmp_path: Path) -> None:
    expect = make_corpus(project.inbox, tmp_path / "outside")
    campaign(project.inbox / "campaign", range(2))
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")  # the reference draws no Grad-CAM
    settings = bulk_settings(project)
    reference = score_paths(settings, [project.inbox]).result

    run = run_bulk(settings, [str(project.inbox)], tmp_path / "dest")
    (part,) = run.parts
    assert [(f.name, f.type) for f in pq.read_schema(part)] == SCHEMA
    rows = {str(r["path"]): r for r in parquet_rows(tmp_path / "dest")}
    assert len(rows) == len(expect) + 6 == sum(run.counts.values())

    assert reference.scored
    for s in reference.scored:
        row = rows[s.location]
        assert row["status"] == "scored" and row["sha256"] == s.sha256 and row["predicted"] == s.predicted
        assert max(abs(row[f"p_{c}"] - p) for c, p in zip(s.classes, s.probs, strict=True)) <= 1e-6  # type: ignore
        assert row["engagement_score"] == pytest.approx(s.score, abs=1e-4)
        assert (row["width"], row["height"], row["format"], row["notes"] or "") == (s.width, s.height, s.format,
                                                                                     s.notes)
        assert (row["media"], row["duration_s"], row["frames_scored"]) == ("image", None, 0)
    assert {r.location: r.reason for r in reference.rejected} == {
        p: r["reason"] for p, r in rows.items() if r["status"] == "rejected"}
    assert all(expect[Path(p).relative_to(project.inbox).as_posix()].text in str(r["reason"])
               for p, r in rows.items() if r["status"] == "rejected")
    (dup,) = [r for r in rows.values() if r["status"] == "duplicate"]
    pair = {str(project.inbox / "copy-a.jpg"), str(project.inbox / "copy-b.jpg")}
    assert dup["path"] in pair and dup["reason"] == f"same content as {(pair - {dup['path']}).pop()}"
    model_sha = hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()
    assert {r["model_sha256"] for r in rows.values()} == {run.info.sha256} == {model_sha}


@pytest.mark.slow
def test_each_video_gets_one_row_with_the_answer_scorer_score_gives_it(
        local_ray: str, project: Project, tmp_path: Path) -> None:
    expect = hostile_videos(project.inbox / "videos")
    stills = campaign(project.inbox / "stills", range(1))
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    settings = bulk_settings(project)
    reference = score_paths(settings, [project.inbox]).result

    run = run_bulk(settings, [str(project.inbox)], tmp_path / "dest")
    rows = {str(r["path"]): r for r in parquet_rows(tmp_path / "dest")}
    assert len(rows) == len(expect) + len(stills) == sum(run.counts.values())
    videos = [s for s in reference.scored if s.video is not None]
    assert {Path(s.location).name for s in videos} == {n for n, e in expect.items() if e.text == "video"}
    for s in reference.scored:
        row = rows[s.location]
        assert row["status"] == "scored" and row["sha256"] == s.sha256 and row["predicted"] == s.predicted
        assert max(abs(row[f"p_{c}"] - p) for c, p in zip(s.classes, s.probs, strict=True)) <= 1e-6  # type: ignore
        assert (row["width"], row["height"], row["format"], row["notes"] or "") == (s.width, s.height, s.format,
                                                                                     s.notes)
        if s.video is None:
            assert (row["media"], row["duration_s"], row["frames_scored"]) == ("image", None, 0)
        else:
            assert (row["media"], row["duration_s"], row["frames_scored"]) == ("video", s.video.duration,
                                                                               len(s.video.frames))
    assert {r.location: r.reason for r in reference.rejected} == {
        p: r["reason"] for p, r in rows.items() if r["status"] == "rejected"}
    assert all(r["media"] is None for r in rows.values() if r["status"] == "rejected")


@pytest.mark.slow
def test_resume_reads_parts_written_before_videos_and_the_report_shows_a_video(
        local_ray: str, project: Project, tmp_path: Path) -> None:
    dest, stills = tmp_path / "dest", campaign(project.inbox, range(1))
    run_bulk(bulk_settings(project), [str(project.inbox)], dest)
    for part in dest.glob(PART_GLOB):  # as a scorer before videos wrote them
        pq.write_table(pq.read_table(part).drop_columns(ADDED_FOR_VIDEOS), part)
    clip = reel(project.inbox / "clip.mp4", [(3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"])])
    report = tmp_path / "top.xlsx"
    result = CliRunner().invoke(main, ["bulk", str(project.inbox), "--out", str(dest), "--resume", "--config",
                                       str(project.config), "--report", str(report), "--top", "10"])
    assert result.exit_code == 0, result.output
    assert f"1 scored, 0 rejected, 0 duplicates, {len(stills)} already in DEST" in result.output

    ws = load_workbook(report)["Ranking"]
    header = [c.value for c in ws[1]]
    formats = {row[header.index("File")]: row[header.index("Format")] for row in ws.iter_rows(min_row=2,
                                                                                             values_only=True)}
    assert formats == {**{str(p): "image" for p in stills}, str(clip): "video 0:06 · 9:16"}
    assert len(ws._images) == len(stills) + 1, "a thumbnail each, the video's its cover"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_resume_scores_only_new_files_and_report_ranks_the_top(local_ray: str, project: Project,
                                                               tmp_path: Path) -> None:
    dest, folder = tmp_path / "dest", project.inbox
    first = campaign(folder, range(2))
    settings = bulk_settings(project)
    run_bulk(settings, [str(folder)], dest)
    with pytest.raises(ConfigError, match="pass --resume"):
        run_bulk(settings, [str(folder)], dest)

    new = campaign(folder / "later", range(5, 6))
    (folder / "later" / "again.jpg").write_bytes(first[0].read_bytes())
    report = tmp_path / "top.xlsx"
    result = CliRunner().invoke(main, ["bulk", str(folder), "--out", str(dest), "--resume", "--config",
                                       str(project.config), "--report", str(report), "--top", "4"])
    assert result.exit_code == 0, result.output
    assert f"3 scored, 0 rejected, 1 duplicates, {len(first)} already in DEST" in result.output

    rows = parquet_rows(dest)
    paths = [str(r["path"]) for r in rows]
    assert sorted(paths) == sorted(map(str, [*first, *new, folder / "later" / "again.jpg"]))  # each exactly once
    again = next(r for r in rows if str(r["path"]).endswith("again.jpg"))
    assert again["status"] == "duplicate" and again["reason"] == f"same content as {first[0]}"

    ranking = list(load_workbook(report)["Ranking"].iter_rows(min_row=2, values_only=True))
    best = sorted((r for r in rows if r["status"] == "scored"), key=lambda r: -r["engagement_score"])  # type: ignore
    assert [r[1] for r in ranking] == [b["path"] for b in best[:4]]
    assert all(str(r[1]).split("/")[-1].startswith("high") for r in ranking[:2])


def _dying_decode(marker: Path, data: bytes, modified: float, geometry: ItemGeometry | None, limits: ImageLimits,
                  thumb_px: int) -> Decoded:
    """decode_bytes, except that the first worker to meet the content named in `marker` is killed with SIGKILL."""
    decoded = decode_bytes(data, modified, geometry, limits, thumb_px)
    if marker.is_file() and marker.read_text() == decoded.sha256:
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return decoded


@pytest.mark.slow
def test_a_worker_killed_mid_job_still_yields_each_input_exactly_once(
        local_ray: str, project: Project, tmp_path: Path) -> None:
    files = campaign(project.inbox, range(4))
    marker = tmp_path / "kill-once"
    marker.write_text(hashlib.sha256(files[len(files) // 2].read_bytes()).hexdigest())
    settings = dataclasses.replace(bulk_settings(project), batch_size=2)
    run = run_bulk(settings, [str(project.inbox)], tmp_path / "dest", decode=partial(_dying_decode, marker))

    assert not marker.exists(), "the worker that met the victim was killed"
    paths = [str(r["path"]) for r in parquet_rows(tmp_path / "dest")]
    assert sorted(paths) == sorted(map(str, files))
    assert run.counts == {"scored": len(files), "rejected": 0, "duplicate": 0}





def _descendants(pid: int, named: str) -> list[int]:
    """Processes below `pid` whose command line (Ray's process title) contains `named`."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]),
                                []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = [], list(children.get(pid, []))
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            if named in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                found.append(p)
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_an_inference_actor_killed_mid_job_is_restarted_and_each_input_decided_once(
        local_ray: str, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = campaign(project.inbox, range(4))
    gate = tmp_path / "gate"
    gate.write_text(hashlib.sha256(files[-1].read_bytes()).hexdigest())  # the newest file: in the last block
    monkeypatch.setattr("scorer.bulk.pipeline.PATHS_PER_BLOCK", 2)
    settings = dataclasses.replace(bulk_settings(project), batch_size=2)
    decided: list[int] = []
    job = threading.Thread(target=run_bulk, args=(settings, [str(project.inbox)], tmp_path / "dest"),
                           kwargs={"decode": partial(gated_decode, gate), "progress": decided.append})
    job.start()
    deadline = time.monotonic() + 240
    while sum(decided) < len(files) // 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    (actor,) = _descendants(os.getpid(), "InferStage")
    os.kill(actor, signal.SIGKILL)  # mid-job: the last block is still being decoded
    gate.unlink()
    job.join(240)

    assert not job.is_alive()
    assert sum(decided) == len(files)
    assert sorted(str(r["path"]) for r in parquet_rows(tmp_path / "dest")) == sorted(map(str, files))
    assert {r["status"] for r in parquet_rows(tmp_path / "dest")} == {"scored"}
    assert _descendants(os.getpid(), "InferStage") != [actor], "Ray restarted the actor"


@pytest.mark.parametrize("configured", [True, False], ids=["model_sha256", "driver-pin"])
def test_workers_check_the_shipped_bytes_against_the_pin_beside_them(project: Project, configured: bool) -> None:
    from scorer.scoring.classifier import Classifier

    settings = bulk_settings(project)
    sha = Classifier(settings).sha256
    if configured:
        settings = dataclasses.replace(settings, model_sha256=sha)
    shipped = pack_model(settings, sha)
    middle = len(shipped.learner) // 2
    flipped = shipped.learner[:middle] + bytes([shipped.learner[middle] ^ 1]) + shipped.learner[middle + 1:]
    tampered = dataclasses.replace(shipped, learner=flipped)  # altered on its way
    # with model_sha256 configured, even a driver that vouched for the altered bytes is not believed
    actual = hashlib.sha256(flipped).hexdigest()
    verified = actual if configured else sha
    where = "model_sha256 in config.yaml" if configured else "the driver's state folder"
    with pytest.raises(ModelError, match=f"^the model shipped to this worker has changed since it was pinned "
                                         f"\\(sha256 {actual[:12]}…, pinned {sha[:12]}… in {where}\\): refused"):
        unpack_model(tampered, settings, verified)
    assert Classifier(unpack_model(shipped, settings, sha)).sha256 == sha


def test_a_worker_given_the_drivers_serving_record_opens_the_export_without_fastai(project: Project) -> None:
    from scorer.scoring.classifier import Classifier

    settings = bulk_settings(project)
    sha = Classifier(settings, explain=False).sha256
    fast_start = read_fast_start(settings.state, sha)
    assert fast_start is not None, "the watched project holds the tiny learner's fast start"
    shipped = pack_model(settings, sha)
    local = unpack_model(shipped, settings, sha, fast_start)
    assert read_fast_start(local.state, sha) == fast_start
    assert "recorded logits" in Classifier(local, explain=False).export_check, "opened with the fast start"

    # a fast start that names another export than the one shipped beside it is not kept: that worker opens the learner
    fast_start_path(local.state, sha).unlink()
    local = unpack_model(shipped, settings, sha, dataclasses.replace(fast_start, onnx_sha256="0" * 64))
    assert read_fast_start(local.state, sha) is None


def test_without_ray_bulk_names_the_extra_in_one_line(project: Project, tmp_path: Path) -> None:
    code = "import sys; sys.modules['ray'] = sys.modules['pyarrow'] = None; from scorer.cli import run; run()"
    proc = subprocess.run([sys.executable, "-c", code, "bulk", str(project.inbox), "--out", str(tmp_path / "d"),
                           "--config", str(project.config)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: scorer bulk needs Ray: pip install 'scorer[ray]'"


def test_the_help_names_dest_where_it_is_defined() -> None:
    result = CliRunner().invoke(main, ["bulk", "--help"], terminal_width=200)
    assert result.exit_code == 0
    options = {line.split()[0]: " ".join(line.split()) for line in result.output.splitlines()
               if line.startswith("  --")}
    assert options["--out"] == "--out DEST Folder for the Parquet results, one row per input (created if missing). " \
                               "[required]"
    assert options["--resume"] == ("--resume Keep the results already in DEST (--out) and score only inputs whose "
                                   "content is new.")
