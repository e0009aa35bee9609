"""The nodes of the plan-and-execute shape: ``plan`` (planner or a given plan),
``execute`` (:mod:`moa.workflow.scheduler`) and ``synthesize`` (the llm tier writes the answer, or the
structured report stands), and :func:`compile_plan_execute` that wires them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from moa.errors import ApprovalDenied, ErrorCode, ModelFailed, RunError
from moa.logs import get_logger
from moa.models.base import GenerateRequest, Message
from moa.routing.policy import plan_models
from moa.workflow.limits import DocumentLimits
from moa.workflow.plan import Plan, with_agent_options
from moa.workflow.planner import PlanOutcome, given_plan, plan_task
from moa.workflow.scheduler import execute
from moa.workflow.state import PlanNode, RunDeps, RunGraph, RunState

log = get_logger(__name__)


def make_plan_node(*, fixed: Plan | None = None, transform: Callable[[Plan], Plan] | None = None) -> PlanNode:
    """A ``plan`` node: plans the task (or takes the run's given plan, or ``fixed``), then
    applies ``transform`` (e.g. the triage graph's gate), validates the result and sets the run's
    ``agent_options`` on the subtasks of those agents (the plan, checkpointed, keeps them)."""

    async def plan(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
        deps = runtime.context
        models = plan_models(deps.ctx.settings)  # the cascade steps a plan may name
        with deps.ctx.scope() as scope:
            if deps.plan is not None or fixed is not None:
                given = deps.plan if deps.plan is not None else fixed
                outcome: PlanOutcome = given_plan(given, deps.agents, models=models, limits=DocumentLimits.of(deps.ctx.settings))  # type: ignore[arg-type]
            else:
                outcome = await _plan(deps, state)
        if transform is not None:
            outcome = PlanOutcome(given_plan(transform(outcome.plan), deps.agents, models=models).plan, outcome.info)
        if deps.ctx.settings.agent_options:
            outcome = PlanOutcome(with_agent_options(outcome.plan, deps.ctx.settings.agent_options), outcome.info)
        deps.ctx.emit("planned", plan=outcome.plan, planner=outcome.info)
        log.info("planned", planner=outcome.info.name, subtasks=[s.id for s in outcome.plan.subtasks], warning=outcome.info.warning)
        return {"plan": outcome.plan, "planner": outcome.info, "usage": scope.usage}

    return plan


async def plan_node(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """The default ``plan`` node (see :func:`make_plan_node`)."""
    return await _default_plan(state, runtime=runtime)


async def _plan(deps: RunDeps, state: RunState) -> PlanOutcome:
    """Plan with the chosen planner (:func:`~moa.workflow.planner.plan_task`: the llm planner's
    calls may need a person's approval, ``plan``; denied or failing under ``auto``, the router
    planner plans instead)."""
    return await plan_task(deps.ctx, state["task"], deps.agents, has_input=bool(state.get("items")))


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
    step = ctx.step("llm")
    backend = ctx.backend_for(step)
    handed = sum(1 for r in state.get("results", {}).values() for i in r.items if i.handoff)
    if handed:  # no answer is written around items a person must decide
        return {"answer": None, "synthesizer": f"report (not synthesized: {handed} item(s) need a person)"}
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
    with ctx.scope() as scope:
        try:
            gen = await ctx.call(
                step, request, purpose="synthesize", ask_as="synthesize", reason=f"write the final answer with the llm tier ({backend.spec})"
            )
            if not gen.text.strip():
                called = f" (it called {', '.join(sorted({c.name for c in gen.tool_calls}))}, which no one offered)" if gen.tool_calls else ""
                raise ModelFailed(ErrorCode.MODEL_ERROR, f"{backend.spec} answered without text{called}")
        except ApprovalDenied:
            return {"answer": None, "synthesizer": "report (not synthesized: a person denied the llm call)"}
        except RunError as exc:  # the results stand: a failed answer is no reason to fail the run
            log.warning("synthesis_failed", code=str(exc.code), error=exc.message)
            return {"answer": None, "synthesizer": f"report (the llm tier failed: [{exc.code}] {exc.message})", "usage": scope.usage}
    cut = f" (cut at max_tokens={request.max_tokens}: the answer is incomplete)" if gen.finish_reason == "length" else ""
    return {"answer": gen.text.strip(), "synthesizer": backend.spec + cut, "usage": scope.usage}
