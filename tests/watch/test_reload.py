"""`systemctl reload` (SIGHUP) of `scorer watch`: a newly pinned model takes over between batches, without a restart.

Two real tiny learners (different files, so different SHA-256s) and a real subprocess.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scorer.fsutil import sha256_file
from tests.support.helpers import Project, Service, configure, reports, start, wait_until_empty
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.receivers import JsonReceiver, notify_section, wait_for
from tests.support.workbooks import column, files_across

COLOURS = list(CLASS_COLOURS.values())
# PyTorch on both sides: the new learner needs no ONNX export to be loaded during the test.
RUNTIME = "runtime: torch\nprecision: fp32\n"


def model_sha(report: Path) -> str:
    rows = dict(zip(column(report, "Model", "Item"), column(report, "Model", "Value"), strict=True))
    return str(rows["SHA-256"])


def drop(project: Project, names: range) -> list[str]:
    for n in names:
        write_creative(project.inbox / f"c{n:03}.jpg", COLOURS[n % 3], (48, 40), seed=n)
    return [f"c{n:03}.jpg" for n in names]


def batches_logged(service: Service, after: int = 0) -> list[str]:
    return [line.split("-batch")[-1] for _, line in service.lines[after:] if " scored, " in line and "batch" in line]


@pytest.mark.slow
def test_sighup_in_a_burst_switches_to_the_newly_pinned_model_and_scores_each_file_once(
        watched: Project, services: list[Service], renamed_learner: Path) -> None:
    shutil.copy(renamed_learner, watched.models / "renamed.pkl")
    os.chmod(watched.models / "renamed.pkl", 0o644)
    old_sha, new_sha = sha256_file(watched.models / "tiny.pkl"), sha256_file(watched.models / "renamed.pkl")
    configure(watched, max_batch=12)
    base = watched.config.read_text()
    watched.config.write_text(base + RUNTIME)
    service = start(watched, services)
    service.wait_log("ready:")
    dropped = drop(watched, range(50))
    service.wait_log(r"batch 1: \d+ scored")
    pinned = f"model: models/renamed.pkl\nmodel_sha256: {new_sha}\nclasses: [bronze, silver, gold]\n"
    watched.config.write_text(base.replace("model: models/tiny.pkl\n", pinned) + RUNTIME)
    service.proc.send_signal(signal.SIGHUP)
    dropped += drop(watched, range(50, 100))  # these arrive while it reloads
    reloaded = service.wait_log("reloaded: now serving .*renamed.pkl")
    wait_until_empty(watched, service, timeout=240)
    by_report = {report: column(report, "Ranking") for report in reports(watched)}
    names = [str(name) for rows in by_report.values() for name in rows]
    assert sorted(names) == sorted(dropped), "every file scored exactly once: none lost, none twice"
    assert files_across(list(by_report), "Rejected") == [] and files_across(list(by_report), "Duplicates") == []
    after = {line.split("-batch")[-1] for line in batches_logged(service, reloaded)}
    for report, rows in by_report.items():
        sha = model_sha(report)
        if report.name.split("-batch")[-1] in after:
            assert sha == new_sha, f"{report.name} was scored after the reload"
        assert sha in (old_sha, new_sha)
        if any(str(name) >= "c050" for name in rows):
            assert sha == new_sha, f"{report.name} holds files dropped during the reload: the new model scores them"
    assert after and model_sha(reports(watched)[0]) == old_sha, "batches on both sides of the reload"

    # A pin that does not match: the new model is refused, the one serving stays, and the log says why.
    watched.config.write_text(watched.config.read_text().replace(new_sha, "0" * 64))
    service.proc.send_signal(signal.SIGHUP)
    refused = service.wait_log("reload refused, still serving .*renamed.pkl")
    assert "scorer model pin" in service.lines[refused][1], "the line names the fix"
    more = drop(watched, range(100, 103))
    wait_until_empty(watched, service)
    service.wait_log(r"batch \d+: 3 scored", after=refused)
    last = reports(watched)[-1]
    assert sorted(str(n) for n in column(last, "Ranking")) == more and model_sha(last) == new_sha
    assert service.signal(signal.SIGTERM)[0] == 0


class _Unloadable:
    """Pickled, it unpickles as a call that raises TypeError, as an export from an incompatible library version
    can: a load that fails with a bug, not with a ModelError."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return int, ("1", 2, 3)  # int() takes at most 2 arguments


def unloadable_export(path: Path) -> None:
    """A torch.save archive that `scorer model pin` takes for a learner export, and whose load raises TypeError."""
    import torch

    torch.save({"fastai.learner": "Learner", "model": _Unloadable()}, path)
    os.chmod(path, 0o644)


@pytest.mark.slow
def test_sighup_with_a_pinned_model_whose_load_raises_typeerror_keeps_the_old_one_serving_and_tells(
        watched: Project, services: list[Service]) -> None:
    receiver = JsonReceiver()
    configure(watched)
    watched.config.write_text(watched.config.read_text() + notify_section(watched.root, [receiver.url]))
    unloadable_export(watched.models / "broken.pkl")
    try:
        service = start(watched, services)
        service.wait_log("ready:")
        pin = subprocess.run([sys.executable, "-m", "scorer", "model", "pin", "models/broken.pkl", "--config",
                              str(watched.config)], capture_output=True, text=True, timeout=60, cwd=watched.root)
        assert pin.returncode == 0, pin.stderr
        service.proc.send_signal(signal.SIGHUP)
        refused = service.wait_log("reload refused, still serving .*tiny.pkl")
        assert "TypeError: int() takes at most 2 arguments" in service.lines[refused][1]
        service.wait_log(r"Traceback|File \"", after=refused)  # the traceback, at debug level (the service has -v)
        more = drop(watched, range(3))
        wait_until_empty(watched, service)
        assert service.proc.poll() is None, service.log
        last = reports(watched)[-1]
        assert sorted(str(n) for n in column(last, "Ranking")) == more
        assert model_sha(last) == sha256_file(watched.models / "tiny.pkl"), "the old model scores them"
        wait_for(lambda: any(b["title"] == "Scorer: the new model was not loaded" for b in receiver.bodies),
                 "the notification that the new model was refused")
        assert service.signal(signal.SIGTERM)[0] == 0
    finally:
        receiver.close()
