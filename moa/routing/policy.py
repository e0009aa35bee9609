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

import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from moa.errors import ErrorCode, UserError
from moa.models.registry import create_backend
from moa.settings import Settings

SPECIALIST = "specialist"
DEFAULT_CASCADE = (SPECIALIST, "slm", "llm")


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


def step_of(settings: Settings, entry: str) -> Step:
    """The step ``entry`` names: ``specialist``, ``slm`` / ``llm`` (the configured tiers) or a model spec (validated, no network call)."""
    if entry == SPECIALIST:
        return Step(SPECIALIST, None)
    if entry in ("slm", "llm"):
        return Step(entry, settings.tier_spec(entry))  # type: ignore[arg-type]
    create_backend(entry, settings)  # validates the spec (no network call)
    return Step(entry, entry)


def resolve_cascade(settings: Settings, entries: Sequence[str] | None = None, known: Collection[str] = ()) -> tuple[Step, ...]:
    """The run's cascade from settings, validated (steps on the same model are merged later,
    by :meth:`moa.agent.context.RunContext.policy`, once backends are known)."""
    entries = list(entries or settings.cascade or DEFAULT_CASCADE)
    steps: list[Step] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            raise UserError(ErrorCode.BAD_CONFIG, "the cascade has an empty step; use e.g. --cascade specialist,slm,llm")
        try:
            step = Step(entry, entry) if entry in known else step_of(settings, entry)
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
