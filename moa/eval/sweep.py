"""Replaying a cascade from recorded answers: configurations, the threshold sweep, reliability.

Every item record keeps each cascade step's answer, confidence and calls. :func:`replay` decides,
as :func:`moa.agent.cascade.run_cascade` does, which answer the cascade keeps at a threshold: the first
step whose answer is not weak (:func:`moa.agent.cascade.weakness`), else the highest step that answered.
No model is called, so a sweep over thresholds is free. An item the cascade would have sent to a
step it was never run on is *unknown* at that threshold: a plain eval records the steps its real
cascade tried, so its sweep covers thresholds up to the eval's own; ``--sweep`` runs every step on
every item and covers them all.

The sweep is the RouteLLM curve: quality against the share of items the last (most expensive)
step answered, one point per threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from moa.agent.cascade import weakness
from moa.agent.results import Attempt
from moa.eval.metrics import score
from moa.eval.records import ItemRecord, StepRecord
from moa.learning.calibration import Bin, expected_calibration_error, reliability
from moa.usage import Usage

SWEEP_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.05))

Thresholds = float | None | Sequence[float | None]
"""One threshold for every step, or one per step (the last step's only marks an answer unverified)."""


def threshold_at(thresholds: Thresholds, index: int) -> float | None:
    """The threshold of step ``index`` (a step past the given ones takes the last one given)."""
    if thresholds is None or isinstance(thresholds, (int, float)):
        return thresholds
    return thresholds[min(index, len(thresholds) - 1)] if thresholds else None


def describe_thresholds(thresholds: Thresholds) -> str:
    """``0.7``, or ``0.55,0.8`` for one threshold per step (``-`` for none)."""
    if thresholds is None or isinstance(thresholds, (int, float)):
        return "-" if thresholds is None else f"{thresholds:g}"
    return ",".join("-" if t is None else f"{t:g}" for t in thresholds)


@dataclass(frozen=True)
class Outcome:
    """Which recorded attempt the cascade keeps (``None``: none answered) and how many it tried."""

    kept: int | None
    tried: int


def _weak(attempt: StepRecord, threshold: float | None) -> bool:
    return weakness(Attempt(step=attempt.step, model=attempt.model, error=attempt.error, confidence=attempt.confidence), threshold) is not None


def replay(attempts: Sequence[StepRecord], n_steps: int, threshold: Thresholds) -> Outcome | None:
    """The cascade's choice among ``attempts`` at ``threshold`` (one, or one per step); ``None``
    when it needs a step not recorded."""
    kept: int | None = None
    for index, attempt in enumerate(attempts):
        if attempt.error is None:
            kept = index
        if not _weak(attempt, threshold_at(threshold, index)):
            return Outcome(kept, index + 1)
    if len(attempts) < n_steps:
        return None
    return Outcome(kept, len(attempts))


def settle(record: ItemRecord, n_steps: int, threshold: Thresholds) -> ItemRecord:
    """``record`` with the answer, usage and ``used`` flags of its cascade at ``threshold`` (every step recorded)."""
    outcome = replay(record.attempts, n_steps, threshold) or Outcome(None, len(record.attempts))
    attempts = [a.model_copy(update={"used": i < outcome.tried}) for i, a in enumerate(record.attempts)]
    kept = attempts[outcome.kept] if outcome.kept is not None else None
    error = None if kept is not None else next((a.error for a in reversed(attempts[: outcome.tried]) if a.error), None)
    unverified = None
    if kept is not None and outcome.kept is not None and _weak(kept, threshold_at(threshold, outcome.kept)):
        unverified = "no higher step" if outcome.kept == outcome.tried - 1 else f"{attempts[outcome.tried - 1].step} failed"
    return record.model_copy(
        update={
            "attempts": attempts,
            "prediction": kept.prediction if kept else None,
            "confidence": kept.confidence if kept else None,
            "answered_by": kept.step if kept else None,
            "escalated": outcome.tried > 1,
            "unverified": unverified,
            "error": error,
            "usage": [u for a in attempts[: outcome.tried] for u in a.usage],
        }
    )


class ConfigRow(BaseModel):
    """One configuration replayed from the records: a single step, or the cascade at a threshold."""

    name: str
    items: int
    metrics: dict[str, float]
    cost: float
    tokens: int
    model_seconds_per_item: float
    """Sum of the call latencies per item (the compute an item costs)."""
    top_share: float
    """Share of items answered by the cascade's last step."""
    threshold: float | None = None


class SweepPoint(ConfigRow):
    known: int = 0
    """Items whose cascade outcome the records determine at this threshold."""


def _row(
    name: str,
    usage: list[list[Usage]],
    predicted: list[str | None],
    gold: list[str],
    labels: Sequence[str],
    top: int,
    threshold: float | None = None,
    confidence: list[float | None] | None = None,
    kind: str = "classification",
) -> dict[str, object]:
    n = max(len(gold), 1)
    flat = [u for us in usage for u in us]
    return {
        "name": name,
        "items": len(gold),
        "metrics": score(kind, predicted, gold, labels, confidence if kind == "classification" else None),
        "cost": sum(u.cost for u in flat),
        "tokens": sum(u.tokens for u in flat),
        "model_seconds_per_item": round(sum(u.latency_s for u in flat) / n, 5),
        "top_share": top / n,
        "threshold": threshold,
    }


def step_alone(records: Sequence[ItemRecord], steps: Sequence[str], labels: Sequence[str], kind: str = "classification") -> list[ConfigRow]:
    """Each step answering every item alone (the steps every record has), scored by the metrics of ``kind``."""
    rows = []
    for index, step in enumerate(steps):
        if not records or not all(len(r.attempts) > index and r.attempts[index].step == step for r in records):
            continue
        attempts = [r.attempts[index] for r in records]
        predicted = [a.prediction if a.error is None else None for a in attempts]
        confidence = [a.confidence if a.error is None else None for a in attempts]
        top = len(records) if index == len(steps) - 1 else 0
        row = _row(step, [a.usage for a in attempts], predicted, [r.gold for r in records], labels, top, confidence=confidence, kind=kind)
        rows.append(ConfigRow.model_validate(row))
    return rows


def cascade_at(records: Sequence[ItemRecord], steps: Sequence[str], threshold: Thresholds, labels: Sequence[str], kind: str = "classification") -> SweepPoint:
    """The cascade replayed at ``threshold`` (one, or one per step) over the items it is determined for."""
    settled = [settle(r, len(steps), threshold) for r in records if replay(r.attempts, len(steps), threshold) is not None]
    top = sum(1 for r in settled if r.answered_by == steps[-1]) if steps else 0
    name = "→".join(steps) + (f" @{describe_thresholds(threshold)}" if threshold is not None else "")
    predicted = [r.prediction for r in settled]
    single = threshold if threshold is None or isinstance(threshold, (int, float)) else None
    row = _row(name, [r.usage for r in settled], predicted, [r.gold for r in settled], labels, top, single, [r.confidence for r in settled], kind)
    return SweepPoint.model_validate({**row, "known": len(settled)})


def threshold_sweep(
    records: Sequence[ItemRecord], steps: Sequence[str], labels: Sequence[str], thresholds: Sequence[float] = SWEEP_THRESHOLDS, kind: str = "classification"
) -> list[SweepPoint]:
    """:func:`cascade_at` for each threshold, keeping the points every item is determined for."""
    if len(steps) < 2:
        return []
    points = [cascade_at(records, steps, t, labels, kind) for t in thresholds]
    return [p for p in points if p.known == len(records)]


class Reliability(BaseModel):
    """Confidence against correctness of the kept answers."""

    bins: list[Bin] = Field(default_factory=list)
    ece: float | None = None
    items: int = 0


def reliability_of(records: Sequence[ItemRecord]) -> Reliability:
    """Reliability bins and expected calibration error of the items that have a confidence."""
    pairs = [(min(max(r.confidence, 0.0), 1.0), r.prediction == r.gold) for r in records if r.confidence is not None]
    if not pairs:
        return Reliability()
    conf = [c for c, _ in pairs]
    hit = [h for _, h in pairs]
    return Reliability(bins=reliability(conf, hit), ece=expected_calibration_error(conf, hit), items=len(pairs))
