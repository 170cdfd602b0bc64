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
from scorer.context.combined import context_path
from scorer.evidence.index import index_path
from scorer.fsutil import free_name, sha256_file, temp_path
from scorer.model.integrity import remember_pin
from scorer.model.runtime import choose_device, onnx_cache_path
from scorer.settings import Settings, TrainSettings
from scorer.training import fit
from scorer.training.ablation import ablate
from scorer.training.card import card_files, headline, versions, write_card
from scorer.training.evaluate import Evaluation, evaluate, scores_of
from scorer.training.formats import FormatFacts, accuracy_by_format, format_facts, labelling
from scorer.training.frames import FRAMES, FitRows, fit_rows, per_post
from scorer.training.index import IndexRun, build_index, scoring_classifier
from scorer.training.labels import FunnelStep, class_numbers, class_ranges
from scorer.training.posts import BadRow
from scorer.training.prepare import Prepared, prepare

log = logging.getLogger(__name__)

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


def train(settings: Settings, data: Path, *, out: Path | None = None, progress: bool = True,
          prepared: Prepared | None = None) -> TrainRun:
    """Train a learner on the posts in `data` and export it, with its card, to `out` (default: the configured model).

    It reads as its three steps: fit on the older posts, evaluate on the held-out newer ones against
    the majority baseline, then publish the model, its pin, its evidence index and its card. `prepared` is
    `prepare(settings, data)` done before this module was imported, as `scorer train` does: fastai takes
    seconds to import, and a wrong folder or CSV is then told at once.
    """
    prep = prepared or prepare(settings, data)
    with fit_rows(prep.table, settings) as rows:  # a video post's frames, in a folder that lasts the fit
        fitted = _fit(settings, prep, rows, progress)
    evaluated = _evaluate(settings, prep, fitted)
    return _publish(settings, data, (out or settings.model).absolute(), prep, fitted, evaluated)


@dataclass(frozen=True)
class _Fitted:
    """What fitting gave (the learner with its validation predictions, one row per post), where and how long it ran,
    and what each post trained on."""

    result: fit.Fitted
    device: str
    seconds: float
    rows: FitRows


@dataclass(frozen=True)
class _Evaluated:
    """The held-out rows and the evaluation of the learner's predictions on them, with the card's headline."""

    valid: pd.DataFrame
    evaluation: Evaluation
    headline: dict[str, str]
    formats: FormatFacts


def _fit(settings: Settings, prep: Prepared, rows: FitRows, progress: bool) -> _Fitted:
    t, table = settings.train, prep.table
    device = choose_device(settings.device)
    log.info("training %s (pretrained: %s) on %d posts, validating on %d (%s split), on %s", t.arch,
             t.pretrained, int((~table["is_valid"]).sum()), int(table["is_valid"].sum()), prep.split, device)
    if rows.has_frames:
        log.info("%d video posts train on their %d frames", rows.trained_on.count(FRAMES), rows.frame_count)
    started = time.perf_counter()
    fitted = fit.fit_classifier(rows.table, t.label.classes, t, device, settings.threads, progress)
    posts, probs = per_post(rows, fitted.valid_rows, fitted.valid_probs, settings.video.hook_weight)
    return _Fitted(dataclasses.replace(fitted, valid_probs=probs, valid_rows=posts), device,
                   time.perf_counter() - started, rows)


def _evaluate(settings: Settings, prep: Prepared, fitted: _Fitted) -> _Evaluated:
    t, classes = settings.train, settings.train.label.classes
    valid = prep.table.iloc[fitted.result.valid_rows]
    y_true = class_numbers(valid["label"], classes)  # the learner was fitted on these very names
    majority = int(np.argmax(prep.counts["train"].to_numpy()))
    ev = evaluate(y_true, fitted.result.valid_probs, valid["total"].to_numpy(), classes, majority, t.bootstrap,
                  t.seed)
    log.info("verdict: %s", ev.verdict)
    formats = format_facts(prep.table, fitted.rows.trained_on, fitted.rows.why_cover, prep.engagement,
                           accuracy_by_format(prep.table, valid, fitted.result.valid_probs, classes, t.bootstrap,
                                              t.seed))
    return _Evaluated(valid, ev, {**headline(ev, prep.split), **formats.headline()}, formats)


def _publish(settings: Settings, data: Path, model: Path, prep: Prepared, fitted: _Fitted,
             evaluated: _Evaluated) -> TrainRun:
    """Export (the old model archived), pin, index, weigh the context, and write the card."""
    t, classes, top = settings.train, settings.train.label.classes, evaluated.headline
    sha = _export(fitted.result, model, classes)
    archived = _archive(model)
    os.replace(temp_path(model), model)
    _pin(settings, model, sha)
    index = _index(settings, model, sha, prep.table)
    if index.comparison is not None:
        top.update(index.comparison.lines())
    context = ablate(settings, prep.table, index, model, sha)
    top["Posting time and caption"] = context.line()
    ev = evaluated.evaluation
    facts = {
        "model": {"file": model.name, "sha256": sha},
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "verdict": ev.verdict,
        "better_than_baseline": ev.better_than_baseline,
        "headline": top,
        "classes": list(classes),
        **_data_card(prep, data, t),
        "training": {**{k: v for k, v in dataclasses.asdict(t).items() if k not in ("clean", "label")},
                     "device": fitted.device, "seconds": round(fitted.seconds, 1)},
        "metrics": ev.as_dict(),
        "index": index.card_entry(),
        "comparison": index.comparison.as_dict() if index.comparison else None,
        "context": context.as_dict(),
        "formats": evaluated.formats.as_dict(),
        "versions": versions(),
    }
    predictions = _predictions(evaluated.valid, fitted.result.valid_probs, classes)
    predictions["trained on"] = [fitted.rows.trained_on[i] for i in fitted.result.valid_rows]
    card = write_card(model, facts, predictions, prep.counts)
    return TrainRun(model, sha, card, card_files(model)[1], archived, prep.posts.bad, prep.funnel, ev, top)


def _index(settings: Settings, model: Path, sha: str, table: pd.DataFrame) -> IndexRun:
    """The evidence index of the new model, embedded by the classifier exactly as scoring will load it."""
    started = time.perf_counter()
    run = build_index(settings, scoring_classifier(settings, model, sha), table, model)
    log.info("evidence index of %d posts built in %.1f s", run.posts, time.perf_counter() - started)
    return run


def _data_card(prep: Prepared, data: Path, t: TrainSettings) -> dict[str, object]:
    """The card's sections about the data: labelling, cleaning, skipped rows and the split."""
    return {
        "labelling": {"method": t.label.method, "thresholds": list(t.label.thresholds),
                      "normalize": t.label.normalize, "window": t.label.window,
                      "ranges": class_ranges(prep.table, t.label.classes),
                      **labelling(prep.table, t.label, prep.engagement)},
        "cleaning": {"rules": dataclasses.asdict(t.clean), "funnel": [dataclasses.asdict(s) for s in prep.funnel]},
        "bad_rows": [dataclasses.asdict(b) for b in prep.posts.bad],
        "data": _data_facts(data, prep.posts.format, prep.table, prep.split, prep.counts),
    }


def _export(fitted: fit.Fitted, model: Path, classes: tuple[str, ...]) -> str:
    """Export next to the model under a temporary name, so a failure never touches the model in use."""
    model.parent.mkdir(parents=True, exist_ok=True)
    staged = temp_path(model)
    fit.export_learner(fitted.learner, staged, classes)
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
    for path in (model, *card_files(model), index_path(model), context_path(model)):
        if path.exists():
            shutil.move(path, folder / path.name)
    # The ONNX copies are derived from the old model and large: scoring rebuilds them if that model comes back.
    for embedding in (False, True):
        onnx = onnx_cache_path(model, old_sha, model.parent, embedding)
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
    frame = valid[["source", "image", "format", "posted_at", "likes", "comments", "total", "value", "label"]].rename(
        columns={"label": "true"}).reset_index(drop=True)
    frame["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    for i, name in enumerate(classes):
        frame[f"P({name})"] = probs[:, i]
    frame["Engagement score"] = scores_of(probs)
    return frame
