"""Executing a plan as a LangGraph graph: typed state, reducers, one durable task per subtask.

State flows ``plan → execute → synthesize``. ``execute`` starts every subtask of the plan as a
LangGraph ``@task``; each task waits only for its own dependencies, so a slow subtask never delays
an unrelated chain (a ``Send`` fan-out with a join would wait for the whole superstep). Results
merge through reducers (nodes never mutate shared state). Run-scoped dependencies
(:class:`RunDeps`) arrive through LangGraph's ``Runtime`` context.

Durability: with a checkpointer, each finished subtask's result is saved the moment it finishes
(LangGraph stores a task's return value as a pending write). A resumed run replays ``execute``;
LangGraph hands back the saved results of finished subtasks instead of running them again. A
task's id depends on the order of the calls, so ``execute`` calls them in plan order, never in
order of completion.

Approvals (:mod:`moa.approvals`): a subtask that must wait for a person returns a ``waiting``
result (saved like any other) instead of running; so does one whose items were parked by a gated
escalation or tool call. Once nothing else can move, ``execute`` pauses the run with one
LangGraph ``interrupt`` carrying every pending approval. On resume it replays: saved results come
back, the interrupt returns the answers, and each fully answered waiting subtask goes on as a
new task (called in plan order after each pause, so task ids stay stable).
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from collections import Counter
from typing import Annotated, Any, Literal, Protocol, TypeAlias, TypedDict

import structlog
from langgraph.config import get_config
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.errors import GraphInterrupt
from langgraph.func import task
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator

from moa.agent import Agent, AgentRun, ModelAgent
from moa.approvals import Approval, ask, payload, step_rule, subtask_rule
from moa.context import RunContext
from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.escalation import Attempt, Escalation, Step, StoredOutput, stored_output
from moa.logs import log_context
from moa.models.base import GenerateRequest, Message
from moa.plan import INPUT, Plan, Subtask
from moa.planner import (
    LLMPlanner,
    PlannerInfo,
    PlanOutcome,
    RouterPlanner,
    choose_planner,
    given_plan,
)
from moa.structured import usage_of
from moa.usage import Usage

log = structlog.get_logger(__name__)

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


class RunState(TypedDict, total=False):
    task: str
    items: list[str]
    plan: Plan
    planner: PlannerInfo
    results: Annotated[dict[str, SubtaskResult], merge_results]
    usage: Annotated[list[Usage], operator.add]
    answer: str | None
    synthesizer: str
    reused: Annotated[list[str], operator.add]
    """Subtasks whose results came from a checkpoint instead of running (a resumed run)."""


@dataclass(frozen=True)
class SubtaskJob:
    """One subtask, ready to run: its items and the dependencies that did not succeed."""

    subtask: Subtask
    items: list[str]
    blocked_by: list[str]
    denied: tuple[str, ...] = ()
    """The dependencies among ``blocked_by`` that a person denied."""


@dataclass
class RunDeps:
    """Run-scoped dependencies injected into graph nodes."""

    ctx: RunContext
    agents: Mapping[str, Agent]  # type: ignore[type-arg]
    plan: Plan | dict[str, Any] | str | None = None


class PlanNode(Protocol):
    """A graph's ``plan`` node (LangGraph passes the runtime by keyword)."""

    def __call__(self, state: RunState, *, runtime: Runtime[RunDeps]) -> Awaitable[dict[str, Any]]: ...


RunGraph: TypeAlias = CompiledStateGraph[RunState, RunDeps, RunState, RunState]
"""A compiled moa graph: :class:`RunState` in and out, :class:`RunDeps` as its runtime context."""


def make_plan_node(*, fixed: Plan | None = None, transform: Callable[[Plan], Plan] | None = None) -> PlanNode:
    """A ``plan`` node: plans the task (or takes the run's given plan, or ``fixed``), then
    applies ``transform`` (e.g. the triage graph's gate) and validates the result."""

    async def plan(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        deps = runtime.context
        if deps.plan is not None or fixed is not None:
            outcome: PlanOutcome = given_plan(deps.plan if deps.plan is not None else fixed, deps.agents)  # type: ignore[arg-type]
        else:
            planner, reason = await _choose(deps)
            outcome = await planner.plan(deps.ctx, state["task"], deps.agents, has_input=bool(state.get("items")), reason=reason)
        if transform is not None:
            outcome = PlanOutcome(given_plan(transform(outcome.plan), deps.agents).plan, outcome.info, outcome.usage)
        return _planned(deps, outcome)

    return plan


async def plan_node(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """The default ``plan`` node (see :func:`make_plan_node`)."""
    return await _default_plan(state, runtime=runtime)


async def _choose(deps: RunDeps) -> tuple[Any, str]:
    """The planner to use; planning on the llm tier may need a person's approval."""
    planner, reason = await choose_planner(deps.ctx)
    settings = deps.ctx.settings
    if isinstance(planner, LLMPlanner) and (rule := step_rule(settings, Step("llm", settings.llm))) is not None:
        approval = Approval(id="plan", kind="plan", rule=rule, reason=f"plan the task with the llm tier ({settings.llm})", step="llm")
        if not ask([approval])[approval.id]:
            planner, reason = RouterPlanner(), "a person denied planning with the llm tier, so tasks are routed by embedding similarity"
    return planner, reason


def _planned(deps: RunDeps, outcome: PlanOutcome) -> dict[str, Any]:
    deps.ctx.budget.add(outcome.usage)
    deps.ctx.emit("planned", plan=outcome.plan, planner=outcome.info)
    log.info("planned", planner=outcome.info.name, subtasks=[s.id for s in outcome.plan.subtasks])
    return {"plan": outcome.plan, "planner": outcome.info, "usage": outcome.usage}


_default_plan = make_plan_node()


def compile_plan_execute(plan: PlanNode, name: str) -> RunGraph:
    """``plan → execute → synthesize`` with the given ``plan`` node (the shape of ``plan_execute``
    and ``triage``)."""
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", plan)
    graph.add_node("execute", execute)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(name=name)


def _job(state: RunState, subtask: Subtask, upstream: Mapping[str, SubtaskResult]) -> SubtaskJob:
    blocked = [d for d in subtask.depends_on if upstream[d].status in ("failed", "skipped", "denied")]
    items = (state.get("items") or [state["task"]]) if subtask.items == INPUT else upstream[subtask.items].forwarded
    denied = tuple(d for d in blocked if upstream[d].status == "denied")
    return SubtaskJob(subtask=subtask, items=list(items), blocked_by=blocked, denied=denied)


def _revive(output: BaseModel | None, output_type: type[BaseModel]) -> BaseModel | None:
    return output_type.model_validate(output.model_dump()) if isinstance(output, StoredOutput) else output


def _handoff(run: AgentRun) -> str | None:
    """Why an item's answer cannot be trusted (``None``: it can, or it is not over yet)."""
    if run.waiting is not None:
        return None
    if run.output is not None:
        weak = run.attempts[-1].weak if run.attempts else None
        return f"unsure ({weak}): {run.unverified}" if run.unverified else None
    error = run.error or {}
    if error.get("code") == ErrorCode.BUDGET_EXCEEDED:  # the run stopped; that is not a doubt about the item
        return None
    return f"no step gave an answer: [{error.get('code')}] {error.get('message')}"


def _items(subtask: Subtask, runs: Iterable[tuple[int, str, AgentRun]], deps: RunDeps) -> tuple[list[ItemResult], list[Approval]]:
    """Item results of ``(position, item, run)``, and the approvals the parked ones wait for
    (ids ``<subtask>/<position>/<step or tool:name>``, positions from 1)."""
    to_human = deps.ctx.settings.on_unsure == "needs_human"
    items: list[ItemResult] = []
    approvals: dict[tuple[str | None, str | None, str], Approval] = {}
    for position, item, run in runs:
        result = ItemResult.of(item, run, handoff=_handoff(run) if to_human else None)
        if run.waiting is not None:
            if run.waiting.key not in approvals:  # copies of an item share one approval
                what = f"tool:{run.waiting.tool}" if run.waiting.kind == "tool" else run.waiting.step
                approvals[run.waiting.key] = run.waiting.model_copy(update={"id": f"{subtask.id}/{position}/{what}"})
            result.waiting = approvals[run.waiting.key].id
        items.append(result)
    return items, list(approvals.values())


def _outcome(
    job: SubtaskJob, agent: Agent, items: list[ItemResult], approvals: list[Approval], usage: list[Usage], *, tool_calls: list[dict[str, Any]], seconds: float, models: list[str]
) -> SubtaskResult:  # type: ignore[type-arg]
    """A subtask's result from its items: waiting while any item waits, else ok / partial / failed."""
    sid = job.subtask.id
    if approvals:
        return SubtaskResult(
            id=sid, agent=agent.name, status="waiting", items=items, seconds=seconds, tool_calls=tool_calls, waiting=approvals,
            models=sorted({*models, *(u.model for u in usage)}), reason=f"{len(approvals)} item step(s) wait for approval",
        )  # fmt: skip
    failed = sum(1 for i in items if i.output is None)
    handed = sum(1 for i in items if i.handoff)
    status: SubtaskStatus = "ok" if failed == 0 else ("failed" if failed == len(items) else "partial")
    first_error = next((i.error for i in items if i.error and not i.handoff), None)
    reason = f"{failed - handed} of {len(items)} items failed: {first_error['message']}" if first_error else None
    if handed:
        reason = "; ".join(r for r in (reason, f"{handed} of {len(items)} items need a person") if r)
    return SubtaskResult(
        id=sid,
        agent=agent.name,
        status=status,
        items=items,
        forwarded=[f for i in items if i.output is not None for f in agent.forward(i.item, i.output)],
        reason=reason,
        seconds=seconds,
        models=sorted({*models, *(u.model for u in usage)}),
        tool_calls=tool_calls,
        handled=dict(Counter(i.answered_by for i in items if i.answered_by and not i.deduplicated)),
    )


def _agent_for(subtask: Subtask, deps: RunDeps) -> Agent:  # type: ignore[type-arg]
    """The subtask's agent, with the subtask's own cascade and threshold when it sets them."""
    agent = deps.agents[subtask.agent]
    if (subtask.cascade is not None or subtask.threshold is not None) and isinstance(agent, ModelAgent):
        return agent.with_policy(threshold=subtask.threshold, cascade=subtask.cascade)
    return agent


def _subtask_approval(job: SubtaskJob, agent: Agent, deps: RunDeps) -> Approval | None:  # type: ignore[type-arg]
    subtask = job.subtask
    rule = subtask_rule(deps.ctx.settings, subtask.id, agent.name, subtask.approve, agent.approve)
    if rule is None:
        return None
    what = f"run {agent.name} on {len(job.items)} item(s)" + (f": {subtask.instruction}" if subtask.instruction else "")
    return Approval(id=subtask.id, kind="subtask", rule=rule, reason=what, subtask=subtask.id, agent=agent.name)


async def run_subtask(job: SubtaskJob, deps: RunDeps, *, approved: bool = False) -> dict[str, Any]:
    """Run one subtask's agent over its items; return ``{"results": {id: result}, "usage": [...]}``.

    The result is ``waiting`` when the subtask must be approved before it starts (unless
    ``approved``) or when items wait for approval of a step (see :func:`continue_subtask`)."""
    subtask = job.subtask
    agent = _agent_for(subtask, deps)
    started = time.perf_counter()
    if job.blocked_by:
        reason = f"skipped: depends on {', '.join(job.blocked_by)}, which did not succeed"
        if job.denied:
            reason = f"skipped: depends on {', '.join(job.blocked_by)}; a person denied {', '.join(job.denied)}"
        deps.ctx.emit("subtask_done", subtask.id, status="skipped")
        return {"results": {subtask.id: SubtaskResult(id=subtask.id, agent=agent.name, status="skipped", reason=reason)}, "usage": []}
    if not approved and (approval := _subtask_approval(job, agent, deps)) is not None:
        log.info("awaiting_approval", run_id=deps.ctx.run_id, subtask=subtask.id, rule=approval.rule)
        deps.ctx.emit("subtask_done", subtask.id, status="waiting")
        waiting = SubtaskResult(id=subtask.id, agent=agent.name, status="waiting", waiting=[approval], reason=f"waiting for approval ({approval.rule})")
        return {"results": {subtask.id: waiting}, "usage": []}
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(job.items))
    with log_context(run_id=deps.ctx.run_id, subtask=subtask.id):
        if deps.ctx.info_logs:
            log.info("subtask_started", agent=agent.name, items=len(job.items))
        try:
            inputs = [agent.make_input(item, subtask.options) for item in job.items]
        except MoaError as exc:
            result = SubtaskResult(id=subtask.id, agent=agent.name, status="failed", reason=exc.message)
            deps.ctx.emit("subtask_done", subtask.id, status="failed")
            return {"results": {subtask.id: result}, "usage": []}
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id)
    items, approvals = _items(subtask, [(p, item, r) for p, (item, r) in enumerate(zip(job.items, runs, strict=True), start=1)], deps)
    usage = [u for r in runs for u in r.usage]
    tool_calls = [c.model_dump() for r in runs for c in r.tool_calls]
    result = _outcome(job, agent, items, approvals, usage, tool_calls=tool_calls, seconds=round(time.perf_counter() - started, 3), models=[])
    return _done(result, usage, deps)


def _done(result: SubtaskResult, usage: list[Usage], deps: RunDeps) -> dict[str, Any]:
    deps.ctx.emit("subtask_done", result.id, status=result.status, seconds=result.seconds)
    if deps.ctx.info_logs:
        log.info("subtask_done", run_id=deps.ctx.run_id, subtask=result.id, status=result.status, items=len(result.items))
    return {"results": {result.id: result}, "usage": usage}


async def continue_subtask(job: SubtaskJob, prior: SubtaskResult, deps: RunDeps) -> dict[str, Any]:
    """Go on with a ``waiting`` subtask now that its approvals are answered (``deps.ctx.decisions``).

    Approved start: it runs. Denied start: status ``denied`` (its dependents are skipped).
    Parked items go on from the step that waited; a denied escalation keeps the weaker answer
    (``unverified = "denied: <step> escalation"``), a denied tool call is refused."""
    subtask = job.subtask
    agent = _agent_for(subtask, deps)
    start = next((a for a in prior.waiting if a.kind == "subtask"), None)
    if start is not None:
        if deps.ctx.decisions.get(start):
            return await run_subtask(job, deps, approved=True)
        reason = f"denied: a person refused to start {subtask.id} ({start.rule})"
        log.info("subtask_denied", run_id=deps.ctx.run_id, subtask=subtask.id, rule=start.rule)
        return _done(SubtaskResult(id=subtask.id, agent=agent.name, status="denied", reason=reason), [], deps)
    started = time.perf_counter()
    parked = [position for position, item in enumerate(prior.items) if item.waiting]
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(parked))
    with log_context(run_id=deps.ctx.run_id, subtask=subtask.id):
        inputs = [agent.make_input(prior.items[p].item, subtask.options) for p in parked]
        priors: list[AgentRun | None] = [prior.items[p].parked(agent.output_type) for p in parked]
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id, priors=priors)
    fresh, approvals = _items(subtask, [(p + 1, prior.items[p].item, r) for p, r in zip(parked, runs, strict=True)], deps)
    items = list(prior.items)  # items that had finished stay as they were saved
    for p, went_on in zip(parked, fresh, strict=True):
        items[p] = went_on
    usage = [u for r in runs for u in r.usage]
    seconds = round(prior.seconds + time.perf_counter() - started, 3)
    tool_calls = [*prior.tool_calls, *(c.model_dump() for r in runs for c in r.tool_calls)]
    result = _outcome(job, agent, items, approvals, usage, tool_calls=tool_calls, seconds=seconds, models=prior.models)
    return _done(result, usage, deps)


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


async def execute(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """Run every subtask of the plan as soon as its own dependencies have finished.

    Each subtask is a task (a LangGraph task when the run is checkpointed, see :func:`_spawners`),
    started in plan order (LangGraph task ids depend on the call order, and must match when a
    resumed run replays this node); each waits for its dependencies' results, then runs.
    Subtasks already in ``results`` are not run again.

    A ``waiting`` subtask holds its dependents back. Once nothing else can move, the run pauses
    with every unanswered approval (one ``interrupt``); after the answers, each waiting subtask
    whose approvals are all answered goes on as a new task (in plan order).
    """
    deps = runtime.context
    plan = state["plan"]
    limit = deps.ctx.settings.max_steps
    if len(plan.subtasks) > limit:
        raise UserError(
            ErrorCode.STEP_LIMIT,
            f"the plan has {len(plan.subtasks)} subtasks, more than max_steps={limit}; "
            "raise MOA_MAX_STEPS (or max_steps in moa.toml) or split the task",
        )
    known = state.get("results", {})
    loop = asyncio.get_running_loop()
    finished: dict[str, asyncio.Future[SubtaskResult]] = {s.id: loop.create_future() for s in plan.subtasks}
    for sid, done in known.items():
        if sid in finished:
            finished[sid].set_result(done)
    waiting: dict[str, SubtaskResult] = {}
    going_on: dict[str, SubtaskResult] = {}
    outcomes: list[dict[str, Any]] = []
    calls: list[asyncio.Future[Any]] = []
    ran: set[str] = set()
    changed = asyncio.Event()

    by_id = {s.id: s for s in plan.subtasks}

    async def subtask(subtask_id: str) -> dict[str, Any]:
        spec = by_id[subtask_id]
        upstream = {d: await finished[d] for d in spec.depends_on}
        ran.add(subtask_id)
        return await run_subtask(_job(state, spec, upstream), deps)

    async def approved(subtask_id: str) -> dict[str, Any]:
        spec = by_id[subtask_id]
        upstream = {d: finished[d].result() for d in spec.depends_on}
        ran.add(subtask_id)
        return await continue_subtask(_job(state, spec, upstream), going_on[subtask_id], deps)

    def fail(sid: str, exc: BaseException) -> None:
        """Pass a failure on to the dependents (marked observed: the node may have ended already)."""
        finished[sid].set_exception(exc)
        finished[sid].exception()

    def settle(sid: str, call: asyncio.Future[dict[str, Any]]) -> None:
        changed.set()
        if call.cancelled():
            finished[sid].cancel()
        elif (exc := call.exception()) is not None:
            fail(sid, exc)
        else:
            outcomes.append(call.result())
            result = revive_results(call.result()["results"], deps.agents)[sid]
            if sid not in ran:
                log.info("subtask_reused", run_id=deps.ctx.run_id, subtask=sid, status=result.status)
                deps.ctx.emit("subtask_done", sid, status=result.status, reused=True)
            if result.status == "waiting":
                waiting[sid] = result
            else:
                finished[sid].set_result(result)

    def start(sid: str, call: Any) -> None:
        """Track a subtask's task call (a LangGraph future) until it settles."""
        calls.append(call)
        call.add_done_callback(lambda c: settle(sid, c))

    def held(sid: str) -> bool:
        """Cannot move before a person answers: waits, or depends on one that does."""
        return sid in waiting or any(not finished[d].done() and held(d) for d in by_id[sid].depends_on)

    def failure() -> BaseException | None:
        for future in finished.values():
            if future.cancelled():
                return asyncio.CancelledError()
            if future.done() and future.exception() is not None:
                return future.exception()
        return None

    first, then = _spawners(subtask, approved)
    for s in plan.subtasks:
        if s.id not in known:
            start(s.id, first(s.id))
    try:
        answers: dict[str, bool] = {}
        while True:
            while not all(finished[s.id].done() or held(s.id) for s in plan.subtasks) and failure() is None:
                changed.clear()
                await changed.wait()
            if (exc := failure()) is not None:
                raise exc
            if not waiting:
                break
            ready = [s.id for s in plan.subtasks if s.id in waiting and all(a.id in answers for a in waiting[s.id].waiting)]
            for sid in ready:
                going_on[sid] = waiting.pop(sid)
                start(sid, then(sid))
            if ready:
                continue
            unanswered = [a for s in plan.subtasks if s.id in waiting for a in waiting[s.id].waiting if a.id not in answers]
            try:
                got = interrupt(payload(unanswered))
            except GraphInterrupt:  # the first pass: let every held task end without a result, then pause
                for sid in waiting:
                    fail(sid, GraphInterrupt(()))
                await asyncio.gather(*calls, return_exceptions=True)
                log.info("run_paused", run_id=deps.ctx.run_id, approvals=[a.id for a in unanswered])
                raise
            for approval in unanswered:
                if approval.id in (got or {}):
                    answers[approval.id] = bool(got[approval.id])
                    deps.ctx.decisions.record(approval, answers[approval.id])
    finally:  # failed or cancelled: stop the subtasks still running (a cancelled run does no more work)
        for call in calls:
            if not call.done():
                call.cancel()
    results = {s.id: finished[s.id].result() for s in plan.subtasks if s.id not in known}
    return {"results": results, "usage": [u for o in outcomes for u in o["usage"]], "reused": sorted(set(results) - ran)}


def _spawners(
    subtask: Callable[[str], Awaitable[dict[str, Any]]], approved: Callable[[str], Awaitable[dict[str, Any]]]
) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """How ``execute`` starts a subtask: as a LangGraph task when the run is checkpointed (its
    result is saved as soon as it finishes, so a resumed run does not do it again), else as a
    plain asyncio task (nothing to save, and a LangGraph task costs ~0.2 ms of bookkeeping)."""
    if get_config()["configurable"].get(CONFIG_KEY_CHECKPOINTER) is not None:
        return task(name="subtask")(subtask), task(name="approved")(approved)  # type: ignore[arg-type, return-value]
    return (lambda sid: asyncio.ensure_future(subtask(sid))), (lambda sid: asyncio.ensure_future(approved(sid)))


def _digest(state: RunState, limit: int = 6000) -> str:
    results = {
        sid: {
            "agent": r.agent,
            "status": r.status,
            "items": [{"item": i.item[:200], "output": i.output.model_dump() if i.output else i.error} for i in r.items[:20]],
        }
        for sid, r in state.get("results", {}).items()
    }
    return json.dumps(results, default=str)[:limit]


async def synthesize(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """Write the answer with the ``llm`` tier when it is a chat model; else leave the structured report."""
    ctx = runtime.context.ctx
    backend = ctx.models.tier("llm")
    handed = sum(1 for r in state.get("results", {}).values() for i in r.items if i.handoff)
    if handed:  # no answer is written around items a person must decide
        return {"answer": None, "synthesizer": f"report (not synthesized: {handed} item(s) need a person)"}
    if not (await backend.acapabilities()).chat:
        return {"answer": None, "synthesizer": f"report (no model: the llm tier {backend.spec} is a base model)"}
    if (reached := ctx.budget.refuses("llm")) is not None:
        return {"answer": None, "synthesizer": f"report (not synthesized: {reached})"}
    if (rule := step_rule(ctx.settings, Step("llm", backend.spec))) is not None:
        approval = Approval(id="synthesize", kind="synthesize", rule=rule, reason=f"write the final answer with the llm tier ({backend.spec})", step="llm")
        if not ask([approval])[approval.id]:
            return {"answer": None, "synthesizer": "report (not synthesized: a person denied the llm call)"}
    request = GenerateRequest(
        messages=[
            Message(role="system", content="You write the final answer to the user's task from the results of subtasks. Be concise and factual."),
            Message(role="user", content=f"Task: {state['task']}\n\nSubtask results (JSON): {_digest(state)}"),
        ],
        max_tokens=600,
    )
    try:
        gen = await backend.agenerate(request)
    except RunError as exc:
        log.warning("synthesis_failed", code=str(exc.code), error=exc.message)
        return {"answer": None, "synthesizer": f"report (the llm tier failed: {exc.message})"}
    usage = usage_of(backend, gen, tier="llm", agent=None, subtask=None, purpose="synthesize")
    ctx.budget.add([usage])
    return {"answer": gen.text.strip(), "synthesizer": backend.spec, "usage": [usage]}


__all__ = [
    "ItemResult",
    "RunDeps",
    "RunState",
    "StoredOutput",
    "SubtaskJob",
    "SubtaskResult",
    "continue_subtask",
    "execute",
    "merge_results",
    "plan_node",
    "revive_results",
    "run_subtask",
    "synthesize",
]
