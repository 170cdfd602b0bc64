"""Labels meet a learner's classes: by name, by order when only the counts agree, or one line that names the fix.

The learners are plain fastai vision_learners, exported as a user's notebook exports them, their weights set
(tests/support/learners.py) rather than trained: what they learned does not matter here, only the names and the
number of their classes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.config import load_settings
from scorer.demo import write_posts
from scorer.errors import ConfigError
from scorer.evidence.index import index_path
from scorer.training.labels import learner_classes
from scorer.training.prepare import prepare
from tests.support.learners import build_learner, colour_design

LABELS = ("Low", "Neutral", "High")  # train.label.classes by default
ENGAGEMENT = {"Low": "Low Engagement", "Neutral": "Neutral", "High": "High Engagement"}


@pytest.fixture(scope="module")
def posts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_posts(tmp_path_factory.mktemp("posts") / "posts", n=40).parent


def _project(root: Path, learner: Path) -> Path:
    (root / "models").mkdir(parents=True)
    shutil.copy(learner, root / "models" / "plain.pkl")
    config = root / "config.yaml"
    config.write_text("model: models/plain.pkl\nthreads: 1\nreport:\n  explain: never\n", encoding="utf-8")
    return config


def test_names_that_match_are_mapped_by_name_whatever_their_order() -> None:
    assert learner_classes(LABELS, ("High", "Low", "Neutral")) == {"Low": "Low", "Neutral": "Neutral", "High": "High"}
    assert learner_classes(LABELS, tuple(ENGAGEMENT.values())) == ENGAGEMENT


def test_counts_that_differ_are_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError, match=r"^'train\.label\.classes' lists 3 classes .* the learner has 2: "
                                          r"\['Low', 'High'\] \(lowest first, in the order 'classes' gives\)"):
        learner_classes(LABELS, ("Low", "High"))


@pytest.mark.slow
def test_scorer_index_maps_labels_to_a_plain_learners_classes_by_order(tmp_path: Path, posts: Path) -> None:
    learner = build_learner(tmp_path / "engagement.pkl", colour_design(), names=ENGAGEMENT)
    config = _project(tmp_path / "proj", learner)

    result = CliRunner().invoke(main, ["index", str(posts), "--config", str(config)])

    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "Evidence index: " in output and "plain.index.parquet" in output
    # The comparison was built: each way has its line, the baseline named in the learner's own class.
    assert "kNN estimate (3 nearest posts): accuracy " in output, output
    assert "Classifier: accuracy " in output, output
    assert any(f"Majority baseline (always {name}): accuracy " in output for name in ENGAGEMENT.values()), output
    assert "Best supported: " in output
    index = pd.read_parquet(index_path(tmp_path / "proj" / "models" / "plain.pkl"))
    labelled = prepare(load_settings(config), posts).table.set_index("source")["label"]
    expected = [ENGAGEMENT[labelled[source]] for source in index["source"]]
    assert list(index["label"]) == expected, "each post's label is the learner's class at the same place"
    assert set(index["predicted"]) <= set(ENGAGEMENT.values())


@pytest.mark.slow
def test_scorer_index_refuses_a_learner_with_fewer_classes_in_one_line(tmp_path: Path, posts: Path) -> None:
    learner = build_learner(tmp_path / "two.pkl", colour_design(), only=("Low", "High"))
    config = _project(tmp_path / "proj", learner)

    result = CliRunner().invoke(main, ["index", str(posts), "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output  # its log lines come first
    line = errors[0]
    assert line.startswith("error: 'train.label.classes' lists 3 classes ['Low', 'Neutral', 'High'], but the "
                           "learner has 2: ['Low', 'High']"), line
    assert "'classes'" in line
    assert not index_path(tmp_path / "proj" / "models" / "plain.pkl").exists(), "refused before anything is written"
