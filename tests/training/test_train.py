"""`scorer train` end to end on generated posts: funnel, split, card, verdict, export, archive and pin.

Two real trainings serve most tests: posts whose engagement follows their colour
(posts.csv, through the CLI) and the same images with their engagement shuffled
(an Instaloader profile folder, through the library).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from scorer.cli import main
from scorer.config import load_settings
from scorer.demo import write_creatives, write_posts
from scorer.errors import DataError
from scorer.fsutil import sha256_file
from scorer.results import engagement_score
from scorer.training.train import train
from tests.support.helpers import scorer_imports
from tests.support.postgen import append_rows, csv_to_instaloader, write_rows

CLASSES = ["Low", "Neutral", "High"]
# One thread: these tests share two cores with others, and oversubscribed PyTorch slows down many times over.
TRAIN_YAML = """model: models/engagement.pkl
threads: 1
{extra}train:
  arch: resnet18
  pretrained: false
  epochs: {epochs}
  image_size: {size}
  batch_size: 16
  learning_rate: 0.003
  valid_pct: 0.25
"""
BAD_ROWS = {
    "posts.csv line 162": "image gone.jpg not found",
    "posts.csv line 163": "image broken.jpg: file is incomplete or corrupt",
    "posts.csv line 164": "likes is not a number: 'many'",
    "posts.csv line 165": "same image as posts.csv line 2",
}


@dataclass
class Trained:
    """One training run and what it left behind."""

    root: Path
    data: Path
    config: Path
    model: Path
    card: dict
    predictions: pd.DataFrame
    output: str = ""


def _project(root: Path, epochs: int = 6, size: int = 64, extra: str = "") -> Path:
    for name in ("inbox", "outbox"):
        (root / name).mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(TRAIN_YAML.format(extra=extra, epochs=epochs, size=size), encoding="utf-8")
    return config


def _load(model: Path, root: Path, data: Path, config: Path, output: str = "") -> Trained:
    card = json.loads(model.with_suffix(".card.json").read_text())
    predictions = pd.read_csv(model.with_name(card["files"]["predictions"]))
    return Trained(root, data, config, model, card, predictions, output)


@pytest.fixture(scope="session")
def visual(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """160 posts whose engagement follows their colour, plus four bad rows, trained through `scorer train`."""
    root = tmp_path_factory.mktemp("visual")
    posts_csv = write_posts(root / "data", n=160, seed=3)
    shutil.copy(root / "data" / "post-000.jpg", root / "data" / "again.jpg")
    (root / "data" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    append_rows(posts_csv, [
        {"file": "gone.jpg", "likes": "8000", "comments": "80", "posted_at": "2024-03-01", "is_ad": "false"},
        {"file": "broken.jpg", "likes": "8000", "comments": "80", "posted_at": "2024-03-01", "is_ad": "false"},
        {"file": "post-001.jpg", "likes": "many", "comments": "80", "posted_at": "2024-03-01", "is_ad": "false"},
        {"file": "again.jpg", "likes": "8000", "comments": "80", "posted_at": "2024-03-01", "is_ad": "false"},
    ])
    # A pin in config.yaml for the model path: training must update it, or scoring would refuse the new model.
    config = _project(root / "proj", extra=f"model_sha256: {'ab' * 32}  # pinned\n")
    result = CliRunner().invoke(main, ["train", str(root / "data"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return _load(root / "proj" / "models" / "engagement.pkl", root, root / "data", config, result.output)


@pytest.fixture(scope="session")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The same images as `visual` in an Instaloader profile folder, each post given another post's engagement."""
    root = tmp_path_factory.mktemp("shuffled")
    profile = csv_to_instaloader(write_posts(root / "data", n=160, seed=3), root / "shop", shuffle_seed=0)
    config = _project(root / "proj", epochs=2, size=32)  # there is nothing to learn: a short run says so as well
    run = train(load_settings(config), profile, progress=False)
    return _load(run.model, root, profile, config)


def _expected_funnel(posts_csv: Path) -> list[dict[str, object]]:
    """The article's rules applied by hand, row by row: the first rule a row breaks removes it."""
    rules = ["is_ad is true", "comments/likes below 0.5%", "comments/likes above 2%", "more than 16,000 likes"]
    with open(posts_csv, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    removed = dict.fromkeys(rules, 0)
    usable = 0
    for n, row in enumerate(rows, start=2):
        if f"posts.csv line {n}" in BAD_ROWS:
            continue
        usable += 1
        likes, comments = int(row["likes"]), int(row["comments"])
        ratio = comments / likes
        if row["is_ad"] == "true":
            removed[rules[0]] += 1
        elif ratio < 0.005:
            removed[rules[1]] += 1
        elif ratio > 0.02:
            removed[rules[2]] += 1
        elif likes > 16000:
            removed[rules[3]] += 1
    funnel = [{"rule": "rows read", "removed": 0, "left": len(rows)},
              {"rule": "unusable rows (listed above)", "removed": len(rows) - usable, "left": usable}]
    left = usable
    for rule in rules:
        left -= removed[rule]
        funnel.append({"rule": rule, "removed": removed[rule], "left": left})
    return funnel


@pytest.mark.slow
def test_funnel_counts_follow_the_articles_rules_row_by_row(visual: Trained) -> None:
    expected = _expected_funnel(visual.data / "posts.csv")
    assert visual.card["cleaning"]["funnel"] == expected
    assert all(step["removed"] > 0 for step in expected[1:]), "every rule should have something to remove"
    for step in expected:
        assert f"│ {step['rule']}" in visual.output
    assert visual.card["cleaning"]["rules"] == {"drop_is_ad": True, "min_comment_ratio": 0.005,
                                                "max_comment_ratio": 0.02, "max_likes": 16000}


@pytest.mark.slow
def test_bad_rows_are_counted_reported_and_skipped(visual: Trained) -> None:
    assert {(b["source"], b["reason"]) for b in visual.card["bad_rows"]} == set(BAD_ROWS.items())
    page = visual.model.with_name("engagement.card.md").read_text()
    for source, reason in BAD_ROWS.items():
        assert f"skipped {source}: {reason}" in visual.output
        assert f"| {source} | {reason} |" in page


@pytest.mark.slow
def test_validation_posts_are_the_newest(visual: Trained) -> None:
    kept = visual.card["cleaning"]["funnel"][-1]["left"]
    data = visual.card["data"]
    assert data["split"] == "time"
    assert (data["posts"], data["valid"], data["train"]) == (kept, round(kept * 0.25), kept - round(kept * 0.25))
    # Every usable post that survived cleaning, newest first: the first `valid` of them are held out.
    posts = pd.read_csv(visual.data / "posts.csv", dtype=str).assign(line=lambda f: [f"posts.csv line {n}"
                                                                                     for n in range(2, len(f) + 2)])
    survivors = posts[~posts["line"].isin(BAD_ROWS)].copy()
    survivors["likes"] = survivors["likes"].astype(int)
    survivors["comments"] = survivors["comments"].astype(int)
    ratio = survivors["comments"] / survivors["likes"]
    survivors = survivors[(survivors["is_ad"] == "false") & ratio.between(0.005, 0.02) & (survivors["likes"] <= 16000)]
    newest = survivors.assign(at=pd.to_datetime(survivors["posted_at"])).sort_values("at", ascending=False)
    assert set(visual.predictions["source"]) == set(newest["line"][: data["valid"]])
    assert pd.to_datetime(data["valid_from"]) > newest["at"].iloc[data["valid"]]


@pytest.mark.slow
@pytest.mark.parametrize("run", ["visual", "shuffled"])
def test_card_metrics_equal_metrics_recomputed_from_the_saved_predictions(run: str,
                                                                          request: pytest.FixtureRequest) -> None:
    trained: Trained = request.getfixturevalue(run)
    card, p = trained.card, trained.predictions
    m = card["metrics"]
    assert card["classes"] == CLASSES
    # The labels follow the article's thresholds on likes + comments.
    assert (p["total"] == p["likes"] + p["comments"]).all()
    assert list(p["true"]) == [CLASSES[(t >= 7000) + (t > 11000)] for t in p["total"]]
    probs = p[[f"P({c})" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert list(p["predicted"]) == [CLASSES[i] for i in probs.argmax(axis=1)]
    assert list(p["Engagement score"]) == pytest.approx([engagement_score(row) for row in probs], abs=1e-4)
    y, pred = p["true"], p["predicted"]
    assert m["n"] == len(p) == card["data"]["valid"]
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["confusion"] == confusion_matrix(y, pred, labels=CLASSES).tolist()
    distance = np.abs(y.map(CLASSES.index) - pred.map(CLASSES.index))
    assert m["within_one_accuracy"]["value"] == pytest.approx(np.mean(distance <= 1))
    spearman = p["Engagement score"].corr(p["total"], method="spearman")
    assert m["spearman"]["value"] == pytest.approx(spearman, abs=1e-6)
    # The baseline always answers the most common class of the training posts.
    train_counts = card["data"]["class_counts"]["train"]
    assert m["majority_class"] == max(CLASSES, key=lambda c: train_counts[c])
    assert m["baseline_accuracy"]["value"] == pytest.approx(np.mean(y == m["majority_class"]))
    assert m["accuracy_minus_baseline"]["value"] == pytest.approx(
        m["accuracy"]["value"] - m["baseline_accuracy"]["value"])
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "within_one_accuracy", "accuracy_minus_baseline"):
        assert m[key]["low"] <= m[key]["value"] <= m[key]["high"], key
    assert card["headline"]["Accuracy"].startswith(f"{m['accuracy']['value']:.0%} (95% CI ")
    assert card["model"]["sha256"] == sha256_file(trained.model)
    assert {"fastai", "torch", "torchvision"} <= set(card["versions"])
    for name in card["files"].values():
        assert trained.model.with_name(name).is_file()


@pytest.mark.slow
def test_a_visual_signal_beats_the_majority_baseline(visual: Trained) -> None:
    m = visual.card["metrics"]
    assert m["accuracy_minus_baseline"]["low"] > 0
    assert visual.card["better_than_baseline"] is True
    assert visual.card["verdict"].startswith(f"better than always answering {m['majority_class']}: accuracy ")
    assert f"Verdict: {visual.card['verdict']}" in " ".join(visual.output.split())


@pytest.mark.slow
def test_shuffled_engagement_is_not_called_better_than_baseline(shuffled: Trained) -> None:
    assert shuffled.card["data"]["format"] == "instaloader"
    assert shuffled.card["data"]["split"] == "time"
    assert shuffled.card["better_than_baseline"] is False
    assert shuffled.card["verdict"].startswith("not better than baseline: accuracy ")


@pytest.mark.slow
def test_the_exported_learner_scores_with_no_classes_in_config(visual: Trained) -> None:
    assert "classes" not in visual.config.read_text()
    assert load_settings(visual.config).model_sha256 == visual.card["model"]["sha256"], "the config pin follows"
    inbox = visual.root / "proj" / "inbox"
    write_creatives(inbox, per_palette=3)
    result = CliRunner().invoke(main, ["score", str(inbox), "--config", str(visual.config)])
    assert result.exit_code == 0, result.output
    (report,) = (visual.root / "proj" / "outbox").glob("engagement-report-*.xlsx")
    book = load_workbook(report)
    model = dict(book["Model"].iter_rows(min_row=2, values_only=True))
    assert model["Classes (low → high)"] == "Low < Neutral < High"
    assert model["Model card: verdict"] == visual.card["verdict"]
    assert model["Model card: Accuracy"] == visual.card["headline"]["Accuracy"]
    header = [c.value for c in book["Ranking"][1]]
    rows = [dict(zip(header, r, strict=True)) for r in book["Ranking"].iter_rows(min_row=2, values_only=True)]
    mean = {colour: np.mean([r["Engagement score"] for r in rows if r["File"].startswith(colour)])
            for colour in ("warm-red", "cool-blue")}
    assert mean["warm-red"] > mean["cool-blue"], "the learner learned that warm colours engage more"


@pytest.mark.slow
def test_training_again_archives_the_previous_model_and_its_card(tmp_path: Path) -> None:
    data = write_posts(tmp_path / "data", n=40, seed=5).parent
    config = _project(tmp_path / "proj", epochs=1, size=32)
    settings = load_settings(config)
    first = train(settings, data, progress=False)
    stale_onnx = first.model.with_name(f"engagement.{first.sha256[:16]}.onnx")
    stale_onnx.write_bytes(b"derived from the first model")
    assert first.model.with_name(f"engagement.{first.sha256[:16]}.embedding.onnx").is_file()  # exported to index
    second = train(settings, data, progress=False)
    assert second.archived is not None and second.archived.parent == tmp_path / "proj" / "models" / "archive"
    assert sha256_file(second.archived / "engagement.pkl") == first.sha256
    assert {p.name for p in second.archived.iterdir()} == {
        "engagement.pkl", "engagement.card.json", "engagement.card.md", "engagement.confusion.png",
        "engagement.classes.png", "engagement.predictions.csv", "engagement.index.parquet", "engagement.context.json"}
    assert json.loads((second.archived / "engagement.card.json").read_text())["model"]["sha256"] == first.sha256
    assert sha256_file(second.model) == second.sha256
    assert not stale_onnx.exists(), "the old model's ONNX copy is derived and large: it goes"
    assert not first.model.with_name(f"engagement.{first.sha256[:16]}.embedding.onnx").exists()
    assert os.stat(second.model).st_mode & 0o022 == 0, "the scorer refuses models that others can write"
    pins = json.loads((tmp_path / "proj" / "state" / "model-pins.json").read_text())
    assert pins[str(second.model.resolve())] == second.sha256
    assert not [p for p in second.model.parent.iterdir() if p.name.startswith(".")], "temporary files left"


@pytest.mark.slow
def test_out_writes_elsewhere_and_leaves_the_configured_model_alone(tmp_path: Path) -> None:
    data = write_posts(tmp_path / "data", n=40, seed=6).parent
    config = _project(tmp_path / "proj", epochs=1, size=32)
    out = tmp_path / "elsewhere" / "shop.pkl"
    result = CliRunner().invoke(main, ["train", str(data), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_name("shop.card.md").is_file()
    assert not (tmp_path / "proj" / "models").exists()
    assert f"Model card: {out.with_name('shop.card.md')}" in " ".join(result.output.split())


@pytest.mark.slow
def test_missing_pretrained_weights_fail_fast_and_say_where_to_put_them(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_posts(tmp_path / "data", n=40, seed=7).parent
    config = _project(tmp_path / "proj")
    config.write_text(config.read_text().replace("pretrained: false", "pretrained: true"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # Whether or not this machine has a network, the download must fail: send it to a closed local port.
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["train", str(data), "--config", str(config)])
    assert time.monotonic() - started < 60
    assert result.exit_code == 2, result.output
    (message,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert message.startswith("error: pretrained weights for resnet18 could not be downloaded (")
    assert f"put resnet18-f37072fd.pth from https://download.pytorch.org/models/resnet18-f37072fd.pth into " \
           f"{tmp_path / 'torch' / 'hub' / 'checkpoints'}" in message
    assert message.endswith("or set 'train.pretrained: false' in config.yaml")
    assert not (tmp_path / "proj" / "models").exists()


@pytest.mark.slow
def test_unknown_architecture_is_a_config_error(tmp_path: Path) -> None:
    data = write_posts(tmp_path / "data", n=40, seed=8).parent
    config = _project(tmp_path / "proj")
    config.write_text(config.read_text().replace("arch: resnet18", "arch: resnet19"))
    result = CliRunner().invoke(main, ["train", str(data), "--config", str(config)])
    assert result.exit_code == 2
    # Without timm the message suggests installing it; with timm it says neither library has the name.
    assert re.search(r"error: 'train.arch' 'resnet19' is (not a torchvision classification model: use one such as "
                     r"resnet18.*pip install timm|neither a torchvision nor a timm model: check the spelling)",
                     result.output)


@pytest.mark.parametrize(
    ("n", "label_yaml", "message"),
    [
        (12, "", r"only \d+ posts are left after cleaning \(see the funnel\): training needs at least 20"),
        (60, "  label:\n    thresholds: [20000, 30000]\n",
         "no training posts in class Neutral, High: add posts, change 'train.label.thresholds'"),
    ],
)
def test_too_little_data_is_a_data_error_that_names_the_fix(tmp_path: Path, n: int, label_yaml: str,
                                                            message: str) -> None:
    data = write_posts(tmp_path / "data", n=n, seed=9).parent
    config = _project(tmp_path / "proj")
    config.write_text(config.read_text() + label_yaml)
    with pytest.raises(DataError, match=message):
        train(load_settings(config), data, progress=False)


@pytest.mark.slow
def test_plain_fastai_loads_the_export_without_the_scorer(visual: Trained) -> None:
    code = ("import sys, warnings; warnings.simplefilter('ignore'); from fastai.vision.all import load_learner; "
            f"learn = load_learner({str(visual.model)!r}); "
            "print(learn.engagement_classes, list(learn.dls.vocab), any(m.startswith('scorer') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert done.stdout.strip() == "['Low', 'Neutral', 'High'] ['Low', 'Neutral', 'High'] False"


def test_cleaning_that_removes_every_post_is_a_data_error(tmp_path: Path) -> None:
    import csv

    posts = write_posts(tmp_path / "data", n=30, seed=9)
    with open(posts, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["likes"], row["comments"] = "20000", "600"  # every post over max_likes: all look advertised
    write_rows(posts, rows)
    with pytest.raises(DataError, match=r"only 0 posts are left after cleaning \(see the funnel\)"):
        train(load_settings(_project(tmp_path / "proj")), posts.parent, progress=False)


@pytest.mark.parametrize("made", ["images only", "a CSV with no likes", "nothing"])
def test_posts_that_cannot_train_are_refused_before_fastai_loads(tmp_path: Path, made: str) -> None:
    data = tmp_path / "shop"
    if made != "nothing":
        write_creatives(data, per_palette=1)
    if made == "a CSV with no likes":
        (data / "posts.csv").write_text("file,comments\ncool-blue-1.jpg,3\n", encoding="utf-8")
    run = scorer_imports("train", str(data), cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == {
        "images only": f"error: {data} has neither posts.csv nor Instaloader post metadata (*.json, *.json.xz): "
                       "add a posts.csv with columns file, likes, comments, or download the profile with instaloader\n",
        "a CSV with no likes": f"error: {data / 'posts.csv'} has no column likes: the header needs file, likes, "
                               "comments (optional: posted_at, is_ad, caption, format)\n",
        "nothing": f"error: {data} does not exist: give a folder with posts.csv, or an Instaloader profile folder\n",
    }[made]
    assert not run.packages & {"fastai", "torch", "torchvision"}, "told before seconds of importing fastai"


@pytest.mark.slow
@pytest.mark.parametrize("run", ["visual", "shuffled"])
def test_a_download_without_videos_trains_and_reads_as_before(run: str, request: pytest.FixtureRequest) -> None:
    trained: Trained = request.getfixturevalue(run)
    card = trained.card
    assert card["formats"]["counts"] == {"image": {"train": card["data"]["train"], "valid": card["data"]["valid"]},
                                         "video": {"train": 0, "valid": 0}, "carousel": {"train": 0, "valid": 0}}
    assert card["labelling"]["by_format"] is False and card["formats"]["frames"] == card["formats"]["cover"] == []
    assert not [key for key in card["headline"] if key.startswith(("Formats", "Video", "Accuracy, "))]
    assert set(trained.predictions["trained on"]) == {"picture"}
    assert "## Formats" not in trained.model.with_name("engagement.card.md").read_text()
