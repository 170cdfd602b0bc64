"""The decode pool: a few worker processes that vet and decode files beside inference.

Decoding runs in separate processes for two reasons: it overlaps with inference in
the main process, and a poison file that crashes or hangs a decoder takes down only
that worker. The file is rejected and a fresh worker takes over.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from scorer.child import Child
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry, decode_file
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video
from scorer.decoding.video_probe import VideoLimits, load_pyav, sniff_video_file
from scorer.errors import ImageError, TransientImageError

log = logging.getLogger(__name__)

DecodeFn = Callable[[Path, "ItemGeometry | None", ImageLimits, int], Decoded]
VideoDecodeFn = Callable[[Path, "ItemGeometry | None", VideoLimits, int], Decoded]


@dataclass(frozen=True)
class DecodeJob:
    """What every worker needs to turn a path into a Decoded image (or, with `video`, a DecodedVideo)."""

    geometry: ItemGeometry | None
    limits: ImageLimits
    thumb_px: int
    decode: DecodeFn = decode_file
    # None: no file is taken for a video, and one gets `decode`'s reason; else a file whose first bytes
    # are a video's goes to `decode_video`, within video.max_memory_mb and video.timeout
    video: VideoLimits | None = None
    decode_video: VideoDecodeFn = decode_video


def _worker_main(conn: Connection) -> None:
    # The parent owns shutdown: Ctrl-C in a terminal must not kill workers mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:] = conn.recv()  # so that a decode function from the caller's modules unpickles
    job: DecodeJob = conn.recv()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        path, geometry = request
        video = job.video if job.video is not None and sniff_video_file(Path(path)) else None
        try:
            reply: tuple[str, object] = ("ok", _decode(conn, job, video, Path(path), geometry))
        except TransientImageError as exc:
            reply = ("again", str(exc))
        except ImageError as exc:
            reply = ("err", str(exc))
        except MemoryError:
            reply = ("err", reasons.out_of_memory(None if video is None else video.max_memory_mb))
        except Exception as exc:  # a decoder bug must cost one file, not the batch
            traceback.print_exc()
            reply = ("err", reasons.undecodable(exc))
        conn.send(reply)


def _decode(conn: Connection, job: DecodeJob, video: VideoLimits | None, path: Path,
            geometry: ItemGeometry | None) -> Decoded:
    """One file in the worker: a video within its own memory limit, after telling the parent its time budget."""
    if video is None:
        return job.decode(path, geometry, job.limits, job.thumb_px)
    conn.send(("video", video.timeout))
    load_pyav()  # mapped before the limit is measured, so that the first video gets the room the others get
    # room for the file too: read_regular_file asks for max_bytes + 1 at once, whatever the file's size
    with _address_space_limit(video.max_memory_mb * 2**20 + video.max_bytes + 1):
        return job.decode_video(path, geometry, video, job.thumb_px)


@contextmanager
def _address_space_limit(extra: int) -> Iterator[None]:
    """Let this process map at most `extra` bytes more than it does now (RLIMIT_AS), until the block ends.

    FFmpeg is C: a video that makes it allocate without bound would take the machine's memory, and
    only an allocation that fails (MemoryError, or the worker dying) stops it. Stills keep no limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as statm:  # Linux: the address space in pages, first
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        mapped = None
    limit = mapped + extra if mapped is not None else resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class _Slot:
    """One worker process (scorer.child: `python -m scorer.decoding.pool`, started with only Pillow loaded) and
    the pipe to it; restarted after a crash or hang."""

    def __init__(self, job: DecodeJob) -> None:
        self._job = job
        # Held from a request to its reply: a run abandoned mid-decode leaves its feeder waiting on this pipe,
        # and the next run's request must not be sent until that reply is read, or the two would swap answers.
        self.busy = threading.Lock()
        self.child = Child("scorer.decoding.pool")

    def ensure_started(self) -> Connection:
        if not self.child.alive or self.child.conn is None:
            conn = self.child.start()
            conn.send(sys.path)
            conn.send(self._job)
        assert self.child.conn is not None
        return self.child.conn


Reply = tuple[Path, "Decoded | ImageError"]


class _Queue:
    """Files handed out to the feeder threads, and their results waiting to be yielded in order."""

    def __init__(self, paths: Iterable[Path], room: int) -> None:
        self._tasks = iter(enumerate(paths))
        self._results: dict[int, Reply] = {}
        self._cond = threading.Condition()
        self._room = threading.Semaphore(room)
        self._cancelled, self._exhausted = threading.Event(), threading.Event()
        self._pulled = 0

    def next_task(self) -> tuple[int, Path] | None:
        """The next file to decode, once there is room for its result; None when done or cancelled."""
        if self._cancelled.is_set():
            return None
        self._room.acquire()
        with self._cond:
            item = next(self._tasks, None)
            if item is None:
                self._exhausted.set()
                self._cond.notify_all()
            else:
                self._pulled += 1
        return None if self._cancelled.is_set() else item

    def put(self, index: int, reply: Reply) -> None:
        with self._cond:
            self._results[index] = reply
            self._cond.notify_all()

    def take(self, index: int, threads: list[threading.Thread], stop: Callable[[], bool]) -> Reply | None:
        """The result for `index`, waiting for it; None when every file was yielded or `stop()` turned true."""
        with self._cond:
            while index not in self._results:
                if self._exhausted.is_set() and index >= self._pulled:
                    return None
                if not any(t.is_alive() for t in threads):
                    raise RuntimeError("decoding threads stopped with files outstanding")
                if stop():
                    return None
                self._cond.wait(0.2)
            item = self._results.pop(index)
        self._room.release()
        return item

    def cancel(self, feeders: int) -> None:
        self._cancelled.set()
        for _ in range(feeders):
            self._room.release()


class DecodePool:
    """Decode files in worker processes and yield the results in input order."""

    def __init__(self, job: DecodeJob, workers: int = 2, timeout: float = 60.0) -> None:
        self._job = job
        self._slots = [_Slot(job) for _ in range(workers)]
        self._timeout = timeout

    def imap(
        self, paths: Iterable[Path], ahead: int = 32, stop: Callable[[], bool] = lambda: False,
        geometry: Callable[[], ItemGeometry | None] | None = None,
    ) -> Iterator[Reply]:
        """Yield (path, Decoded or ImageError) in order, with at most `ahead` results waiting.

        Returns early once `stop()` is true, even while a decoder is still busy. `geometry`, when
        given, is asked for each file's geometry as the file is handed to a worker (the decode check).
        """
        queue = _Queue(paths, max(ahead, len(self._slots)))
        geometry = geometry or (lambda: self._job.geometry)
        threads = [threading.Thread(target=self._feed, args=(slot, queue, geometry), daemon=True)
                   for slot in self._slots]
        for thread in threads:
            thread.start()
        try:
            index = 0
            while (item := queue.take(index, threads, stop)) is not None:
                index += 1
                yield item
        finally:
            queue.cancel(len(threads))

    def _feed(self, slot: _Slot, queue: _Queue, geometry: Callable[[], ItemGeometry | None]) -> None:
        while (task := queue.next_task()) is not None:
            index, path = task
            queue.put(index, (path, self._decode_in(slot, path, geometry())))

    def _decode_in(self, slot: _Slot, path: Path, geometry: ItemGeometry | None) -> Decoded | ImageError:
        with slot.busy:
            return self._request(slot, path, geometry)

    def _request(self, slot: _Slot, path: Path, geometry: ItemGeometry | None) -> Decoded | ImageError:
        conn = slot.ensure_started()
        video, budget = False, self._timeout
        try:
            conn.send((str(path), geometry))
            while True:
                if not conn.poll(budget):
                    log.warning("decoding %s took over %.0f s: worker restarted, file rejected", path, budget)
                    slot.child.kill()
                    return ImageError(reasons.video_hangs(budget) if video else reasons.hangs(budget))
                status, payload = conn.recv()
                if status != "video":
                    break
                video, budget = True, float(payload)  # the worker found a video: its time budget from now
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            code = slot.child.exitcode
            log.warning("decoding %s crashed the worker (exit code %s): worker restarted, file rejected", path, code)
            slot.child.kill()
            return ImageError(reasons.crashes(video))
        if status == "ok":
            assert isinstance(payload, Decoded)
            return payload
        return TransientImageError(str(payload)) if status == "again" else ImageError(str(payload))

    def close(self) -> None:
        """Stop every worker process."""
        for slot in self._slots:
            slot.child.stop()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])))
