"""`scorer train`: import, clean, label, split, fit, evaluate, export, card and pin. It knows nothing about reports."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from scorer.config import set_top_level_keys
from scorer.errors import DataError
from scorer.fsutil import free_name, sha256_file, temp_path
from scorer.scoring import learner
from scorer.scoring.integrity import remember_pin
from scorer.scoring.runtime import choose_device, onnx_cache_path
from scorer.scoring.vet import ImageLimits
from scorer.settings import Settings, TrainSettings
from scorer.training.card import card_files, headline, versions, write_card
from scorer.training.evaluate import Evaluation, evaluate, scores_of
from scorer.training.labels import FunnelStep, class_ranges, clean, label, split
from scorer.training.posts import BadRow, Posts, import_posts

log = logging.getLogger(__name__)

# Fewer posts than this cannot be both trained on and judged.
MIN_POSTS = 20


@dataclass(frozen=True)
class TrainRun:
    """What one training run produced."""

    model: Path
    sha256: str
    card: Path
    page: Path
    archived: Path | None
    bad: list[BadRow]
    funnel: list[FunnelStep]
    evaluation: Evaluation
    headline: dict[str, str]


@dataclass(frozen=True)
class _Prepared:
    """Posts imported, cleaned, labelled and split, ready to fit."""

    posts: Posts
    funnel: list[FunnelStep]
    table: pd.DataFrame
    split: str
    counts: pd.DataFrame


def train(settings: Settings, data: Path, *, out: Path | None = None, progress: bool = True) -> TrainRun:
    """Train a learner on the posts in `data` and export it, with its card, to `out` (default: the configured model)."""
    t = settings.train
    classes = t.label.classes
    model = (out or settings.model).absolute()
    prep = _prepare(settings, data)
    table = prep.table
    device = choose_device(settings.device)
    log.info("training %s (pretrained: %s) on %d posts, validating on %d (%s split), on %s", t.arch,
             t.pretrained, int((~table["is_valid"]).sum()), int(table["is_valid"].sum()), prep.split, device)
    started = time.perf_counter()
    fitted = learner.fit_classifier(table, classes, t, device, settings.threads, progress)
    seconds = time.perf_counter() - started

    valid = table.iloc[fitted.valid_rows]
    y_true = valid["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    majority = int(np.argmax(prep.counts["train"].to_numpy()))
    ev = evaluate(y_true, fitted.valid_probs, valid["total"].to_numpy(), classes, majority, t.bootstrap, t.seed)
    log.info("verdict: %s", ev.verdict)
    top = headline(ev, prep.split)

    sha = _export(fitted, model, classes)
    archived = _archive(model)
    os.replace(temp_path(model), model)
    facts = {
        "model": {"file": model.name, "sha256": sha},
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "verdict": ev.verdict,
        "better_than_baseline": ev.better_than_baseline,
        "headline": top,
        "classes": list(classes),
        **_data_card(prep, data, t),
        "training": {**{k: v for k, v in dataclasses.asdict(t).items() if k not in ("clean", "label")},
                     "device": device, "seconds": round(seconds, 1)},
        "metrics": ev.as_dict(),
        "versions": versions(),
    }
    card = write_card(model, facts, _predictions(valid, fitted.valid_probs, classes), prep.counts)
    _pin(settings, model, sha)
    return TrainRun(model, sha, card, card_files(model)[1], archived, prep.posts.bad, prep.funnel, ev, top)


def _prepare(settings: Settings, data: Path) -> _Prepared:
    """Import, clean, label and split the posts; refuse data too small to train and judge."""
    t = settings.train
    posts = import_posts(data, ImageLimits.from_settings(settings.images))
    for row in posts.bad:
        log.warning("skipped %s: %s", row.source, row.reason)
    kept, steps = clean(posts.table, t.clean)
    funnel = [FunnelStep("rows read", 0, len(posts.table) + len(posts.bad)),
              FunnelStep("unusable rows (listed above)", len(posts.bad), len(posts.table)), *steps]
    for step in funnel:
        log.info("funnel: %-32s removed %5d, left %5d", step.rule, step.removed, step.left)
    _check_count(len(kept))  # before labelling: an empty table has nothing to class or split
    table, how = split(label(kept, t.label), t.valid_pct, t.seed)
    table = table.reset_index(drop=True)
    counts = _class_counts(table, t.label.classes)
    _check_enough(table, counts)
    return _Prepared(posts, funnel, table, how, counts)


def _data_card(prep: _Prepared, data: Path, t: TrainSettings) -> dict[str, object]:
    """The card's sections about the data: labelling, cleaning, skipped rows and the split."""
    return {
        "labelling": {"method": t.label.method, "thresholds": list(t.label.thresholds),
                      "normalize": t.label.normalize, "window": t.label.window,
                      "ranges": class_ranges(prep.table, t.label.classes)},
        "cleaning": {"rules": dataclasses.asdict(t.clean), "funnel": [dataclasses.asdict(s) for s in prep.funnel]},
        "bad_rows": [dataclasses.asdict(b) for b in prep.posts.bad],
        "data": _data_facts(data, prep.posts.format, prep.table, prep.split, prep.counts),
    }


def _class_counts(table: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    part = np.where(table["is_valid"], "valid", "train")
    counts = pd.crosstab(table["label"], part).reindex(index=list(classes), columns=["train", "valid"])
    return counts.fillna(0).astype(int)


def _check_count(n: int) -> None:
    if n < MIN_POSTS:
        raise DataError(
            f"only {n} posts are left after cleaning (see the funnel): training needs at least {MIN_POSTS}; "
            "add posts, or relax the rules under 'train.clean' in config.yaml"
        )


def _check_enough(table: pd.DataFrame, counts: pd.DataFrame) -> None:
    _check_count(len(table))
    empty = [name for name, n in counts["train"].items() if n == 0]
    if empty:
        raise DataError(
            f"no training posts in class {', '.join(empty)}: add posts, change 'train.label.thresholds', "
            "or set 'train.label.method: quantiles' in config.yaml"
        )


def _export(fitted: learner.Fitted, model: Path, classes: tuple[str, ...]) -> str:
    """Export next to the model under a temporary name, so a failure never touches the model in use."""
    model.parent.mkdir(parents=True, exist_ok=True)
    staged = temp_path(model)
    learner.export_learner(fitted.learner, staged, classes)
    # The scorer refuses models that others can write; umask may say otherwise.
    os.chmod(staged, 0o644)
    return sha256_file(staged)


def _archive(model: Path) -> Path | None:
    """Move an existing model and its card to models/archive/<stem>-<time>/, so that no model is ever lost."""
    if not model.exists():
        return None
    stamp = datetime.fromtimestamp(model.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    folder = free_name(model.parent / "archive" / f"{model.stem}-{stamp}")
    folder.mkdir(parents=True)
    old_sha = sha256_file(model)
    for path in (model, *card_files(model)):
        if path.exists():
            shutil.move(path, folder / path.name)
    # The ONNX copy is derived from the old model and large: scoring rebuilds it if that model comes back.
    onnx = onnx_cache_path(model, old_sha, model.parent)
    for path in (onnx, onnx.with_suffix(".json")):
        path.unlink(missing_ok=True)
    log.info("previous model moved to %s", folder)
    return folder


def _pin(settings: Settings, model: Path, sha: str) -> None:
    remember_pin(settings, model, sha)
    # A pin in config.yaml for this very path would otherwise refuse the model we just made.
    if settings.model_sha256 and settings.source and model == settings.model.absolute():
        set_top_level_keys(settings.source, {"model_sha256": sha})


def _data_facts(data: Path, fmt: str, table: pd.DataFrame, how: str, counts: pd.DataFrame) -> dict[str, object]:
    valid_dates = table.loc[table["is_valid"], "posted_at"]
    return {
        "source": str(data.absolute()), "format": fmt, "split": how, "posts": len(table),
        "train": int((~table["is_valid"]).sum()), "valid": int(table["is_valid"].sum()),
        "valid_from": str(valid_dates.min()) if how == "time" else None,
        "valid_to": str(valid_dates.max()) if how == "time" else None,
        "class_counts": {part: {str(k): int(v) for k, v in counts[part].items()} for part in ("train", "valid")},
    }


def _predictions(valid: pd.DataFrame, probs: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    frame = valid[["source", "image", "posted_at", "likes", "comments", "total", "value", "label"]].rename(
        columns={"label": "true"}).reset_index(drop=True)
    frame["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    for i, name in enumerate(classes):
        frame[f"P({name})"] = probs[:, i]
    frame["Engagement score"] = scores_of(probs)
    return frame
