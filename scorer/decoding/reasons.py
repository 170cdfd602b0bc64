"""Why a file cannot be decoded, in the words the report's Rejected sheet shows: each reason that the decoding
workers, bulk's decoding tasks and the video decoder give, written once. A reason past a limit names its key."""

from __future__ import annotations

CORRUPT_VIDEO = "video is incomplete or corrupt"
NOT_A_VIDEO = "not a video (MP4, MOV, M4V, WebM or Matroska)"
ONLY_AUDIO = "no video stream: the file holds only audio"
NO_PICTURE = "no video stream: nothing in the file can be shown"
NO_DURATION = "video declares no duration (a live recording?): save it again as a finished file"
NO_FRAME = f"{CORRUPT_VIDEO}: no frame can be decoded"
VIDEO_NEEDS_KNOWN_RESIZE = ("video not scored: this learner's item transforms are not ones the scorer reproduces, "
                            "so its frames cannot be prepared as stills are; export it with fastai's Resize")


def span(seconds: float) -> str:
    """A length as people say it: 42.5 s, 15 min 3 s, 3 h 12 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def crashes(video: bool) -> str:
    """The file killed the worker that decoded it."""
    return f"the file crashes the {'video' if video else 'image'} decoder"


def hangs(seconds: float) -> str:
    """An image gave no result within images.decode_timeout."""
    return f"the file hangs the image decoder (no result in {seconds:.0f} s)"


def video_hangs(seconds: float) -> str:
    """A video gave no result within video.timeout."""
    return f"video takes over {seconds:g} s to decode: the limit is `video.timeout` ({seconds:g})"


def out_of_memory(video_memory_mb: int | None = None) -> str:
    """Decoding ran out of memory: an image's (no limit of its own), or a video's within video.max_memory_mb."""
    if video_memory_mb is None:
        return "image needs more memory than is available to decode it"
    return f"video needs more memory to decode than `video.max_memory_mb` ({video_memory_mb}) allows"


def undecodable(exc: BaseException) -> str:
    """A decoder failed in a way nothing else names (a bug in it, most likely): the file is rejected, not the batch."""
    return f"cannot be decoded ({type(exc).__name__}: {exc})"


def video_file_too_large(size: int, max_file_mb: float) -> str:
    """A video file over video.max_file_mb."""
    return f"file too large: {size / 2**20:.0f} MB, limit {max_file_mb:g} MB (`video.max_file_mb`)"


def too_many_streams(streams: int, limit: int) -> str:
    """A video with more streams than video.max_streams."""
    return f"video has {streams} streams: the limit is `video.max_streams` ({limit})"


def frames_too_large(size: tuple[int, int], megapixels: float, limit: float) -> str:
    """A video whose frames are over video.max_megapixels."""
    return (f"video frames are {size[0]}×{size[1]} ({megapixels:.3g} MP): the limit is "
            f"`video.max_megapixels` ({limit:g})")


def frames_grow(size: tuple[int, int], limit: float) -> str:
    """A video whose frames grow past video.max_megapixels inside the stream."""
    return f"video frames grow to {size[0]}×{size[1]}: the limit is `video.max_megapixels` ({limit:g})"


def too_long(seconds: float, limit: float) -> str:
    """A video longer than video.max_seconds."""
    return f"video is {span(seconds)} long: the limit is `video.max_seconds` ({limit:g})"


def nothing_at(seconds: float) -> str:
    """A video with nothing to decode where a seek landed."""
    return f"{CORRUPT_VIDEO}: nothing can be decoded at {span(seconds)}"


def frames_stop(last: float, duration: float) -> str:
    """A video whose frames end well before the length it declares."""
    return f"{CORRUPT_VIDEO}: its frames stop at {span(last)} of {span(duration)}"
