"""The assembly: a classifier, its checks, evidence, advice and decoding workers, opened into one Engine.

Every room (score, watch, serve, bulk, outcomes) opens its engine here, so the engine and the classifier
never import each other.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from scorer.checks.decode_check import DecodeCheck, load_or_measure_decode_check
from scorer.checks.precision import PrecisionCheck
from scorer.context.advice import Advisor
from scorer.context.combined import context_path, read_context
from scorer.decoding.decode import decode_file
from scorer.decoding.pool import DecodeFn, DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import ModelError
from scorer.evidence.index import EvidenceIndex, load_evidence
from scorer.memory import trim_heap
from scorer.model.integrity import verify_context, verify_index
from scorer.model.runtime import OnnxRuntime
from scorer.results import ModelInfo
from scorer.scoring.classifier import Classifier
from scorer.scoring.engine import Engine
from scorer.scoring.protocols import Enrichment, Explain
from scorer.settings import Settings

log = logging.getLogger(__name__)


def open_engine(settings: Settings, decode: DecodeFn | None = None, *, largest_batch: int | None = None) -> Engine:
    """Load the configured model (once), its evidence index and Grad-CAM if wanted, and start its decoding workers.

    `largest_batch`: the most creatives this engine will score at once, when known (a one-shot run). Larger
    than `report.explain_max` under `explain: auto`, no overlay can be drawn, so the PyTorch copy is not kept.
    """
    report = settings.report
    drawn = not (report.explain == "auto" and largest_batch is not None and largest_batch > report.explain_max)
    classifier = Classifier(settings, explain=drawn)
    index = None
    if classifier.has_embedding:
        index = load_evidence(settings.model, classifier.sha256, lambda path: verify_index(settings, path))
    advisor = open_advisor(settings, classifier.sha256, classifier.has_embedding)
    enrichment = Enrichment(index, *_explainer(classifier, settings), advisor)
    check, precision = _open_checks(classifier, settings)
    # the one ModelInfo of this engine: what its checks learn later is read from them (Engine.info)
    opened = describe_model(classifier, settings, evidence=_evidence_note(classifier, settings, index),
                            explain=_explain_note(classifier, settings), context=advisor.describe(),
                            decode=check.describe() if check is not None else "",
                            precision=precision.describe() if precision is not None else "")
    limits = ImageLimits.from_settings(settings.images)
    thumb_px = settings.report.thumbnail_px if settings.report.thumbnails else 0
    job = DecodeJob(classifier.geometry, limits, thumb_px, decode or decode_file,
                    video=VideoLimits.from_settings(settings.video))
    pool = DecodePool(job, settings.images.decode_workers, settings.images.decode_timeout)
    return Engine(classifier, pool, opened, enrichment, check, precision, settings.video.hook_weight)


def _open_checks(classifier: Classifier, settings: Settings) -> tuple[DecodeCheck | None, PrecisionCheck | None]:
    """The model's decode check, then its precision check, which int8 passes only where JPEGs are drafted."""
    if classifier.geometry is None:
        return None, None
    check = load_or_measure_decode_check(classifier.geometry, settings.images.decode, classifier.sha256,
                                         settings.state, classifier.predict_fp32)
    trim_heap(collect=False)  # the calibration images' decodes, given back before the quantiser starts
    precision = classifier.check_precision(settings, lambda: check.drafts)
    trim_heap(collect=False)  # and what the precision check's images and timings used, before the workers start
    return check, precision


def describe_model(classifier: Classifier, settings: Settings, *, evidence: str = "", explain: str = "",
                   context: str = "", decode: str = "", precision: str = "") -> ModelInfo:
    """What the report's Model sheet says of a classifier as it was opened, with the notes of what was opened
    beside it; `precision`: the precision check's finding, when there is one."""
    runtime = classifier.runtime
    if not precision:
        precision = "fp32" if isinstance(runtime, OnnxRuntime) else (
            "fp16 (half precision, on CUDA)" if settings.precision == "fp16" else "fp32 (PyTorch)")
    return ModelInfo(
        path=settings.model, sha256=classifier.sha256, classes=classifier.classes, device=runtime.device,
        runtime=runtime.name, preprocessing=classifier.preprocessing,
        versions={name: _version(name) for name in ("fastai", "torch", "onnxruntime")}, card=read_card(settings.model),
        evidence=evidence, explain=explain, decode=decode, export_check=classifier.export_check, context=context,
        precision=precision, video=VideoLimits.from_settings(settings.video).describe())


def _explainer(classifier: Classifier, settings: Settings) -> tuple[Explain | None, int]:
    """Grad-CAM as `report.explain` asks, and the most creatives a call may have for it to draw their overlays."""
    explain = settings.report.explain
    explainer = None
    if explain != "never" and classifier.torch_model is not None and classifier.has_embedding:
        from scorer.evidence.gradcam import Explainer

        explainer = Explainer(classifier.torch_model, classifier.prepare, classifier.threads,
                              settings.report.thumbnail_px)
    return explainer, settings.report.explain_max if explain == "auto" else (1 << 62 if explainer else 0)


def _evidence_note(classifier: Classifier, settings: Settings, index: EvidenceIndex | None) -> str:
    """What the Model sheet says of the evidence index."""
    if index is not None:
        return f"{len(index)} past posts in {index.path}: nearest posts, their median and the account percentile"
    if classifier.has_embedding:
        return (f"no evidence index beside the model: build one with `scorer index DATA --model {settings.model}` "
                "(DATA: a posts.csv or Instaloader folder) to see report-alike past posts")
    return "none: the model is not shaped as fastai's vision_learner builds it, so it gives no embedding"


def _explain_note(classifier: Classifier, settings: Settings) -> str:
    """What the Model sheet says of Grad-CAM."""
    explain = settings.report.explain
    if explain == "never":
        return "never (report.explain: never)"
    if not classifier.has_embedding:
        return "none: the model is not shaped as fastai's vision_learner builds it"
    if explain == "auto":  # also when this run's batch was larger, and the PyTorch copy was not kept
        return f"Grad-CAM for the predicted class, for batches of at most {settings.report.explain_max} creatives"
    return "Grad-CAM for the predicted class, for every creative"


def open_advisor(settings: Settings, model_sha256: str, has_embedding: bool) -> Advisor:
    """The model's combined model (verified against its pin), or the reason why scoring stays image-only."""
    path = context_path(settings.model)
    if not path.exists():
        return Advisor(None, f"no combined model beside the model ({path.name}): `scorer train` on posts with dates "
                             "makes one")
    context = read_context(path, verify_context(settings, path))  # the bytes that were hashed are the ones read
    if context.model_sha256 != model_sha256:
        raise ModelError(f"combined model {path} was made for another model (sha256 {context.model_sha256[:12]}…): "
                         "train again with `scorer train`, or delete it to score image-only")
    if not has_embedding:
        return Advisor(None, "the model gives no embedding, which the combined model needs")
    if not context.use:
        return Advisor(context, f"the model card kept image-only: {context.verdict}")
    return Advisor(context, context.verdict)


def read_card(model: Path) -> dict[str, Any]:
    """The headline of the model card that `scorer train` writes beside the model, if there is one."""
    card = model.with_suffix(".card.json")
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("model card %s is not valid JSON: ignored", card)
        return {}
    return {"verdict": data.get("verdict", ""), **data.get("headline", {})}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
