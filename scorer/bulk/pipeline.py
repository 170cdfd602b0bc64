"""`scorer bulk`: score an archive on Ray Data into Parquet, with the same answers as `scorer score`.

The driver verifies and loads the model once (for its classes, geometry and ONNX export),
lists the inputs, and then streams them through two stages: vet-and-decode CPU tasks, and
an actor pool that holds the shipped, re-verified model. Results come back to the driver,
which writes DEST (see scorer.bulk.output). Without an address Ray starts on this machine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from scorer.bulk import require_ray
from scorer.bulk.output import Done, PartWriter, read_done, require_empty
from scorer.bulk.shipping import pack_model
from scorer.bulk.source import list_inputs
from scorer.bulk.stages import DecodeBytes, DecodeStage, InferStage
from scorer.config import require_writable_dir
from scorer.decoding.decode import decode_bytes
from scorer.decoding.pool import VideoDecodeFn
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import ConfigError, ModelError, ScorerError
from scorer.model.fast_start import FastStart, read_fast_start
from scorer.results import ModelInfo
from scorer.settings import Settings

log = logging.getLogger(__name__)

PATHS_PER_BLOCK = 64  # inputs per Ray block: small enough to spread a few thousand files over a cluster


@dataclass(frozen=True)
class BulkRun:
    """The outcome of one `scorer bulk`: counts, the parts written, and the model that scored."""

    counts: dict[str, int]
    skipped: int
    parts: list[Path]
    info: ModelInfo
    report: Path | None = None

    def line(self) -> str:
        """One line for the terminal."""
        c = self.counts
        text = f"{c['scored']} scored, {c['rejected']} rejected, {c['duplicate']} duplicates"
        if self.skipped:
            text += f", {self.skipped} already in DEST"
        return text + f": {len(self.parts)} new Parquet part(s)"


@contextmanager
def ray_session(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start Ray on this machine; a session already open is reused."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False if address is None else None,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address} ({exc}): start it with `ray start --head`, "
                          "or leave out --address to run on this machine") from None
    try:
        yield
    finally:
        ray.shutdown()


def run_bulk(
    settings: Settings, sources: list[str], dest: Path, *, address: str | None = None, resume: bool = False,
    decode: DecodeBytes = decode_bytes, decode_video: VideoDecodeFn = decode_video,
    on_start: Callable[[int], None] = lambda n: None, progress: Callable[[int], None] = lambda n: None,
) -> BulkRun:
    """Score every input under `sources` into Parquet parts in `dest` (see the module docstring)."""
    ray = require_ray()
    from scorer.checks.decode_check import load_or_measure_decode_check
    from scorer.scoring.assembly import describe_model
    from scorer.scoring.classifier import Classifier

    listed = list_inputs(sources)
    if not listed:
        raise ConfigError(f"no files found in {', '.join(sources)}: give image files or folders that hold them")
    dest.mkdir(parents=True, exist_ok=True)
    require_writable_dir(dest, "--out")
    classifier = Classifier(settings, explain=False)  # bulk draws no Grad-CAM
    info, geometry = describe_model(classifier, settings), classifier.geometry
    if geometry is None:
        raise ModelError("this learner's transforms are not known to the fast engine, which scorer bulk needs: "
                         "score it with `scorer score`")
    # The model's decode check, as `scorer score` keeps it: drafts only where proven harmless for this
    # model; until its first creatives have been checked (it learns only in `scorer score`), exact decoding.
    check = load_or_measure_decode_check(geometry, settings.images.decode, info.sha256, settings.state,
                                         classifier.predict_fp32)
    geometry = dataclasses.replace(check.geometry(), probe=False)
    log.info("decoding: %s", check.describe())
    del classifier  # the actors hold their own copies
    done = read_done(dest, info.sha256) if resume else Done()
    if not resume:
        require_empty(dest)
    inputs = [p for p in listed if p not in done.paths]
    on_start(len(inputs))
    writer = PartWriter(dest, info.classes, info.sha256, done, settings.bulk.flush_rows)
    if not inputs:  # everything is in DEST already
        return BulkRun(writer.counts, len(listed), [], info)
    stage = DecodeStage(geometry, ImageLimits.from_settings(settings.images), VideoLimits.from_settings(settings.video),
                        settings.images.decode_timeout, frozenset(done.by_sha), decode, decode_video)
    with ray_session(ray, address):
        _decide(ray, settings, inputs, stage, writer, info.sha256, progress)
    missing = len(inputs) - len(writer.seen)
    if missing:
        raise ScorerError(f"{missing} inputs got no result: run the same command with --resume to score them")
    return BulkRun(writer.counts, len(listed) - len(inputs), writer.parts, info)


def _decide(ray: ModuleType, settings: Settings, inputs: list[str], stage: DecodeStage, writer: PartWriter,
            verified: str, progress: Callable[[int], None]) -> None:
    """Every input through the two stages, its row into `writer`."""
    shipped = ray.put(pack_model(settings, verified))  # held here until the actors are done with it
    fast_start = read_fast_start(settings.state, verified)  # beside the shipped object, as the pin is
    dataset = _pipeline(ray, settings, inputs, stage, shipped, verified, fast_start)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            progress(writer.take(batch))
    finally:  # Ctrl-C, SIGTERM, a lost actor or node: every row decided so far reaches DEST
        writer.flush()


def _pipeline(ray: ModuleType, settings: Settings, inputs: list[str], stage: DecodeStage, shipped: Any,
              verified: str, fast_start: FastStart | None) -> Any:
    import pyarrow as pa

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-run INFO lines would bury the summary
    blocks = [pa.table({"path": inputs[i:i + PATHS_PER_BLOCK]}) for i in range(0, len(inputs), PATHS_PER_BLOCK)]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, settings.threads)
    gpu = settings.device == "cuda"
    actors = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // (2 * threads)))
    return (
        ray.data.from_arrow(blocks)
        # Each decoding task reserves the decode memory bound, a still's or a video's (its bytes, once, and
        # what its decoding worker may add); giving it resources of its own also keeps Ray from fusing it into
        # the inference actors. Ray spreads these tasks over the nodes and runs one again when its worker dies.
        .map_batches(stage, batch_size=settings.batch_size, num_cpus=1, memory=_decode_memory(settings))
        # the pin (and the fast start) go beside the shipped object, never inside it: each actor checks the
        # bytes against the pin
        .map_batches(InferStage, fn_constructor_args=(settings, shipped, verified, fast_start),
                     batch_size=settings.batch_size, compute=actors, num_cpus=0 if gpu else threads,
                     num_gpus=1 if gpu else 0)
    )


def _decode_memory(settings: Settings) -> int:
    """Bytes a decoding task reserves: the most a still or a video may take to decode."""
    video = settings.video.max_file_mb + settings.video.max_memory_mb
    return int(max(settings.images.decode_memory_mb, video) * 2**20)
