"""Escalation policy: which steps an agent's answer may climb, and when it climbs.

A *cascade* is an ordered list of steps. Each step is one of

* ``specialist`` — a classifier trained on embeddings (``moa train``); used only when one is
  trained for the agent and its label set,
* ``slm`` / ``llm`` — the configured tiers,
* any model spec (``ollama:qwen2.5:7b``, ``openai:gpt-4o-mini``...).

A *plan* (from the llm planner, ``--plan``, a YAML graph file or ``plan=``) may set a subtask's
cascade too, but a plan is data that may come from a model or a file, so it may name only the
steps of :func:`plan_models`: ``specialist``, ``slm``, ``llm``, the tiers' own specs and
``settings.allowed_models``. Anything else would let the plan choose the server every item is
sent to. Code (``agent.with_policy(cascade=...)``) and ``settings.cascade`` are not limited.

The default cascade is ``specialist → slm → llm``; steps that resolve to the same model as the
step before are merged (with the default ``embedded:`` for both tiers, there is one model step).

An answer escalates to the next step when it is *weak*: its confidence is below the agent's
threshold, it failed validation after the repair, or its model failed. The stronger answer is
kept; when no stronger answer can be had (no step left, the next model is down, or the budget
would be exceeded), the weak answer is kept and marked *unverified* with the reason. Every
attempt stays in the run record with its cost.

The threshold may differ per step (:attr:`Policy.step_thresholds`): thresholds chosen from the
user's labelled data (``moa calibrate AGENT DATA --cascade ...``, :mod:`moa.learning.thresholds`)
give each step its own, used when the run sets none explicitly (:func:`explicit_threshold`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from moa.errors import ErrorCode, UserError
from moa.models.registry import create_backend
from moa.settings import Settings

SPECIALIST = "specialist"
DEFAULT_CASCADE = (SPECIALIST, "slm", "llm")
PLAN_STEPS = DEFAULT_CASCADE
"""The step names any plan may use (plus the tiers' specs and ``allowed_models``: :func:`plan_models`)."""


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
    step_thresholds: Mapping[str, float] = field(default_factory=dict)
    """Thresholds of single steps, by step name, over :attr:`threshold` (chosen from data)."""

    @property
    def model_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.spec is not None)

    def threshold_of(self, step: str) -> float | None:
        """The threshold an answer of ``step`` must reach not to escalate."""
        return self.step_thresholds.get(step, self.threshold)


def step_of(settings: Settings, entry: str) -> Step:
    """The step ``entry`` names: ``specialist``, ``slm`` / ``llm`` (the configured tiers) or a model spec (validated, no network call)."""
    if entry == SPECIALIST:
        return Step(SPECIALIST, None)
    if entry in ("slm", "llm"):
        return Step(entry, settings.tier_spec(entry))  # type: ignore[arg-type]
    create_backend(entry, settings)  # validates the spec (no network call)
    return Step(entry, entry)


def plan_models(settings: Settings) -> frozenset[str]:
    """The cascade steps a plan may name: ``specialist``, ``slm``, ``llm``, the tiers' specs and
    ``settings.allowed_models`` (see the module docstring)."""
    return frozenset({*PLAN_STEPS, settings.slm, settings.llm, *settings.allowed_models})


def foreign_step_problem(where: str, entry: str) -> str:
    """Why a plan may not name ``entry`` (a model spec outside :func:`plan_models`), and how to allow it;
    ``where`` says where the plan names it (e.g. ``the cascade of subtask 's1'``)."""
    return (
        f"{where} names the model {entry!r}, but a plan may name only specialist, slm, llm, the tiers' models "
        f"and allowed_models (a plan must not choose where the items are sent); if you trust that model, "
        f"add it to allowed_models in moa.toml (allowed_models = [\"{entry}\"]) or MOA_ALLOWED_MODELS"
    )


def routing_text(cascade: Sequence[str] | None, threshold: float | None) -> str:
    """A step's own cascade and threshold in words, e.g. ``cascade [slm, llm], threshold 0.8``
    (``""`` when it sets neither): what a plan shown to a person, or an approval, says."""
    parts = [f"cascade [{', '.join(cascade)}]"] if cascade is not None else []
    if threshold is not None:
        parts.append(f"threshold {threshold:g}")
    return ", ".join(parts)


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


def explicit_threshold(settings: Settings, agent: str) -> bool:
    """Whether the settings set ``agent``'s threshold (``thresholds[agent]`` or ``threshold``):
    then thresholds chosen from data are not used."""
    return agent in settings.thresholds or settings.threshold is not None


def threshold_for(settings: Settings, agent: str, default: float | None) -> float | None:
    """Per-agent threshold: ``thresholds[agent]``, else ``threshold``, else the agent's own."""
    if agent in settings.thresholds:
        return settings.thresholds[agent]
    return settings.threshold if settings.threshold is not None else default
