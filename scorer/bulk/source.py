"""The inputs of `scorer bulk`: list local folders or filesystem URIs, and read one file's bytes.

Local paths go through the same vetting as `scorer score` (hidden and temporary names skipped,
links and pipes rejected unopened); a URI (`s3://`, `gs://`, `hdfs://`, `file://`) is listed
and read with pyarrow's filesystems, which is what Ray Data itself reads them with. An input is
read within its kind's limit, as the decoding workers read it: a video's (video.max_file_mb) when
its first bytes are a video's, else a still's (images.max_file_mb).
"""

from __future__ import annotations

from pathlib import Path

from scorer.decoding.vet import ImageLimits, find_candidates, is_ignored_name, read_regular_file
from scorer.decoding.video_probe import VideoLimits, sniff_video_file, video_format
from scorer.errors import ConfigError, ImageError


def is_uri(source: str) -> bool:
    """Whether a SOURCE names a filesystem URI rather than a local path."""
    return "://" in source


def list_inputs(sources: list[str]) -> list[str]:
    """Every input under the given folders, files and URIs, once each, in a stable order."""
    found: list[str] = []
    for source in sources:
        if is_uri(source):
            found += _list_uri(source)
            continue
        path = Path(source).absolute()
        if not path.exists() and not path.is_symlink():
            raise ConfigError(f"{source} does not exist: check the path")
        found += [str(p) for p in find_candidates([path])]
    return list(dict.fromkeys(found))


def _list_uri(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"{uri} does not exist: check the URI")
        if info.type == pafs.FileType.File:
            infos = [info]
        else:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot list {uri} ({exc}): check the URI and the credentials for its filesystem") from None
    # The URI minus the filesystem's own path is what each listed path needs in front (s3://, hdfs://host:port).
    trimmed, stem = uri.rstrip("/"), root.rstrip("/")
    prefix = trimmed[: len(trimmed) - len(stem)] if trimmed.endswith(stem) else uri.split("://", 1)[0] + "://"
    files = [i for i in infos if i.type == pafs.FileType.File
             and not any(is_ignored_name(part) for part in i.path[len(stem):].split("/"))]
    return [prefix + i.path for i in sorted(files, key=lambda i: i.path)]


def read_input(source: str, limits: ImageLimits, video: VideoLimits) -> tuple[bytes, float]:
    """The bytes of one input and its modification time; ImageError when it cannot be read."""
    if not is_uri(source):
        limit = video.max_bytes if sniff_video_file(Path(source)) else limits.max_bytes
        data, st = read_regular_file(Path(source), limit)
        return data, st.st_mtime
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise ImageError("file disappeared before it could be read")
        with fs.open_input_stream(path) as handle:
            data = handle.read(64)
            limit = video.max_bytes if video_format(data) else limits.max_bytes
            if info.size is not None and info.size > limit:
                raise ImageError(f"file too large: {info.size / 2**20:.0f} MB, limit {limit / 2**20:.0f} MB")
            data += handle.read(limit + 1 - len(data))
    except OSError as exc:
        raise ImageError(f"cannot be read: {exc}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    modified = info.mtime.timestamp() if info.mtime is not None else 0.0
    return data, modified
