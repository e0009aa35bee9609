"""Calibration: turning an agent's raw confidence into the chance that its answer is right.

Raw confidences (token probabilities, sample agreement, a model's own score) are usually
over-confident. :meth:`Calibration.fit` takes raw confidences with a 0/1 "was it correct"
each (answers checked against labelled data) and fits an **isotonic regression** of
correctness on confidence with the pool-adjacent-violators algorithm: sort by confidence,
pool equal confidences, then merge neighbouring blocks while a block's accuracy is not
above the previous one's. The result is the non-decreasing step function closest (least
squares) to the 0/1 outcomes. It is stored as breakpoints (each block's lowest and highest
confidence, both at the block's accuracy) and applied by linear interpolation between them,
which stays monotone; confidences outside the fitted range take the nearest end value.

After calibration a calibrated confidence is the accuracy of the answers around it, so
keeping the answers at or above a threshold ``t`` keeps answers whose mean calibrated
confidence is their precision, and that precision is at least ``t`` on the fitting data
(every kept block has accuracy >= t). :attr:`Calibration.table` lists, for common thresholds,
the share of answers kept (coverage) and their precision.

:func:`reliability` bins confidences for reliability diagrams and
:func:`expected_calibration_error` summarises them (the count-weighted mean gap between
confidence and accuracy per bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, model_validator

from moa.errors import ErrorCode, UserError
from moa.files import JsonFile
from moa.logs import get_logger

log = get_logger(__name__)

#: Fewest checked answers a calibration is fitted on.
MIN_POINTS = 20
#: Thresholds reported in :attr:`Calibration.table`.
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class ThresholdRow(BaseModel):
    """Answers with calibrated confidence >= ``threshold``: their share and their accuracy."""

    threshold: float
    coverage: float
    precision: float | None
    """``None`` when no answer reaches the threshold."""


class Bin(BaseModel):
    """One bin of a reliability diagram: confidences in ``[lo, hi)`` (the last bin includes 1)."""

    lo: float
    hi: float
    confidence: float | None
    """Mean confidence of the bin's items (``None`` when empty)."""
    accuracy: float | None
    """Share of the bin's items that were correct (``None`` when empty)."""
    count: int


class Calibration(JsonFile):
    """A fitted map from raw confidence to probability of being correct, for one agent, model and task."""

    what: ClassVar[str] = "the calibration"
    again: ClassVar[str] = "re-run `moa calibrate` to fit it again"

    xs: list[float]
    ys: list[float]
    n: int
    accuracy: float
    agent: str
    model: str
    key: str = ""
    """The task it was fitted for (``labels=negative,positive``): it is applied to that task only.
    Empty in files made before calibrations were kept per label set (never applied)."""
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    ece_raw: float | None = None
    """Expected calibration error of the raw confidences on the fitting data."""
    ece: float | None = None
    """Expected calibration error after calibration, on the fitting data (optimistic: isotonic
    regression fits those very points)."""
    ece_held_out: float | None = None
    """Expected calibration error after calibration on answers it was not fitted on (5-fold
    cross-validation; ``None`` below 50 answers): what to expect on new items."""
    table: list[ThresholdRow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_breakpoints(self) -> Calibration:
        if not self.xs or len(self.xs) != len(self.ys):
            raise ValueError(f"need as many xs as ys, at least one ({len(self.xs)} xs, {len(self.ys)} ys)")
        if any(b <= a for a, b in zip(self.xs, self.xs[1:], strict=False)):
            raise ValueError("xs must be strictly increasing")
        if any(b < a for a, b in zip(self.ys, self.ys[1:], strict=False)):
            raise ValueError("ys must be non-decreasing")
        return self

    @classmethod
    def fit(cls, confidences: Sequence[float], correct: Sequence[bool], *, agent: str, model: str, key: str = "") -> Calibration:
        """Fit isotonic regression of ``correct`` on ``confidences`` (see the module docstring)."""
        conf, hit = _check_points(confidences, correct)
        if len(conf) < MIN_POINTS:
            raise UserError(
                ErrorCode.INVALID_INPUT,
                f"calibrating {agent} on {model} needs at least {MIN_POINTS} checked answers, got {len(conf)}; "
                "evaluate it on more labelled items",
            )
        n_right = int(hit.sum())
        if n_right in (0, len(hit)):
            which = "correct" if n_right else "wrong"
            other = "wrong" if n_right else "correct"
            raise UserError(
                ErrorCode.INVALID_INPUT,
                f"all {len(hit)} answers of {agent} on {model} were {which}: calibration needs some {other} ones too; "
                "evaluate it on more (or more varied) labelled items",
            )
        xs, ys = _isotonic(conf, hit)
        calibration = cls(xs=xs, ys=ys, n=len(conf), accuracy=float(hit.mean()), agent=agent, model=model, key=key)
        calibrated = calibration.apply_many(conf)
        calibration.ece_raw = expected_calibration_error(conf, hit)
        calibration.ece = expected_calibration_error(calibrated, hit)
        calibration.ece_held_out = _held_out_ece(conf, hit)
        calibration.table = threshold_table(calibrated, hit)
        log.debug(
            "calibration_fitted",
            agent=agent,
            model=model,
            n=calibration.n,
            breakpoints=len(xs),
            ece_raw=round(calibration.ece_raw, 4),
            ece=round(calibration.ece, 4),
        )
        return calibration

    def apply(self, confidence: float) -> float:
        """The calibrated confidence of one raw confidence."""
        if not math.isfinite(confidence):
            raise UserError(ErrorCode.INVALID_INPUT, f"cannot calibrate confidence {confidence}; give a number in [0, 1]")
        return float(np.interp(confidence, self.xs, self.ys))

    def apply_many(self, confidences: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:meth:`apply` on many confidences at once."""
        values = np.asarray(confidences, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise UserError(ErrorCode.INVALID_INPUT, "cannot calibrate NaN or infinite confidences; give numbers in [0, 1]")
        out: npt.NDArray[np.float64] = np.interp(values, self.xs, self.ys)
        return out

    def threshold_for(self, precision: float) -> float | None:
        """The lowest tabled threshold whose precision reaches ``precision`` (``None`` if none does)."""
        for row in sorted(self.table, key=lambda r: r.threshold):
            if row.precision is not None and row.precision >= precision:
                return row.threshold
        return None



def _check_points(
    confidences: Sequence[float] | npt.NDArray[np.float64], correct: Sequence[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(conf) != len(hit):
        raise UserError(ErrorCode.INVALID_INPUT, f"{len(conf)} confidences but {len(hit)} outcomes; give one outcome per confidence")
    if not np.all(np.isfinite(conf)) or np.any((conf < 0) | (conf > 1)):
        raise UserError(ErrorCode.INVALID_INPUT, "confidences must be numbers between 0 and 1")
    if np.any((hit != 0) & (hit != 1)):
        raise UserError(ErrorCode.INVALID_INPUT, "outcomes must be true/false (1/0)")
    return conf, hit


def _held_out_ece(conf: npt.NDArray[np.float64], hit: npt.NDArray[np.float64], folds: int = 5, min_points: int = 50) -> float | None:
    """ECE of isotonic calibration on answers left out of its fit (``folds``-fold, fixed seed)."""
    if len(conf) < min_points:
        return None
    fold = np.random.default_rng(0).permutation(len(conf)) % folds
    predicted = np.empty(len(conf))
    for k in range(folds):
        train, test = fold != k, fold == k
        xs, ys = _isotonic(conf[train], hit[train])
        predicted[test] = np.interp(conf[test], xs, ys)
    return expected_calibration_error(predicted, hit)


def _isotonic(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators: breakpoints of the non-decreasing least-squares fit of ``y`` on ``x``."""
    order = np.argsort(x, kind="stable")
    xs_sorted, ys_sorted = x[order], y[order]
    unique_x, starts = np.unique(xs_sorted, return_index=True)
    sums = np.add.reduceat(ys_sorted, starts)
    counts = np.diff(np.append(starts, len(xs_sorted)))
    # each block: [sum of y, count, lowest x, highest x]
    blocks: list[list[float]] = []
    for xv, total, count in zip(unique_x.tolist(), sums.tolist(), counts.tolist(), strict=True):
        blocks.append([total, count, xv, xv])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] >= blocks[-1][0] * blocks[-2][1]:
            last = blocks.pop()
            blocks[-1][0] += last[0]
            blocks[-1][1] += last[1]
            blocks[-1][3] = last[3]
    xs: list[float] = []
    ys: list[float] = []
    for total, count, lo, hi in blocks:
        value = total / count
        xs.append(lo)
        ys.append(value)
        if hi > lo:
            xs.append(hi)
            ys.append(value)
    return xs, ys


def threshold_table(
    confidences: Sequence[float] | npt.NDArray[np.float64],
    correct: Sequence[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.float64],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[ThresholdRow]:
    """Coverage and precision of the answers at or above each threshold."""
    conf, hit = _check_points(confidences, correct)
    rows = []
    for t in thresholds:
        kept = conf >= t
        covered = int(kept.sum())
        precision = float(hit[kept].mean()) if covered else None
        rows.append(ThresholdRow(threshold=t, coverage=covered / len(conf) if len(conf) else 0.0, precision=precision))
    return rows


def reliability(
    confidences: Sequence[float] | npt.NDArray[np.float64],
    correct: Sequence[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.float64],
    bins: int = 10,
) -> list[Bin]:
    """Equal-width bins over [0, 1] with each bin's mean confidence, accuracy and count."""
    if bins < 1:
        raise UserError(ErrorCode.BAD_CONFIG, f"reliability needs at least one bin, got {bins}")
    conf, hit = _check_points(confidences, correct)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        out.append(
            Bin(
                lo=b / bins,
                hi=(b + 1) / bins,
                confidence=float(conf[members].mean()) if count else None,
                accuracy=float(hit[members].mean()) if count else None,
                count=count,
            )
        )
    return out


def expected_calibration_error(
    confidences: Sequence[float] | npt.NDArray[np.float64],
    correct: Sequence[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.float64],
    bins: int = 10,
) -> float:
    """Count-weighted mean |accuracy - confidence| over the :func:`reliability` bins (0 is perfect)."""
    table = reliability(confidences, correct, bins)
    total = sum(b.count for b in table)
    if not total:
        return 0.0
    return float(
        sum(b.count * abs(b.accuracy - b.confidence) for b in table if b.accuracy is not None and b.confidence is not None)
        / total
    )
