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

import json
from collections.abc import Callable
from typing import Any

import structlog
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from moa.agent.structured import usage_of
from moa.errors import RunError
from moa.models.base import GenerateRequest, Message
from moa.routing.approvals import Approval, ask, step_rule
from moa.routing.policy import Step
from moa.workflow.plan import Plan
from moa.workflow.planner import (
    LLMPlanner,
    PlanOutcome,
    RouterPlanner,
    choose_planner,
    given_plan,
)
from moa.workflow.scheduler import execute
from moa.workflow.state import PlanNode, RunDeps, RunGraph, RunState

log = structlog.get_logger(__name__)


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
