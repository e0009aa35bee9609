"""Escalation policy: which steps an agent's answer may climb, and when it climbs.

A *cascade* is an ordered list of steps. Each step is one of

* ``specialist`` — a classifier trained on embeddings (``moa train``); used only when one is
  trained for the agent and its label set,
* ``slm`` / ``llm`` — the configured tiers,
* any model spec (``ollama:qwen2.5:7b``, ``openai:gpt-4o-mini``...).

The default cascade is ``specialist → slm → llm``; steps that resolve to the same model as the
step before are merged (with the default ``embedded:`` for both tiers, there is one model step).

An answer escalates to the next step when it is *weak*: its confidence is below the agent's
threshold, it failed validation after the repair, or its model failed. The stronger answer is
kept; when no stronger answer can be had (no step left, the next model is down, or the budget
would be exceeded), the weak answer is kept and marked *unverified* with the reason. Every
attempt stays in the run record with its cost.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from moa.errors import ErrorCode, UserError
from moa.models.registry import create_backend
from moa.settings import Settings
from moa.usage import Usage

SPECIALIST = "specialist"
DEFAULT_CASCADE = (SPECIALIST, "slm", "llm")

WeakReason = Literal["low_confidence", "invalid_output", "model_error"]


@dataclass(frozen=True)
class Step:
    """One step of a cascade: a name for the record (``slm``, ``llm``, ``specialist`` or a spec)
    and the model spec it runs (``None`` for the specialist)."""

    name: str
    spec: str | None


@dataclass(frozen=True)
class Policy:
    """The resolved escalation policy of one agent in one run."""

    steps: tuple[Step, ...]
    threshold: float | None
    """Answers with a confidence below this escalate (``None``: confidence never escalates)."""
    escalate: bool = True

    @property
    def model_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.spec is not None)


class StoredOutput(BaseModel):
    """An agent output read back from a checkpoint, before its agent's output type is applied.

    Its fields are the saved ones (``output.label`` works); :func:`moa.executor.revive_results`
    turns it back into the agent's own output model.
    """

    model_config = ConfigDict(extra="allow")


def stored_output(value: Any) -> Any:
    """Validator: a saved output (a dict) becomes a :class:`StoredOutput`."""
    return StoredOutput.model_validate(value) if isinstance(value, dict) else value


class Attempt(BaseModel):
    """One step's try at an item: its answer or error, confidence, and cost."""

    step: str
    """Cascade step: ``specialist``, ``slm``, ``llm`` or a model spec."""
    model: str
    output: SerializeAsAny[BaseModel] | None = None
    error: dict[str, Any] | None = None
    confidence: float | None = None
    raw_confidence: float | None = None
    """The confidence before per-model calibration (``moa calibrate``), when one was applied."""
    weak: WeakReason | None = None
    """Why this answer escalated (or would have)."""
    tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0

    _stored = field_validator("output", mode="before")(stored_output)

    @classmethod
    def priced(cls, step: str, model: str, usage: list[Usage], **fields: Any) -> Attempt:
        return cls(
            step=step,
            model=model,
            tokens=sum(u.tokens for u in usage),
            cost=sum(u.cost for u in usage),
            latency_s=round(sum(u.latency_s for u in usage), 4),
            **fields,
        )


class Escalation(BaseModel):
    """An item climbing from one step to the next."""

    from_step: str
    to_step: str
    reason: WeakReason


class EscalationSummary(BaseModel):
    """Escalations of a run."""

    count: int = 0
    """Escalations that happened (an item climbing two steps counts twice)."""
    items: int = 0
    """Items that escalated at least once."""
    by_reason: dict[str, int] = Field(default_factory=dict)
    unverified: dict[str, int] = Field(default_factory=dict)
    """Weak answers kept without a stronger check, by why: ``no higher step``, ``budget``, ``<step> failed``."""
    routed: int = 0
    """Items sent past the cheap steps up front by their features (``route_long_chars``, ``route_non_latin``)."""


def _tier_or_spec(entry: str, settings: Settings) -> Step:
    if entry == SPECIALIST:
        return Step(SPECIALIST, None)
    if entry in ("slm", "llm"):
        return Step(entry, settings.tier_spec(entry))  # type: ignore[arg-type]
    create_backend(entry, settings)  # validates the spec (no network call)
    return Step(entry, entry)


def resolve_cascade(settings: Settings, entries: Sequence[str] | None = None, known: Collection[str] = ()) -> tuple[Step, ...]:
    """The run's cascade from settings, validated (steps on the same model are merged later,
    by :meth:`moa.context.RunContext.policy`, once backends are known)."""
    entries = list(entries or settings.cascade or DEFAULT_CASCADE)
    steps: list[Step] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            raise UserError(ErrorCode.BAD_CONFIG, "the cascade has an empty step; use e.g. --cascade specialist,slm,llm")
        try:
            step = Step(entry, entry) if entry in known else _tier_or_spec(entry, settings)
        except UserError as exc:
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"unknown cascade step {entry!r}: {exc.message}; steps are 'specialist', 'slm', 'llm' or model specs",
            ) from exc
        steps.append(step)
    if not steps:
        raise UserError(ErrorCode.BAD_CONFIG, "the cascade is empty; use e.g. --cascade specialist,slm,llm")
    return tuple(steps)


def non_latin_share(text: str) -> float:
    """Share of the letters of ``text`` that are not Latin script (0 for no letters)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if not unicodedata.name(ch, "").startswith("LATIN")) / len(letters)


def route_up_front(settings: Settings, text: str) -> tuple[str, str] | None:
    """``(step, reason)`` when input features send an item past the cheap steps, else ``None``."""
    if settings.route_long_chars is not None and len(text) > settings.route_long_chars:
        return "llm", f"long input ({len(text)} chars > {settings.route_long_chars})"
    if settings.route_non_latin is not None and (share := non_latin_share(text)) > settings.route_non_latin:
        return "llm", f"non-Latin script ({share:.0%} of letters)"
    return None


def threshold_for(settings: Settings, agent: str, default: float | None) -> float | None:
    """Per-agent threshold: ``thresholds[agent]``, else ``threshold``, else the agent's own."""
    if agent in settings.thresholds:
        return settings.thresholds[agent]
    return settings.threshold if settings.threshold is not None else default


def summarize_escalations(items: list[tuple[list[Escalation], str | None, str | None]]) -> EscalationSummary:
    """Sum ``(escalations, unverified, routed)`` of each item."""
    summary = EscalationSummary()
    for escalations, unverified, routed in items:
        summary.routed += routed is not None
        summary.count += len(escalations)
        summary.items += bool(escalations)
        for e in escalations:
            summary.by_reason[e.reason] = summary.by_reason.get(e.reason, 0) + 1
        if unverified:
            why = unverified.split(":")[0].split(" (")[0]
            summary.unverified[why] = summary.unverified.get(why, 0) + 1
    return summary
