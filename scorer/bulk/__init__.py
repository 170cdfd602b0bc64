"""`scorer bulk`: score an archive on a Ray cluster into Parquet, calling the same floors and never copying them.

    source.py    list local folders and filesystem URIs; read one input's bytes
    shipping.py  the verified model through Ray's object store, re-verified on each worker
    stages.py    vet-and-decode CPU tasks and the inference actor
    output.py    DEST's Parquet schema, its parts, --resume and exactly-once rows
    topn.py      --report: the usual workbook for the top N
    pipeline.py  run_bulk: the driver that ties them together
"""

from __future__ import annotations

from types import ModuleType

from scorer.errors import ConfigError


def require_ray() -> ModuleType:
    """Ray (with Ray Data and pyarrow), or a one-line error that names the extra to install."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("scorer bulk needs Ray: pip install 'scorer[ray]'") from None
    return ray
