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
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from collections import Counter

import structlog
from langgraph.func import task
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator

from moa.agent import Agent, AgentRun, ModelAgent
from moa.context import RunContext
from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.escalation import Attempt, Escalation, StoredOutput, stored_output
from moa.models.base import GenerateRequest, Message
from moa.plan import INPUT, Plan, Subtask
from moa.planner import PlannerInfo, PlanOutcome, choose_planner, given_plan
from moa.structured import usage_of
from moa.usage import Usage

log = structlog.get_logger(__name__)

SubtaskStatus = Literal["ok", "partial", "failed", "skipped"]


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

    @classmethod
    def of(cls, item: str, run: AgentRun) -> ItemResult:
        attempts = run.attempts if len(run.attempts) > 1 else []  # one attempt: the output says it all
        return cls(
            item=item,
            output=run.output,
            error=run.error,
            answered_by=run.answered_by,
            unverified=run.unverified,
            escalations=run.escalations,
            attempts=attempts,
            deduplicated=run.deduplicated,
            routed=run.routed,
        )

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
    """Why the subtask failed or was skipped."""
    seconds: float = 0.0
    models: list[str] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    handled: dict[str, int] = Field(default_factory=dict)
    """How many items each cascade step answered (``{"slm": 8, "llm": 2}``)."""


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


@dataclass
class RunDeps:
    """Run-scoped dependencies injected into graph nodes."""

    ctx: RunContext
    agents: Mapping[str, Agent]  # type: ignore[type-arg]
    plan: Plan | dict[str, Any] | str | None = None


PlanNode = Callable[[RunState, Runtime[RunDeps]], Awaitable[dict[str, Any]]]


def make_plan_node(*, fixed: Plan | None = None, transform: Callable[[Plan], Plan] | None = None) -> PlanNode:
    """A ``plan`` node: plans the task (or takes the run's given plan, or ``fixed``), then
    applies ``transform`` (e.g. the triage graph's gate) and validates the result."""

    async def plan(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        deps = runtime.context
        if deps.plan is not None or fixed is not None:
            outcome: PlanOutcome = given_plan(deps.plan if deps.plan is not None else fixed, deps.agents)  # type: ignore[arg-type]
        else:
            planner, reason = await choose_planner(deps.ctx)
            outcome = await planner.plan(deps.ctx, state["task"], deps.agents, has_input=bool(state.get("items")), reason=reason)
        if transform is not None:
            outcome = PlanOutcome(given_plan(transform(outcome.plan), deps.agents).plan, outcome.info, outcome.usage)
        return _planned(deps, outcome)

    return plan


async def plan_node(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """The default ``plan`` node (see :func:`make_plan_node`)."""
    return await _default_plan(state, runtime)


def _planned(deps: RunDeps, outcome: PlanOutcome) -> dict[str, Any]:
    deps.ctx.budget.add(outcome.usage)
    deps.ctx.emit("planned", plan=outcome.plan, planner=outcome.info)
    log.info("planned", planner=outcome.info.name, subtasks=[s.id for s in outcome.plan.subtasks])
    return {"plan": outcome.plan, "planner": outcome.info, "usage": outcome.usage}


_default_plan = make_plan_node()


def _job(state: RunState, subtask: Subtask, upstream: Mapping[str, SubtaskResult]) -> SubtaskJob:
    blocked = [d for d in subtask.depends_on if upstream[d].status in ("failed", "skipped")]
    items = (state.get("items") or [state["task"]]) if subtask.items == INPUT else upstream[subtask.items].forwarded
    return SubtaskJob(subtask=subtask, items=list(items), blocked_by=blocked)


async def run_subtask(job: SubtaskJob, deps: RunDeps) -> dict[str, Any]:
    """Run one subtask's agent over its items; return ``{"results": {id: result}, "usage": [...]}``."""
    subtask = job.subtask
    agent = deps.agents[subtask.agent]
    if (subtask.cascade is not None or subtask.threshold is not None) and isinstance(agent, ModelAgent):
        agent = agent.with_policy(threshold=subtask.threshold, cascade=subtask.cascade)
    started = time.perf_counter()
    if job.blocked_by:
        reason = f"skipped: depends on {', '.join(job.blocked_by)}, which did not succeed"
        deps.ctx.emit("subtask_done", subtask.id, status="skipped")
        return {"results": {subtask.id: SubtaskResult(id=subtask.id, agent=agent.name, status="skipped", reason=reason)}, "usage": []}
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(job.items))
    with structlog.contextvars.bound_contextvars(run_id=deps.ctx.run_id, subtask=subtask.id):
        log.info("subtask_started", agent=agent.name, items=len(job.items))
        try:
            inputs = [agent.make_input(item, subtask.options) for item in job.items]
        except MoaError as exc:
            result = SubtaskResult(id=subtask.id, agent=agent.name, status="failed", reason=exc.message)
            deps.ctx.emit("subtask_done", subtask.id, status="failed")
            return {"results": {subtask.id: result}, "usage": []}
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id)
    items = [ItemResult.of(item, r) for item, r in zip(job.items, runs, strict=True)]
    failed = sum(1 for r in runs if not r.ok)
    status: SubtaskStatus = "ok" if failed == 0 else ("failed" if failed == len(runs) else "partial")
    usage = [u for r in runs for u in r.usage]
    forwarded = [f for item, r in zip(job.items, runs, strict=True) if r.output is not None for f in agent.forward(item, r.output)]
    first_error = next((r.error for r in runs if r.error), None)
    result = SubtaskResult(
        id=subtask.id,
        agent=agent.name,
        status=status,
        items=items,
        forwarded=forwarded,
        reason=f"{failed} of {len(runs)} items failed: {first_error['message']}" if first_error else None,
        seconds=round(time.perf_counter() - started, 3),
        models=sorted({u.model for u in usage}),
        tool_calls=[c.model_dump() for r in runs for c in r.tool_calls],
        handled=dict(Counter(r.answered_by for r in runs if r.answered_by and not r.deduplicated)),
    )
    deps.ctx.emit("subtask_done", subtask.id, status=status, seconds=result.seconds)
    log.info("subtask_done", run_id=deps.ctx.run_id, subtask=subtask.id, status=status, items=len(items))
    return {"results": {subtask.id: result}, "usage": usage}


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

    Each subtask is a LangGraph task, called in plan order (task ids depend on the call order,
    and must match when a resumed run replays this node); each waits for its dependencies'
    results, then runs. Subtasks already in ``results`` are not run again.
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
    ran: set[str] = set()

    async def subtask(subtask_id: str) -> dict[str, Any]:
        spec = plan.get(subtask_id)
        upstream = {d: await finished[d] for d in spec.depends_on}
        ran.add(subtask_id)
        return await run_subtask(_job(state, spec, upstream), deps)

    def settle(sid: str, call: asyncio.Future[dict[str, Any]]) -> None:
        if call.cancelled():
            finished[sid].cancel()
        elif (exc := call.exception()) is not None:
            finished[sid].set_exception(exc)
        else:
            result = revive_results(call.result()["results"], deps.agents)[sid]
            if sid not in ran:
                log.info("subtask_reused", run_id=deps.ctx.run_id, subtask=sid, status=result.status)
                deps.ctx.emit("subtask_done", sid, status=result.status, reused=True)
            finished[sid].set_result(result)

    step = task(name="subtask")(subtask)
    calls = {s.id: step(s.id) for s in plan.subtasks if s.id not in known}
    for sid, call in calls.items():
        call.add_done_callback(lambda c, sid=sid: settle(sid, c))
    try:
        outcomes = await asyncio.gather(*calls.values())
    finally:  # a failure reaches every dependent: mark each one observed
        for future in finished.values():
            if future.done() and not future.cancelled():
                future.exception()
    results = {sid: finished[sid].result() for sid in calls}
    reused = sorted(set(calls) - ran)
    return {"results": results, "usage": [u for o in outcomes for u in o["usage"]], "reused": reused}


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
    if not (await backend.acapabilities()).chat:
        return {"answer": None, "synthesizer": f"report (no model: the llm tier {backend.spec} is a base model)"}
    if (reached := ctx.budget.refuses("llm")) is not None:
        return {"answer": None, "synthesizer": f"report (not synthesized: {reached})"}
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
    "execute",
    "merge_results",
    "plan_node",
    "revive_results",
    "run_subtask",
    "synthesize",
]
