"""One local Ray for the bulk tests, started once for the package: starting it is the slow part. Under
`make test` the whole package runs on one worker (the scheduler in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import ROOT


@pytest.fixture(scope="package")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder of the Ray workers (their TMPDIR), where they keep the shipped model."""
    return tmp_path_factory.mktemp("worker-tmp")


@pytest.fixture(scope="package")
def local_ray(worker_tmp: Path) -> Iterator[str]:
    """Ray on this machine with 2 CPUs; yields its address for drivers in subprocesses."""
    import ray

    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # workers import tests' decode functions
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "TMPDIR": str(worker_tmp)}})
    yield str(ray.get_runtime_context().gcs_address)
    ray.shutdown()
