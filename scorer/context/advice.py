"""Posting-time advice: a creative's Engagement score at its planned time and the best slots of the coming week.

The engine hands the Advisor the embeddings of a batch (from the same forward pass as the
probabilities) and each creative's plan; the Advisor answers with advice or with the note
that says why the creative was scored image-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from scorer.context.combined import CombinedModel
from scorer.context.plan import Plan
from scorer.context.signals import WEEKDAYS, design, planned_signals, zone
from scorer.results import Advice, engagement_score

#: Slots shown for each creative, and the hours of the coming week they are chosen from.
BEST = 3
_WEEK_HOURS = 7 * 24
NO_PLAN = "image-only: no planned time (add a sidecar <name>.txt or <name>.json, or a plan.csv row)"


class Advisor:
    """The combined model, if the card made it the default, or the reason scoring is image-only."""

    def __init__(self, model: CombinedModel | None, why: str, clock: Callable[[], float] = time.time) -> None:
        self.model = model if model is not None and model.use else None
        self.why = why
        self._clock = clock
        self._tz = zone(model.timezone) if model is not None else None

    @property
    def in_use(self) -> bool:
        """Whether creatives with a plan get advice (so the engine must hand over embeddings)."""
        return self.model is not None

    def describe(self) -> str:
        """The Model sheet's line."""
        return f"combined model in use ({self.why})" if self.in_use else f"image-only: {self.why}"

    def advise(self, embedding: np.ndarray | None, plans: Sequence[Plan | None]) -> list[tuple[Advice | None, str]]:
        """For each creative: its advice, or None and the note that says why it was scored image-only."""
        answers: list[tuple[Advice | None, str]] = []
        for i, plan in enumerate(plans):
            if plan is None:
                answers.append((None, NO_PLAN if self.in_use else ""))
            elif self.model is None:
                answers.append((None, f"image-only: {self.why}"))
            elif embedding is None:
                answers.append((None, "image-only: this model scored it on fastai's own path, which gives no "
                                      "embedding for the combined model"))
            else:
                answers.append((self._one(self.model, embedding[i], plan), ""))
        return answers

    def _one(self, model: CombinedModel, embedding: np.ndarray, plan: Plan) -> Advice:
        assert self._tz is not None
        start = datetime.fromtimestamp(self._clock(), timezone.utc).replace(minute=0, second=0, microsecond=0)
        slots = [start + timedelta(hours=h + 1) for h in range(_WEEK_HOURS)]
        times = slots + ([plan.posted_at] if plan.posted_at is not None else [])
        x = design(planned_signals(times, plan.caption, model.account, self._tz))
        probs = model.linear.predict(np.repeat(embedding[None, :], len(times), axis=0), x)
        scores = np.array([engagement_score(p) for p in probs])
        # Best first; among equal scores the earliest slot, so the advice does not jump about.
        order = sorted(range(_WEEK_HOURS), key=lambda i: (-round(float(scores[i]), 6), i))[:BEST]
        best = tuple((_slot(slots[i].astimezone(self._tz)), round(float(scores[i]), 1)) for i in order)
        if plan.posted_at is None:
            return Advice("", None, best)
        local = plan.posted_at.astimezone(self._tz)
        return Advice(f"{WEEKDAYS[local.weekday()]} {local:%Y-%m-%d %H:%M} ({self._tz.key})",
                      round(float(scores[-1]), 1), best)


def _slot(when: datetime) -> str:
    return f"{WEEKDAYS[when.weekday()]} {when:%H:00}"
