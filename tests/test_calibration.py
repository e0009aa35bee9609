"""moa.learning.calibration: isotonic calibration of confidences, threshold tables, reliability bins, ECE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moa.errors import ErrorCode, UserError
from moa.learning.calibration import (
    THRESHOLDS,
    Calibration,
    expected_calibration_error,
    reliability,
    threshold_table,
)


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers right with probability p ~ U(0.3, 1) that report confidence p ** 0.3 (0.3 -> 0.70, 0.8 -> 0.94)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 1.0, size=n)
    correct = rng.uniform(size=n) < p
    return p**0.3, correct, p


def fit(conf: np.ndarray | list[float], correct: np.ndarray | list[bool]) -> Calibration:
    return Calibration.fit(list(map(float, conf)), list(map(bool, correct)), agent="sentiment", model="embedded:")


# --- pool adjacent violators ------------------------------------------------------------------


def test_pav_on_a_small_example() -> None:
    conf = [0.1, 0.2, 0.3, 0.4, 0.5] * 4
    correct = [False, True, False, True, True] * 4
    calibration = fit(conf, correct)
    # 0.2 (1.0) and 0.3 (0.0) violate the order and are pooled to 0.5
    assert [calibration.apply(c) for c in (0.1, 0.2, 0.3, 0.4, 0.5)] == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert calibration.xs == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert calibration.ys == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert calibration.n == 20 and calibration.accuracy == 0.6


def test_pav_is_the_least_squares_monotone_fit() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(size=60)
    correct = rng.uniform(size=60) < conf
    fitted = fit(conf, correct).apply_many(conf)
    order = np.argsort(conf)
    assert np.all(np.diff(fitted[order]) >= 0)
    error = float(np.sum((fitted - correct) ** 2))
    # any other monotone fit (e.g. smoothed or shifted versions) is no closer to the outcomes
    for other in (np.clip(fitted + 0.05, 0, 1), np.clip(fitted - 0.05, 0, 1), conf):
        assert error <= float(np.sum((other - correct) ** 2)) + 1e-12


def test_equal_confidences_are_pooled() -> None:
    conf = [0.9] * 10 + [0.5] * 10
    correct = [True] * 7 + [False] * 3 + [True] * 2 + [False] * 8
    calibration = fit(conf, correct)
    assert calibration.apply(0.9) == pytest.approx(0.7)
    assert calibration.apply(0.5) == pytest.approx(0.2)
    assert calibration.apply(0.7) == pytest.approx(0.45)  # linear between breakpoints


def test_apply_is_monotone_and_clamped() -> None:
    conf, correct, _ = overconfident(500, seed=2)
    calibration = fit(conf, correct)
    grid = np.linspace(0, 1, 1001)
    values = calibration.apply_many(grid)
    assert np.all(np.diff(values) >= 0)
    assert np.all((values >= 0) & (values <= 1))
    assert calibration.apply(0.0) == calibration.ys[0] and calibration.apply(1.0) == calibration.ys[-1]
    assert calibration.apply_many([0.8, 0.9]).tolist() == [calibration.apply(0.8), calibration.apply(0.9)]
    with pytest.raises(UserError):
        calibration.apply(float("nan"))


# --- the point of it: thresholds mean precision -----------------------------------------------


def test_calibration_turns_thresholds_into_precision() -> None:
    conf, correct, _ = overconfident(5000, seed=0)
    calibration = fit(conf, correct)
    fresh_conf, fresh_correct, _ = overconfident(5000, seed=1)
    calibrated = calibration.apply_many(fresh_conf)

    # raw confidences are over-confident: answers at or above t are right much less than t of the time
    for t in (0.8, 0.9):
        assert fresh_correct[fresh_conf >= t].mean() < t - 0.05
    # calibrated: on fresh data the kept answers are right at least t of the time (within noise),
    # and their mean calibrated confidence is their precision
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        kept = calibrated >= t
        assert kept.sum() > 200
        precision = fresh_correct[kept].mean()
        assert precision >= t - 0.03
        assert calibrated[kept].mean() == pytest.approx(precision, abs=0.03)
    # items whose calibrated confidence is near t are right about t of the time
    for lo in (0.5, 0.6, 0.7, 0.8):
        band = (calibrated >= lo) & (calibrated < lo + 0.1)
        assert fresh_correct[band].mean() == pytest.approx(lo + 0.05, abs=0.05)
    assert expected_calibration_error(fresh_conf, fresh_correct) > 0.15
    assert expected_calibration_error(calibrated, fresh_correct) < 0.03
    assert calibration.ece_raw is not None and calibration.ece is not None and calibration.ece < calibration.ece_raw


def test_threshold_table_on_the_fitting_data() -> None:
    conf, correct, _ = overconfident(2000, seed=3)
    calibration = fit(conf, correct)
    assert [row.threshold for row in calibration.table] == list(THRESHOLDS)
    coverages = [row.coverage for row in calibration.table]
    assert coverages == sorted(coverages, reverse=True)
    calibrated = calibration.apply_many(conf)
    for row in calibration.table:
        kept = calibrated >= row.threshold
        assert row.coverage == pytest.approx(kept.mean())
        if row.precision is None:
            assert not kept.any()
        else:
            assert row.precision == pytest.approx(correct[kept].mean())
            assert row.precision >= row.threshold - 1e-12  # isotonic: every kept block is at least t accurate
    # precision at t is at least t, so a lower threshold may already give 80% precision
    expected = min(row.threshold for row in calibration.table if row.precision is not None and row.precision >= 0.8)
    assert calibration.threshold_for(0.8) == expected <= 0.8
    assert calibration.threshold_for(1.01) is None


def test_threshold_table_when_nothing_reaches_a_threshold() -> None:
    rows = threshold_table([0.1, 0.2, 0.3], [True, False, True], thresholds=[0.2, 0.5])
    assert rows[0].coverage == pytest.approx(2 / 3) and rows[0].precision == 0.5
    assert rows[1].coverage == 0.0 and rows[1].precision is None


# --- errors -----------------------------------------------------------------------------------


def test_too_few_points() -> None:
    with pytest.raises(UserError) as info:
        fit([0.9, 0.4] * 9, [True, False] * 9)
    assert info.value.code == ErrorCode.INVALID_INPUT
    assert "at least 20 checked answers, got 18" in info.value.message
    assert "sentiment" in info.value.message and "embedded:" in info.value.message


@pytest.mark.parametrize("outcome", [True, False])
def test_needs_right_and_wrong_answers(outcome: bool) -> None:
    with pytest.raises(UserError) as info:
        fit([0.5 + i / 100 for i in range(30)], [outcome] * 30)
    which, other = ("correct", "wrong") if outcome else ("wrong", "correct")
    assert f"all 30 answers of sentiment on embedded: were {which}: calibration needs some {other} ones too" in info.value.message


@pytest.mark.parametrize(
    ("conf", "correct", "message"),
    [
        ([0.5] * 20, [True] * 19, "20 confidences but 19 outcomes"),
        ([1.5] + [0.5] * 19, [True, False] * 10, "between 0 and 1"),
        ([float("nan")] + [0.5] * 19, [True, False] * 10, "between 0 and 1"),
        ([0.5] * 20, [2] + [0] * 19, "true/false"),
    ],
)
def test_bad_points(conf: list[float], correct: list[bool], message: str) -> None:
    with pytest.raises(UserError, match=message):
        Calibration.fit(conf, correct, agent="a", model="m")


# --- reliability and ECE ----------------------------------------------------------------------


def test_reliability_bins() -> None:
    conf = [0.05, 0.15, 0.15, 0.95, 1.0, 0.999]
    correct = [False, True, False, True, True, False]
    bins = reliability(conf, correct, bins=10)
    assert len(bins) == 10 and sum(b.count for b in bins) == 6
    assert (bins[0].lo, bins[0].hi, bins[0].count, bins[0].accuracy) == (0.0, 0.1, 1, 0.0)
    assert bins[1].count == 2 and bins[1].accuracy == 0.5 and bins[1].confidence == pytest.approx(0.15)
    assert bins[5].count == 0 and bins[5].confidence is None and bins[5].accuracy is None
    assert bins[9].count == 3 and bins[9].accuracy == pytest.approx(2 / 3)  # 1.0 falls in the last bin
    with pytest.raises(UserError):
        reliability(conf, correct, bins=0)


def test_expected_calibration_error() -> None:
    # bin 1: conf 0.15, acc 0.5 (gap 0.35, 2 items); bin 8: conf 0.8, acc 1.0 (gap 0.2, 2 items)
    ece = expected_calibration_error([0.12, 0.18, 0.8, 0.8], [True, False, True, True])
    assert ece == pytest.approx((2 * 0.35 + 2 * 0.2) / 4)
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    assert expected_calibration_error(p, rng.uniform(size=20000) < p) < 0.02
    assert expected_calibration_error([], []) == 0.0


# --- persistence ------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    conf, correct, _ = overconfident(300, seed=4)
    calibration = fit(conf, correct)
    path = tmp_path / "calibrations" / "sentiment.json"
    calibration.save(path)
    loaded = Calibration.load(path)
    assert loaded == calibration
    assert loaded.apply_many(conf).tolist() == calibration.apply_many(conf).tolist()
    stored = json.loads(path.read_text())
    assert stored["agent"] == "sentiment" and stored["model"] == "embedded:" and len(stored["table"]) == len(THRESHOLDS)


def test_load_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no calibration at"):
        Calibration.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    for content in ("{not json", '{"xs": [0.5, 0.4], "ys": [0, 1], "n": 20, "accuracy": 0.5, "agent": "a", "model": "m"}', "[]"):
        bad.write_text(content)
        with pytest.raises(UserError) as info:
            Calibration.load(bad)
        assert info.value.code == ErrorCode.INPUT_FILE and "corrupt" in info.value.message


def test_held_out_ece_is_honest_where_the_fitting_data_flatters() -> None:
    rng = np.random.default_rng(11)
    conf = rng.uniform(0.5, 1.0, 200)
    correct = rng.uniform(size=200) < 0.7  # confidence says nothing about correctness
    calibration = Calibration.fit(conf, correct, agent="a", model="m")
    assert calibration.ece is not None and calibration.ece_held_out is not None
    assert calibration.ece < 0.02  # isotonic regression memorises its own points
    assert calibration.ece_held_out > 2 * calibration.ece + 0.02  # on answers it never saw it cannot
    small = Calibration.fit(conf[:30], correct[:30], agent="a", model="m")
    assert small.ece_held_out is None  # too few answers to hold any out
