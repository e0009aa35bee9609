"""What a run produces, in one direction: an :class:`ItemResult` wraps the agent's
:class:`~moa.agent.results.AgentRun` for one item, a :class:`SubtaskResult` holds a subtask's items,
a :class:`RunResult` the whole run (plan, results, usage, errors as :class:`~moa.errors.ErrorInfo`).

Outputs read back from a checkpoint are revived into their agent's output type in one place,
:func:`revive_results`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, computed_field

from moa.agent.base import Agent
from moa.agent.results import AgentRun, Attempt, Escalation, StoredOutput, ToolCallRecord
from moa.errors import ErrorCode, ErrorInfo, RunError, UserError
from moa.logs import get_logger
from moa.routing.approvals import Approval
from moa.usage import Usage, UsageSummary, summarize
from moa.workflow.plan import Plan
from moa.workflow.planner import PlannerInfo

log = get_logger(__name__)


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
    """One item of a subtask: the agent's :class:`~moa.agent.results.AgentRun` for it, and what the
    workflow decided about it (waiting for approval, handed to a person).

    The run's usage is not repeated here (it is in :attr:`RunResult.usage`); a run with a single
    attempt keeps no attempts (its output says it all)."""

    item: str
    run: AgentRun = Field(default_factory=AgentRun)
    waiting: str | None = None
    """The id of the approval this item waits for (its next step needs a person's decision)."""
    handoff: str | None = None
    """Why the item was handed to a person (``on_unsure = "needs_human"``); its weak output is then
    only in ``run.attempts``."""

    @classmethod
    def of(cls, item: str, run: AgentRun, *, handoff: str | None = None) -> ItemResult:
        keep = len(run.attempts) > 1 or run.waiting is not None or handoff is not None
        update: dict[str, Any] = {"usage": [], "waiting": None}
        if not keep:
            update["attempts"] = []
        if handoff:
            update |= {"output": None, "answered_by": None}
        return cls(item=item, run=run.model_copy(update=update), handoff=handoff)

    @property
    def output(self) -> BaseModel | None:
        return self.run.output

    @property
    def error(self) -> ErrorInfo | None:
        return self.run.error

    @property
    def answered_by(self) -> str | None:
        """Cascade step whose answer was kept (``specialist``, ``slm``, ``llm``, a spec)."""
        return self.run.answered_by

    @property
    def unverified(self) -> str | None:
        return self.run.unverified

    @property
    def escalations(self) -> list[Escalation]:
        return self.run.escalations

    @property
    def attempts(self) -> list[Attempt]:
        return self.run.attempts

    @property
    def deduplicated(self) -> bool:
        return self.run.deduplicated

    @property
    def routed(self) -> str | None:
        return self.run.routed


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
    handled: dict[str, int] = Field(default_factory=dict)
    """How many items each cascade step answered (``{"slm": 8, "llm": 2}``)."""
    waiting: list[Approval] = Field(default_factory=list)
    """What this subtask waits for (status ``waiting``): its own start, or steps of its items."""
    warnings: list[str] = Field(default_factory=list)
    """What the user should know that did not fail the subtask (e.g. a trained specialist or a
    calibration of its agent exists, but for another label set, so it was not used)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tool_calls(self) -> list[ToolCallRecord]:
        """Every tool call its items' models made, in item order (an agent's calls as a tool included;
        a repeated item's calls are its first copy's, listed once)."""
        return [c for i in self.items if not i.run.deduplicated for c in i.run.tool_calls]


def merge_results(left: dict[str, SubtaskResult], right: dict[str, SubtaskResult]) -> dict[str, SubtaskResult]:
    """Reducer: merge results by subtask id (parallel subtasks write disjoint ids)."""
    return {**left, **right}


def _revive(output: BaseModel | None, output_type: type[BaseModel]) -> BaseModel | None:
    return output_type.model_validate(output.model_dump()) if isinstance(output, StoredOutput) else output


def revive_run(run: AgentRun, output_type: type[BaseModel]) -> AgentRun:
    """``run`` with its outputs read back (:class:`StoredOutput`) given the agent's ``output_type``:
    its output and its attempts' outputs (raises ``ValidationError`` when they no longer fit)."""
    if not any(isinstance(o, StoredOutput) for o in (run.output, *(a.output for a in run.attempts))):
        return run
    return run.model_copy(
        update={
            "output": _revive(run.output, output_type),
            "attempts": [a.model_copy(update={"output": _revive(a.output, output_type)}) for a in run.attempts],
        }
    )


def revive_results(results: Mapping[str, SubtaskResult], agents: Mapping[str, Agent]) -> dict[str, SubtaskResult]:  # type: ignore[type-arg]
    """Give outputs read back from a checkpoint (:class:`StoredOutput`) their agent's output type:
    every item's output and its attempts' outputs. The one place checkpointed outputs come back
    (items saved inside a subtask come back through :func:`revive_run`)."""
    revived: dict[str, SubtaskResult] = {}
    for sid, result in results.items():
        agent = agents.get(result.agent)
        stored = any(isinstance(o, StoredOutput) for i in result.items for o in (i.run.output, *(a.output for a in i.run.attempts)))
        if agent is not None and stored:
            try:
                items = [i.model_copy(update={"run": revive_run(i.run, agent.output_type)}) for i in result.items]
                result = result.model_copy(update={"items": items})
            except ValidationError as exc:  # the agent's output type changed since the run was saved
                log.warning("output_not_revived", subtask=sid, agent=result.agent, error=str(exc)[:200])
        revived[sid] = result
    return revived


RunStatus = Literal["ok", "partial", "failed", "stopped", "interrupted", "waiting", "needs_human"]


class Handoff(BaseModel):
    """An item handed to a person (``on_unsure = "needs_human"``): no answer is presented for it."""

    subtask: str
    agent: str
    item: str
    reason: str
    """Why no step's answer is trusted (``unsure (low_confidence): no higher step``, ``every step failed: ...``)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every step's try, with its output or error, confidence and cost."""


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
    errors: list[ErrorInfo] = Field(default_factory=list)
    seconds: float = 0.0
    input_items: int = 0
    resumed: bool = False
    """This result comes from :func:`moa.aresume` (the run had stopped before)."""
    reused: list[str] = Field(default_factory=list)
    """Subtasks whose results came from the checkpoint instead of running again."""
    pending: list[Approval] = Field(default_factory=list)
    """What the run waits for (status ``waiting``); answer with :func:`moa.aresume`."""
    handoff: list[Handoff] = Field(default_factory=list)
    """Items handed to a person (status ``needs_human``), with every attempt's output or error."""
    warnings: list[str] = Field(default_factory=list)
    """What the user should know that did not fail the run, each once (the planner's, e.g. the llm
    tier could not plan and the router planner did; then the subtasks')."""

    @property
    def exit_code(self) -> int:
        """0 ok; 2 only user errors; 3 run errors, partial, failed, stopped; 4 waiting; 5 needs_human."""
        if self.status == "ok":
            return 0
        if self.status in ("waiting", "needs_human"):
            return 4 if self.status == "waiting" else 5
        codes = {e.exit_code for e in self.errors}
        return UserError.exit_code if codes == {UserError.exit_code} else RunError.exit_code


def _status(results: Mapping[str, SubtaskResult]) -> RunStatus:
    statuses = [r.status for r in results.values()]
    if all(s == "ok" for s in statuses):  # a graph that records no subtasks and raised nothing is ok
        return "ok"
    if any(s in ("ok", "partial") for s in statuses):
        return "partial"
    return "failed"


def _errors(results: Mapping[str, SubtaskResult]) -> list[ErrorInfo]:
    errors: list[ErrorInfo] = []
    for r in results.values():
        first = next((i.error for i in r.items if i.error), None)
        if first is not None:
            errors.append(first.model_copy(update={"subtask": r.id}))
        elif r.status in ("failed", "skipped", "denied"):
            code = ErrorCode.APPROVAL_DENIED if r.status == "denied" else ErrorCode.SUBTASK_FAILED
            errors.append(RunError(code, r.reason or r.status).info(subtask=r.id))
    return errors


def _warnings(planner: PlannerInfo | dict[str, Any] | None, results: Mapping[str, SubtaskResult]) -> list[str]:
    info = PlannerInfo.model_validate(planner) if isinstance(planner, dict) else planner
    found = [info.warning] if info is not None and info.warning else []
    return list(dict.fromkeys([*found, *(w for r in results.values() for w in r.warnings)]))


def run_result(
    state: Mapping[str, Any],
    *,
    run_id: str,
    task: str,
    graph: str,
    agents: Mapping[str, Agent],  # type: ignore[type-arg]
    seconds: float,
    input_items: int,
    llm_price: tuple[float, float] | None = None,
    stopped: str | None = None,
    resumed: bool = False,
    interrupted: bool = False,
    pending: list[Approval] | None = None,
    errors: Sequence[ErrorInfo] = (),
) -> RunResult:
    """The :class:`RunResult` of a run's graph ``state`` (``results``, ``usage``, ``plan``...): the
    end of an attempt, or a recorded run read back from its checkpoint (``moa runs export``).

    ``errors`` come before the subtasks' own (e.g. the error that ended an attempt)."""
    results = revive_results(state.get("results") or {}, agents)
    usage: list[Usage] = list(state.get("usage") or [])
    items = [i for r in results.values() for i in r.items if not i.deduplicated]
    handoff = [
        Handoff(subtask=r.id, agent=r.agent, item=i.item, reason=i.handoff, attempts=i.attempts)
        for r in results.values()
        for i in r.items
        if i.handoff and not i.deduplicated
    ]
    status: RunStatus = "interrupted" if interrupted else "waiting" if pending else "stopped" if stopped else "needs_human" if handoff else _status(results)
    return RunResult(
        run_id=run_id,
        task=state.get("task") or task,
        graph=graph,
        status=status,
        stopped=stopped,
        plan=state.get("plan"),
        planner=state.get("planner"),
        results=results,
        answer=state.get("answer"),
        synthesizer=state.get("synthesizer"),
        usage=usage,
        summary=summarize(usage, llm_price=llm_price),
        escalations=summarize_escalations([(i.escalations, i.unverified, i.routed) for i in items]),
        errors=[*errors, *_errors(results)],
        seconds=round(seconds, 3),
        input_items=input_items,
        resumed=resumed,
        reused=list(state.get("reused") or []),
        pending=pending or [],
        handoff=handoff,
        warnings=_warnings(state.get("planner"), results),
    )
