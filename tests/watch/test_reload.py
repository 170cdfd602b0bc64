"""`systemctl reload` (SIGHUP) of `scorer watch`: a newly pinned model takes over between batches, without a restart.

Two real tiny learners (different files, so different SHA-256s) and a real subprocess.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from scorer.fsutil import sha256_file
from tests.helpers import Project, Service, configure, reports, start, wait_until_empty
from tests.imagegen import CLASS_COLOURS, write_creative
from tests.workbooks import column, files_across

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
