"""Executing a plan as a LangGraph graph: typed state, reducers, ``Send`` fan-out.

State flows ``plan → dispatch → run_subtask (xN in parallel) → join → dispatch → ... →
synthesize``. ``dispatch`` sends every ready subtask at once with :class:`langgraph.types.Send`;
each ``run_subtask`` returns its :class:`SubtaskResult` under its id and the reducer
:func:`merge_results` merges them (nodes never mutate shared state). Run-scoped dependencies
(:class:`RunDeps`) arrive through LangGraph's ``Runtime`` context.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

import structlog
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field, SerializeAsAny

from moa.agent import Agent, AgentRun
from moa.context import RunContext
from moa.errors import MoaError, RunError
from moa.escalation import Attempt, Escalation
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


class SubtaskJob(TypedDict):
    """The payload ``dispatch`` sends to one ``run_subtask``."""

    subtask: Subtask
    items: list[str]
    blocked_by: list[str]


@dataclass
class RunDeps:
    """Run-scoped dependencies injected into graph nodes."""

    ctx: RunContext
    agents: Mapping[str, Agent]  # type: ignore[type-arg]
    plan: Plan | dict[str, Any] | str | None = None


async def plan_node(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    deps = runtime.context
    if deps.plan is not None:
        outcome: PlanOutcome = given_plan(deps.plan, deps.agents)
    else:
        planner, reason = await choose_planner(deps.ctx)
        outcome = await planner.plan(deps.ctx, state["task"], deps.agents, has_input=bool(state.get("items")), reason=reason)
    deps.ctx.budget.add(outcome.usage)
    deps.ctx.emit("planned", plan=outcome.plan, planner=outcome.info)
    log.info("planned", planner=outcome.info.name, subtasks=[s.id for s in outcome.plan.subtasks])
    return {"plan": outcome.plan, "planner": outcome.info, "usage": outcome.usage}


def dispatch(state: RunState) -> list[Send] | str:
    """Send every subtask whose dependencies have finished; synthesize when none is left."""
    results = state.get("results", {})
    sends: list[Send] = []
    for subtask in state["plan"].subtasks:
        if subtask.id in results or not all(d in results for d in subtask.depends_on):
            continue
        blocked = [d for d in subtask.depends_on if results[d].status in ("failed", "skipped")]
        items = (state.get("items") or [state["task"]]) if subtask.items == INPUT else results[subtask.items].forwarded
        sends.append(Send("run_subtask", SubtaskJob(subtask=subtask, items=list(items), blocked_by=blocked)))
    return sends or "synthesize"


async def run_subtask(job: SubtaskJob, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    deps = runtime.context
    subtask = job["subtask"]
    agent = deps.agents[subtask.agent]
    started = time.perf_counter()
    if job["blocked_by"]:
        reason = f"skipped: depends on {', '.join(job['blocked_by'])}, which did not succeed"
        deps.ctx.emit("subtask_done", subtask.id, status="skipped")
        return {"results": {subtask.id: SubtaskResult(id=subtask.id, agent=agent.name, status="skipped", reason=reason)}}
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(job["items"]))
    with structlog.contextvars.bound_contextvars(run_id=deps.ctx.run_id, subtask=subtask.id):
        try:
            inputs = [agent.make_input(item, subtask.options) for item in job["items"]]
        except MoaError as exc:
            result = SubtaskResult(id=subtask.id, agent=agent.name, status="failed", reason=exc.message)
            deps.ctx.emit("subtask_done", subtask.id, status="failed")
            return {"results": {subtask.id: result}}
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id)
    items = [ItemResult.of(item, r) for item, r in zip(job["items"], runs, strict=True)]
    failed = sum(1 for r in runs if not r.ok)
    status: SubtaskStatus = "ok" if failed == 0 else ("failed" if failed == len(runs) else "partial")
    usage = [u for r in runs for u in r.usage]
    forwarded = [f for item, r in zip(job["items"], runs, strict=True) if r.output is not None for f in agent.forward(item, r.output)]
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
    )
    deps.ctx.emit("subtask_done", subtask.id, status=status, seconds=result.seconds)
    log.info("subtask_done", run_id=deps.ctx.run_id, subtask=subtask.id, status=status, items=len(items))
    return {"results": {subtask.id: result}, "usage": usage}


def join(state: RunState) -> dict[str, Any]:
    """Barrier after each parallel step; ``dispatch`` runs once from here."""
    return {}


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
    "SubtaskJob",
    "SubtaskResult",
    "dispatch",
    "join",
    "merge_results",
    "plan_node",
    "run_subtask",
    "synthesize",
]
