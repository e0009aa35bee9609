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

from collections.abc import Mapping
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator

from moa.agent.base import Agent
from moa.agent.results import AgentRun, Attempt, Escalation, StoredOutput, stored_output
from moa.errors import ErrorCode
from moa.routing.approvals import Approval
from moa.workflow.plan import Plan
from moa.workflow.planner import PlannerInfo
from moa.usage import Usage, UsageSummary

log = structlog.get_logger(__name__)


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

SubtaskStatus = Literal["ok", "partial", "failed", "skipped", "waiting", "denied"]


class ItemResult(BaseModel):
    """An agent's result for one item, with how it was reached."""

    item: str
    output: SerializeAsAny[BaseModel] | None = None
    error: dict[str, Any] | None = None
    answered_by: str | None = None
    """Cascade step whose answer was kept (``specialist``, ``slm``, ``llm``, a spec)."""
    unverified: str | None = None
    """Why a weak answer was kept without a stronger check."""
    escalations: list[Escalation] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    deduplicated: bool = False
    routed: str | None = None
    """Why the item skipped the cheap steps up front (e.g. ``long input``)."""
    waiting: str | None = None
    """The id of the approval this item waits for (its next step needs a person's decision)."""
    handoff: str | None = None
    """Why the item was handed to a person (``on_unsure = "needs_human"``); its weak output is then
    only in ``attempts``."""

    @classmethod
    def of(cls, item: str, run: AgentRun, *, handoff: str | None = None) -> ItemResult:
        keep = len(run.attempts) > 1 or run.waiting is not None or handoff is not None  # one attempt: the output says it all
        return cls(
            item=item,
            output=None if handoff else run.output,
            error=run.error,
            answered_by=None if handoff else run.answered_by,
            unverified=run.unverified,
            escalations=run.escalations,
            attempts=run.attempts if keep else [],
            deduplicated=run.deduplicated,
            routed=run.routed,
            handoff=handoff,
        )

    def parked(self, output_type: type[BaseModel]) -> AgentRun:
        """The parked item as the cascade left it (outputs read back from a checkpoint get ``output_type``)."""
        attempts = [a.model_copy(update={"output": _revive(a.output, output_type)}) for a in self.attempts]
        return AgentRun(output=_revive(self.output, output_type), error=self.error, attempts=attempts, escalations=self.escalations, routed=self.routed)

    _stored = field_validator("output", mode="before")(stored_output)


class SubtaskResult(BaseModel):
    """What one subtask produced."""

    id: str
    agent: str
    status: SubtaskStatus
    items: list[ItemResult] = Field(default_factory=list)
    forwarded: list[str] = Field(default_factory=list)
    """Items passed to dependent subtasks (e.g. the texts a filter kept)."""
    reason: str | None = None
    """Why the subtask failed, was skipped or denied, or waits."""
    seconds: float = 0.0
    models: list[str] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    handled: dict[str, int] = Field(default_factory=dict)
    """How many items each cascade step answered (``{"slm": 8, "llm": 2}``)."""
    waiting: list[Approval] = Field(default_factory=list)
    """What this subtask waits for (status ``waiting``): its own start, or steps of its items."""


def merge_results(left: dict[str, SubtaskResult], right: dict[str, SubtaskResult]) -> dict[str, SubtaskResult]:
    """Reducer: merge results by subtask id (parallel subtasks write disjoint ids)."""
    return {**left, **right}


def _revive(output: BaseModel | None, output_type: type[BaseModel]) -> BaseModel | None:
    return output_type.model_validate(output.model_dump()) if isinstance(output, StoredOutput) else output


def revive_results(results: Mapping[str, SubtaskResult], agents: Mapping[str, Agent]) -> dict[str, SubtaskResult]:  # type: ignore[type-arg]
    """Give outputs read back from a checkpoint (:class:`StoredOutput`) their agent's output type."""
    revived: dict[str, SubtaskResult] = {}
    for sid, result in results.items():
        agent = agents.get(result.agent)
        if agent is not None and any(isinstance(i.output, StoredOutput) for i in result.items):
            try:
                items = [
                    i.model_copy(update={"output": agent.output_type.model_validate(i.output.model_dump())})
                    if isinstance(i.output, StoredOutput)
                    else i
                    for i in result.items
                ]
                result = result.model_copy(update={"items": items})
            except ValidationError as exc:  # the agent's output type changed since the run was saved
                log.warning("output_not_revived", subtask=sid, agent=result.agent, error=str(exc)[:200])
        revived[sid] = result
    return revived

RunStatus = Literal["ok", "partial", "failed", "stopped", "interrupted", "waiting", "needs_human"]


class RunResult(BaseModel):
    """The record of one run: plan, per-subtask results, usage, answer."""

    run_id: str
    task: str
    graph: str
    status: RunStatus
    """``ok``: every subtask succeeded; ``partial``: some items or subtasks failed (or were denied);
    ``failed``: none succeeded; ``stopped``: a budget ran out (see ``stopped``); ``interrupted``:
    cancelled (Ctrl-C), results are what finished before; ``waiting``: paused until a person answers
    ``pending``; ``needs_human``: some items had no trustworthy answer (see ``handoff``)."""
    stopped: str | None = None
    """Which budget stopped the run, in words."""
    plan: Plan | None = None
    planner: PlannerInfo | None = None
    results: dict[str, SubtaskResult] = Field(default_factory=dict)
    answer: str | None = None
    """The synthesizer's answer (``None`` when the report is rendered without a model)."""
    synthesizer: str | None = None
    usage: list[Usage] = Field(default_factory=list)
    summary: UsageSummary
    escalations: EscalationSummary = Field(default_factory=EscalationSummary)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float = 0.0
    input_items: int = 0
    resumed: bool = False
    """This result comes from :func:`aresume` (the run had stopped before)."""
    reused: list[str] = Field(default_factory=list)
    """Subtasks whose results came from the checkpoint instead of running again."""
    pending: list[Approval] = Field(default_factory=list)
    """What the run waits for (status ``waiting``); answer with :func:`aresume`."""
    handoff: list[Handoff] = Field(default_factory=list)
    """Items handed to a person (status ``needs_human``), with every attempt's output or error."""

    @property
    def exit_code(self) -> int:
        """0 ok; 2 only user errors; 3 run errors, partial, failed, stopped; 4 waiting; 5 needs_human."""
        if self.status == "ok":
            return 0
        if self.status in ("waiting", "needs_human"):
            return 4 if self.status == "waiting" else 5
        codes = {e.get("type") for e in self.errors}
        return 2 if codes == {"UserError"} else 3


def _status(results: Mapping[str, SubtaskResult]) -> RunStatus:
    statuses = [r.status for r in results.values()]
    if statuses and all(s == "ok" for s in statuses):
        return "ok"
    if any(s in ("ok", "partial") for s in statuses):
        return "partial"
    return "failed"


def _errors(results: Mapping[str, SubtaskResult]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for r in results.values():
        first = next((i.error for i in r.items if i.error), None)
        if first is not None:
            errors.append({**first, "subtask": r.id})
        elif r.status in ("failed", "skipped", "denied"):
            code = ErrorCode.APPROVAL_DENIED if r.status == "denied" else ErrorCode.SUBTASK_FAILED
            errors.append({"type": "RunError", "code": str(code), "message": r.reason or r.status, "subtask": r.id})
    return errors


class Handoff(BaseModel):
    """An item handed to a person (``on_unsure = "needs_human"``): no answer is presented for it."""

    subtask: str
    agent: str
    item: str
    reason: str
    """Why no step's answer is trusted (``unsure (low_confidence): no higher step``, ``every step failed: ...``)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every step's try, with its output or error, confidence and cost."""
