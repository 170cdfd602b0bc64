"""The model card beside an exported learner: JSON for programs, Markdown with PNG plots for people.

Files, for a model `models/engagement.pkl`:
    engagement.card.json        everything below, as data (the report's Model sheet reads its headline)
    engagement.card.md          the same, readable, linking the two plots
    engagement.confusion.png    confusion matrix of the validation posts
    engagement.classes.png      posts per class, training and validation
    engagement.predictions.csv  each validation post's truth and probabilities, to recompute any metric
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scorer.fsutil import atomic_write
from scorer.results import show_interval
from scorer.textsafe import csv_text
from scorer.training.evaluate import Evaluation, Interval

_SUFFIXES = (".card.json", ".card.md", ".confusion.png", ".classes.png", ".predictions.csv")
_VERSIONS = ("scorer", "fastai", "torch", "torchvision", "timm", "numpy", "pandas", "pillow")
_MAX_ROWS_SHOWN = 50


def card_files(model: Path) -> list[Path]:
    """Every file of the card that belongs to `model`, whether it exists or not."""
    return [model.with_name(model.stem + suffix) for suffix in _SUFFIXES]


def versions() -> dict[str, str]:
    """Versions of the libraries that trained the model."""
    found = {}
    for name in _VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def headline(ev: Evaluation, split: str) -> dict[str, str]:
    """The few lines the report's Model sheet shows, as display strings."""
    how = "the newest (split by time)" if split == "time" else "a random share (no dates to split by)"
    return {
        "Accuracy": show_interval(ev.accuracy, percent=True),
        "Baseline": f"{show_interval(ev.baseline_accuracy, percent=True, interval=False)} (always {ev.majority_class})",
        "Balanced accuracy": show_interval(ev.balanced_accuracy, percent=True),
        "Macro-F1": show_interval(ev.macro_f1),
        "±1-class accuracy": show_interval(ev.within_one_accuracy, percent=True),
        "Spearman (score vs total)": show_interval(ev.spearman),
        "Validation posts": f"{ev.n}, {how}",
    }


def write_card(model: Path, card: dict[str, Any], predictions: pd.DataFrame, counts: pd.DataFrame) -> Path:
    """Write the card files beside `model`; `counts` has one row per class and columns train and valid."""
    json_path, md_path, confusion_png, classes_png, csv_path = card_files(model)
    card = {**card, "files": {"page": md_path.name, "confusion_matrix": confusion_png.name,
                              "class_distribution": classes_png.name, "predictions": csv_path.name}}
    safe = predictions.apply(lambda column: column.map(csv_text))
    atomic_write(csv_path, lambda tmp: safe.to_csv(tmp, index=False))
    atomic_write(confusion_png, lambda tmp: _plot_confusion(card["metrics"]["confusion"], card["classes"], tmp))
    atomic_write(classes_png, lambda tmp: _plot_counts(counts, tmp))
    atomic_write(md_path, _markdown(card))
    atomic_write(json_path, json.dumps(card, indent=2, default=str))
    return json_path


def _plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    cm = np.array(confusion)
    fig = Figure(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Validation posts")
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _plot_counts(counts: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(1.2 * len(counts) + 2.5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(counts))
    for offset, column in ((-0.2, "train"), (0.2, "valid")):
        ax.bar(x + offset, counts[column], width=0.4, label="training" if column == "train" else "validation")
    ax.set_xticks(x, list(counts.index))
    ax.set_ylabel("Posts")
    ax.set_title("Posts per class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def _markdown(card: dict[str, Any]) -> str:
    m, data, files = card["metrics"], card["data"], card["files"]
    lines = [
        f"# Model card: {card['model']['file']}", "",
        f"**Verdict: {card['verdict']}.**", "",
        f"Trained {card['created']} on {data['train']} posts; judged on {data['valid']} held-out posts "
        f"({'the newest: split by time' if data['split'] == 'time' else 'a random share: no dates to split by'}).", "",
        "| Metric | Value |", "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in card["headline"].items()),
        "", f"Intervals are bootstrap 95% intervals over {m['bootstrap']} resamples of the validation posts. "
        f"The verdict needs the interval of accuracy minus baseline to exclude 0.", "",
        "## Confusion matrix", "", f"![confusion matrix]({files['confusion_matrix']})", "",
        "| True \\ Predicted | " + " | ".join(card["classes"]) + " |",
        "| --- |" + " --- |" * len(card["classes"]),
        *(f"| {name} | " + " | ".join(map(str, row)) + " |"
          for name, row in zip(card["classes"], m["confusion"], strict=True)),
        "", "## Classes", "", f"![posts per class]({files['class_distribution']})", "",
        f"Classes, lowest engagement first: {', '.join(card['classes'])}. "
        f"Labelled by {card['labelling']['method']}"
        + (f" {card['labelling']['thresholds']}" if card["labelling"]["method"] == "thresholds" else "")
        + f" on likes + comments (normalize: {card['labelling']['normalize']}).", "",
        "| Class | Range | Training | Validation |", "| --- | --- | --- | --- |",
        *(f"| {name} | {_range(card['labelling']['ranges'][name])} | {data['class_counts']['train'][name]} | "
          f"{data['class_counts']['valid'][name]} |" for name in card["classes"]),
        "", "## Cleaning funnel", "", "| Step | Removed | Left |", "| --- | --- | --- |",
        *(f"| {step['rule']} | {step['removed']} | {step['left']} |" for step in card["cleaning"]["funnel"]),
    ]
    bad = card["bad_rows"]
    if bad:
        lines += ["", "## Skipped rows", "", "| Row | Reason |", "| --- | --- |",
                  *(f"| {_cell(row['source'])} | {_cell(row['reason'])} |" for row in bad[:_MAX_ROWS_SHOWN])]
        if len(bad) > _MAX_ROWS_SHOWN:
            lines.append(f"\n…and {len(bad) - _MAX_ROWS_SHOWN} more: see the card's JSON.")
    lines += _formats(card)
    lines += _comparison(card)
    lines += _context(card)
    lines += [
        "", "## Training", "",
        *(f"- {key}: {value}" for key, value in card["training"].items()),
        "", "## Files", "",
        f"- model SHA-256: `{card['model']['sha256']}`",
        f"- validation predictions: {files['predictions']}",
        f"- evidence index: {card['index']['file']} ({card['index']['posts']} posts), "
        f"SHA-256 `{card['index']['sha256']}`",
        "- library versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), "",
    ]
    return "\n".join(lines)


def _comparison(card: dict[str, Any]) -> list[str]:
    comparison = card.get("comparison")
    if not comparison:
        return []
    return ["", "## Ways of predicting", "",
            "On the held-out posts: the kNN estimate (the class most common among the 3 most similar training "
            "posts, and their median likes + comments), the classifier, and always answering the most common class.",
            "", "| Way | Accuracy | Spearman vs total engagement |", "| --- | --- | --- |",
            *(f"| {name} | {show_interval(Interval(**acc), percent=True)} | "
              f"{show_interval(Interval(**comparison['spearman'][name]))} |"
              for name, acc in comparison["accuracy"].items()),
            "", f"**Best supported: {comparison['verdict']}.**"]


def _context(card: dict[str, Any]) -> list[str]:
    context = card.get("context")
    if not context:
        return []
    lines = ["", "## Posting time and caption", "",
             "The same kind of model (logistic regression) sees the image embedding, the context signals, or "
             "both; each is judged on the held-out posts. Context signals: "
             + "; ".join(f"{name} ({doc})" for name, doc in context["signals"].items()) + "."]
    comparison = context.get("comparison")
    if comparison:
        lines += ["", "| Way | Accuracy | Spearman vs total engagement |", "| --- | --- | --- |",
                  *(f"| {name} | {show_interval(Interval(**acc), percent=True)} | "
                    f"{show_interval(Interval(**comparison['spearman'][name]))} |"
                    for name, acc in comparison["accuracy"].items())]
    use = "Scoring uses the combined model." if context["use"] else "Scoring stays image-only."
    return [*lines, "", f"**Verdict: {context['verdict']}. {use}**"]


def _formats(card: dict[str, Any]) -> list[str]:
    """Posts per format and how each fared, once an account has more than images (a card of images stays as it was)."""
    formats = card.get("formats")
    if not formats or not any(sum(formats["counts"][fmt].values()) for fmt in ("video", "carousel")):
        return []
    accuracy, labelling = formats["accuracy"], card["labelling"]
    lines = ["", "## Formats", "", "| Format | Training | Validation | Accuracy | Baseline |",
             "| --- | --- | --- | --- | --- |"]
    for fmt, n in formats["counts"].items():
        figures = accuracy.get(fmt)
        judged = (f"{show_interval(Interval(**figures['accuracy']), percent=True)} | "
                  f"{show_interval(Interval(**figures['baseline']), percent=True, interval=False)} (always "
                  f"{figures['majority_class']})") if figures else "no held-out posts | "
        lines.append(f"| {fmt} | {n['train']} | {n['valid']} | {judged} |")
    lines += ["", "Carousels train on their first picture" + (", and are labelled with the images" if
                                                               labelling.get("by_format") else "")
              + ". Each format's baseline always answers that format's most common training class.", "",
              f"**Video against image engagement: {formats['engagement']['verdict']}"
              + (f": {labelling['how']}" if labelling.get("by_format") else "") + ".**"]
    videos = [(row["source"], f"its cover only: {row['why']}") for row in formats["cover"]] + [
        (source, "its frames") for source in formats["frames"]]
    if videos:
        lines += ["", f"Video posts trained on their frames: {len(formats['frames'])}; on their cover only: "
                      f"{len(formats['cover'])}.", "", "| Video post | Trained on |", "| --- | --- |",
                  *(f"| {_cell(source)} | {_cell(on)} |" for source, on in videos[:_MAX_ROWS_SHOWN])]
        if len(videos) > _MAX_ROWS_SHOWN:
            lines.append(f"\n…and {len(videos) - _MAX_ROWS_SHOWN} more: see the card's JSON.")
    return lines


def _range(span: list[float] | None) -> str:
    return "none" if span is None else f"{span[0]:,.6g} to {span[1]:,.6g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def keep_track_record(model: Path, record: dict[str, Any]) -> bool:
    """Put a model's forward track record (scorer.outcomes) into its card, if it has one; whether it did."""
    json_path = card_files(model)[0]
    try:
        card = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    atomic_write(json_path, json.dumps({**card, "track_record": record}, indent=2, default=str))
    return True
