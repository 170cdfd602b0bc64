"""The assembly: a classifier, its checks, evidence, advice and decoding workers, opened into one Engine.

Every room (score, watch, serve, bulk, outcomes) opens its engine here, so the engine and the classifier
never import each other.
"""

from __future__ import annotations

import dataclasses

from scorer.checks.decode_check import load_or_measure_decode_check
from scorer.context.advice import Advisor
from scorer.context.combined import context_path, read_context
from scorer.decoding.decode import decode_file
from scorer.decoding.pool import DecodeFn, DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.errors import ModelError
from scorer.evidence.index import load_evidence
from scorer.memory import trim_heap
from scorer.model.integrity import verify_context, verify_index
from scorer.scoring.classifier import Classifier
from scorer.scoring.engine import Engine, Enrichment
from scorer.settings import Settings


def open_engine(settings: Settings, decode: DecodeFn | None = None, *, largest_batch: int | None = None) -> Engine:
    """Load the configured model (once), its evidence index and Grad-CAM if wanted, and start its decoding workers.

    `largest_batch`: the most creatives this engine will score at once, when known (a one-shot run). Larger
    than `report.explain_max` under `explain: auto`, no overlay can be drawn, so the PyTorch copy is not kept.
    """
    report = settings.report
    drawn = not (report.explain == "auto" and largest_batch is not None and largest_batch > report.explain_max)
    classifier = Classifier(settings, explain=drawn)
    enrichment = open_enrichment(classifier, settings)
    check = None
    if classifier.geometry is not None:
        check = load_or_measure_decode_check(classifier.geometry, settings.images.decode, classifier.info.sha256,
                                             settings.state, classifier.predict_fp32)
        classifier.info = dataclasses.replace(classifier.info, decode=check.describe())
        decoding = check
        trim_heap(collect=False)  # the calibration images' decodes, given back before the quantiser starts
        classifier.load_or_measure_precision(settings, lambda: decoding.drafts)
        trim_heap(collect=False)  # and what the precision check's images and timings used, before the workers start
    limits = ImageLimits.from_settings(settings.images)
    thumb_px = settings.report.thumbnail_px if settings.report.thumbnails else 0
    job = DecodeJob(classifier.geometry, limits, thumb_px, decode or decode_file)
    pool = DecodePool(job, settings.images.decode_workers, settings.images.decode_timeout)
    return Engine(classifier, pool, enrichment, check)


def open_enrichment(classifier: Classifier, settings: Settings) -> Enrichment:
    """The model's evidence index (verified) and Grad-CAM explainer, as `report.explain` asks; noted in its info."""
    index = None
    if classifier.has_embedding:
        index = load_evidence(settings.model, classifier.info.sha256, lambda path: verify_index(settings, path))
    if index is not None:
        note = f"{len(index)} past posts in {index.path}: nearest posts, their median and the account percentile"
    elif classifier.has_embedding:
        note = (f"no evidence index beside the model: build one with `scorer index DATA --model {settings.model}` "
                "(DATA: a posts.csv or Instaloader folder) to see report-alike past posts")
    else:
        note = "none: the model is not shaped as fastai's vision_learner builds it, so it gives no embedding"
    explain = settings.report.explain
    explainer = None
    if explain != "never" and classifier.torch_model is not None and classifier.has_embedding:
        from scorer.evidence.gradcam import Explainer

        explainer = Explainer(classifier.torch_model, classifier.prepare, classifier.threads,
                              settings.report.thumbnail_px)
    up_to = settings.report.explain_max if explain == "auto" else (1 << 62 if explainer else 0)
    if explain == "never":
        looked = "never (report.explain: never)"
    elif not classifier.has_embedding:
        looked = "none: the model is not shaped as fastai's vision_learner builds it"
    elif explain == "auto":  # also when this run's batch was larger, and the PyTorch copy was not kept
        looked = f"Grad-CAM for the predicted class, for batches of at most {settings.report.explain_max} creatives"
    else:
        looked = "Grad-CAM for the predicted class, for every creative"
    advisor = open_advisor(settings, classifier.info.sha256, classifier.has_embedding)
    classifier.info = dataclasses.replace(classifier.info, evidence=note, explain=looked, context=advisor.describe())
    return Enrichment(index, explainer, up_to, advisor)


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
