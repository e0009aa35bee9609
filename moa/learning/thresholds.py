"""Escalation thresholds chosen from a user's labelled data (``moa calibrate AGENT DATA --cascade ...``).

The same threshold gains on one domain and loses on another (tweets: 0.5-0.55 best for
specialist → slm; SST-2: 0.8; SMS: never escalate). A :class:`ThresholdChoice` is the per-step
thresholds chosen for one agent, task (its key: label set or criterion) and cascade, with its
provenance: the data, the goal, the folds, the date and the held-out numbers of the chosen rule
and of the rules it was compared with. It is kept as JSON next to the agent's specialists and
calibrations (:func:`moa.learning.store.thresholds_path`); a run of the same agent, task and
cascade uses it unless a threshold is set explicitly (``--threshold``, ``threshold`` /
``thresholds`` in the settings, a plan's or the code's own).

A :class:`Goal` says what "best" means: ``accuracy`` (the highest quality; the cheapest such rule
on ties) or ``within=X`` (the cheapest rule whose quality is within ``X`` of the best). The quality
is accuracy for a classification agent and micro entity F1 for the extraction agent (``--goal f1``
is the same goal as ``accuracy``). *Cheapest* is the fewest escalations (an item climbing two steps
counts two), then the fewest tokens.
The choosing itself (k-fold cross-validation over replayed answers) is in
:mod:`moa.eval.thresholds`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from moa.errors import ErrorCode, UserError
from moa.files import JsonFile

#: Fewest labelled items in each held-out fold.
MIN_PER_FOLD = 20
#: Folds used when none are asked for (fewer when the data is small: at least :data:`MIN_PER_FOLD` items each).
DEFAULT_FOLDS = 5

_WITHIN = re.compile(r"within\s*=\s*([0-9]*\.?[0-9]+)")


class Goal(BaseModel):
    """What the chosen thresholds optimise: the best quality (``accuracy``; accuracy or entity F1),
    or the cheapest within ``within`` of the best."""

    kind: Literal["accuracy", "within"]
    within: float = 0.0
    """Quality (accuracy or F1, 0..1) the cheaper rule may give up against the best one (``within`` goals)."""

    @classmethod
    def parse(cls, text: str) -> Goal:
        """``accuracy`` (or ``f1``) or ``within=0.01`` (a :class:`UserError` that lists both otherwise)."""
        clean = text.strip().lower()
        if clean in ("accuracy", "best", "best-accuracy", "f1", "best-f1"):
            return cls(kind="accuracy")
        if (match := _WITHIN.fullmatch(clean)) is not None:
            within = float(match.group(1))
            if within < 1:
                return cls(kind="within", within=within)
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"unknown goal {text!r}; use --goal accuracy (the best held-out accuracy; entity F1 for extraction, also --goal f1) or --goal within=0.01 "
            "(the cheapest thresholds whose accuracy or F1 is within 0.01 of the best; a number below 1)",
        )

    def __str__(self) -> str:
        return "accuracy" if self.kind == "accuracy" else f"within={self.within:g}"

    def label(self, metric: str) -> str:
        """The goal in words for ``metric``: ``accuracy``, ``f1`` (the best of it) or ``within=0.01``."""
        return metric if self.kind == "accuracy" else str(self)


class RuleScore(BaseModel):
    """How one escalation rule did on the calibration data (held-out folds for the chosen rule)."""

    name: str
    """``chosen``, ``default``, ``never escalate`` or ``always <top step>``."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Threshold per step (empty for ``always <top step>``)."""
    metric: Literal["accuracy", "f1"] = "accuracy"
    """What :attr:`quality` is: accuracy (classification) or micro entity F1 (extraction)."""
    accuracy: float | None = None
    """Share of items answered right (classification)."""
    f1: float | None = None
    """Micro entity F1 over the items (extraction)."""
    escalated: float
    """Share of items that went past the first step."""
    tokens_per_item: float
    cost: float
    """$ of every call the rule makes, over the items."""

    @property
    def quality(self) -> float:
        """The rule's :attr:`metric`."""
        value = self.f1 if self.metric == "f1" else self.accuracy
        return 0.0 if value is None else value


class ThresholdChoice(JsonFile):
    """The thresholds chosen for one agent, task and cascade, and how they were chosen."""

    what: ClassVar[str] = "the thresholds"
    again: ClassVar[str] = "re-run `moa calibrate AGENT DATA --cascade ...` to choose them again"

    agent: str
    key: str
    """The task (``labels=negative,neutral,positive``, ``criterion=spam``)."""
    steps: list[str]
    """The cascade they were chosen for, in order (e.g. ``["specialist", "slm"]``)."""
    models: dict[str, str] = Field(default_factory=dict)
    """What answered on each step when they were chosen: a model step's model spec, the
    specialist's training time (``trained <date>``). A run whose steps differ does not use them."""
    thresholds: dict[str, float]
    """Threshold per step but the last: an answer of that step below it escalates (0: only failures do)."""
    goal: str
    metric: Literal["accuracy", "f1"] = "accuracy"
    """What the rules were compared on: accuracy (classification) or micro entity F1 (extraction)."""
    folds: int
    n: int
    """Labelled items the choice was made on."""
    data: str = ""
    seed: int = 0
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    held_out: list[RuleScore] = Field(default_factory=list)
    """The chosen rule scored on held-out folds (chosen on the other folds each time), then the
    rules it is compared with: the agent's default threshold, never escalating, always the top step."""
    fold_thresholds: list[dict[str, float]] = Field(default_factory=list)
    """What each fold's training part chose (their spread says how settled the choice is)."""

    def describe(self) -> str:
        """The thresholds in words: ``specialist 0.55 → slm``."""
        parts = [f"{step} {self.thresholds[step]:g}" if step in self.thresholds else step for step in self.steps]
        return " → ".join(parts)

    def score(self, name: str) -> RuleScore | None:
        return next((s for s in self.held_out if s.name == name), None)

