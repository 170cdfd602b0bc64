"""The classifier: the learner's classes ordered low to high, and probabilities with the embedding of the same
forward pass from one call."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.config import load_settings
from scorer.errors import ConfigError
from scorer.model.runtime import Outputs
from scorer.scoring.classifier import Classifier, order_classes
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [
        (["High", "Low", "Neutral"], ["Low", "Neutral", "High"]),
        (["high_engagement", "LOW_engagement", "medium"], ["LOW_engagement", "medium", "high_engagement"]),
        (["Mid", "low", "HIGH"], ["low", "Mid", "HIGH"]),
        (["high", "low"], ["low", "high"]),
    ],
)
def test_class_order_is_inferred_from_names(vocab: list[str], expected: list[str]) -> None:
    assert order_classes(vocab, None, None) == expected


@pytest.mark.parametrize("vocab", [["bronze", "silver", "gold"], ["low", "lower", "high"], ["mid-high", "low", "x"]])
def test_unclear_class_names_ask_for_the_classes_key(vocab: list[str]) -> None:
    with pytest.raises(ConfigError, match="set 'classes' in config.yaml, lowest engagement first"):
        order_classes(vocab, None, None)


def test_configured_classes_must_match_the_learner() -> None:
    assert order_classes(["b", "a", "c"], ("c", "a", "b"), None) == ["c", "a", "b"]
    with pytest.raises(ConfigError, match=r"lists \['a', 'b'\] but the learner's classes are \['a', 'b', 'c'\]"):
        order_classes(["b", "a", "c"], ("a", "b"), None)


def test_order_saved_by_training_is_used() -> None:
    assert order_classes(["x", "y", "z"], None, ["z", "x", "y"]) == ["z", "x", "y"]


def test_probabilities_lowest_class_first_and_the_embedding_come_from_one_forward_pass(
        watched: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    watched.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    classifier = Classifier(load_settings(watched.config), explain=False)
    assert classifier.classes == ("Low", "Neutral", "High")  # the learner's own order is High, Low, Neutral
    assert classifier.geometry is not None and classifier.has_embedding
    passes: list[int] = []
    run = classifier.runtime.run

    def counted(batch: np.ndarray) -> Outputs:
        passes.append(len(batch))
        return run(batch)

    monkeypatch.setattr(classifier.runtime, "run", counted)
    w, h = classifier.geometry.size
    pixels = np.stack([np.full((h, w, 3), CLASS_COLOURS[name], np.uint8) for name in classifier.classes])
    probs, embedding = classifier.predict_with_embedding(pixels)
    assert passes == [3], "one forward pass gives both"
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1)
    assert [classifier.classes[i] for i in probs.argmax(axis=1)] == ["Low", "Neutral", "High"]
    assert embedding is not None and embedding.shape[0] == 3 and embedding.shape[1] > 3
    assert np.array_equal(classifier.predict_fp32(pixels), probs)  # no precision check: full precision

