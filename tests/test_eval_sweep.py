"""Replaying a cascade from recorded answers (hand-made records, no model)."""

from __future__ import annotations

import pytest

from moa.eval.records import ItemRecord, StepRecord
from moa.eval.sweep import cascade_at, reliability_of, replay, settle, step_alone, threshold_sweep
from moa.usage import Usage

STEPS = ["specialist", "slm"]


def step(name: str, label: str | None, confidence: float | None, error: str | None = None, seconds: float = 0.0) -> StepRecord:
    usage = [Usage(model=name, tier=name, latency_s=seconds, prompt_tokens=10 if name == "slm" else 0)]
    return StepRecord(step=name, model=name, prediction=label, confidence=confidence, error={"code": error, "message": "x"} if error else None, usage=usage)


def item(id: str, gold: str, *attempts: StepRecord) -> ItemRecord:
    return ItemRecord(id=id, gold=gold, attempts=list(attempts))


RECORDS = [
    item("1", "pos", step("specialist", "pos", 0.9, seconds=0.01), step("slm", "pos", 0.8, seconds=1.0)),
    item("2", "pos", step("specialist", "neg", 0.6, seconds=0.01), step("slm", "pos", 0.9, seconds=1.0)),
    item("3", "neg", step("specialist", "pos", 0.55, seconds=0.01), step("slm", "neg", 0.7, seconds=1.0)),
]


def test_cascade_at_thresholds() -> None:
    low = cascade_at(RECORDS, STEPS, 0.5, ["neg", "pos"])
    assert (low.metrics["accuracy"], low.top_share, low.tokens) == (pytest.approx(1 / 3), 0.0, 0)
    mid = cascade_at(RECORDS, STEPS, 0.7, ["neg", "pos"])
    assert (mid.metrics["accuracy"], mid.top_share, mid.tokens) == (1.0, pytest.approx(2 / 3), 20)
    assert mid.model_seconds_per_item == pytest.approx((0.03 + 2.0) / 3, abs=1e-5)
    high = cascade_at(RECORDS, STEPS, 0.95, ["neg", "pos"])
    assert (high.metrics["accuracy"], high.top_share, high.known) == (1.0, 1.0, 3)


def test_settle_marks_used_steps_and_unverified_answers() -> None:
    settled = settle(RECORDS[2], 2, 0.95)
    assert (settled.prediction, settled.answered_by, settled.escalated, settled.unverified) == ("neg", "slm", True, "no higher step")
    assert [a.used for a in settled.attempts] == [True, True] and len(settled.usage) == 2
    kept = settle(RECORDS[0], 2, 0.5)
    assert (kept.answered_by, [a.used for a in kept.attempts], len(kept.usage)) == ("specialist", [True, False], 1)


def test_an_invalid_answer_escalates_at_any_threshold_and_a_failed_item_has_no_answer() -> None:
    invalid = item("4", "pos", step("specialist", None, None, error="invalid_output"), step("slm", "pos", 0.9))
    assert replay(invalid.attempts, 2, 0.0) is not None and settle(invalid, 2, 0.0).answered_by == "slm"
    down = item("5", "pos", step("specialist", "neg", 0.3), step("slm", None, None, error="model_unreachable"))
    settled = settle(down, 2, 0.5)
    assert (settled.prediction, settled.unverified) == ("neg", "slm failed")


def test_unrecorded_steps_make_an_item_unknown() -> None:
    partial = item("6", "pos", step("specialist", "pos", 0.85))  # the real cascade stopped here at 0.8
    assert replay(partial.attempts, 2, 0.8) is not None
    assert replay(partial.attempts, 2, 0.9) is None
    points = threshold_sweep([*RECORDS, partial], STEPS, ["neg", "pos"])
    assert points and max(p.threshold for p in points) == 0.85  # at 0.9 item 6 would need the slm


def test_each_step_alone_and_reliability() -> None:
    rows = step_alone(RECORDS, STEPS, ["neg", "pos"])
    assert [(r.name, r.metrics["accuracy"], r.top_share) for r in rows] == [("specialist", pytest.approx(1 / 3), 0.0), ("slm", 1.0, 1.0)]
    records = [settle(r, 2, 0.7) for r in RECORDS]
    rel = reliability_of(records)
    assert rel.items == 3 and rel.ece == pytest.approx((2 * 0.1 + 0.3) / 3)  # bins 0.9 (two right) and 0.7 (one right)


def test_each_replayed_configuration_has_the_auc_of_its_confidences() -> None:
    specialist, slm = step_alone(RECORDS, STEPS, ["neg", "pos"])
    # P(pos): specialist 0.9, 0.4, 0.55 -> the negative item outranks one positive: 1 of 2 pairs
    assert specialist.metrics["auc"] == pytest.approx(0.5)
    # slm: 0.8, 0.9, 0.3 -> every positive above the negative
    assert slm.metrics["auc"] == 1.0
    assert cascade_at(RECORDS, STEPS, 0.7, ["neg", "pos"]).metrics["auc"] == 1.0
    assert "auc" not in step_alone(RECORDS, STEPS, ["neg", "pos", "neutral"])[0].metrics  # three labels
