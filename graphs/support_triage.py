"""support_triage — a template graph to copy: drop repeated messages, then a fixed DAG.

A custom LangGraph graph written with :mod:`moa.kit` only: a ``dedupe`` node drops repeated
messages, then the standard nodes run a fixed plan (filter spam, then urgency ∥ sentiment on what
is left) and the synthesizer writes the answer. It needs the ``urgency`` agent
(``agents/urgency.py``). To ship it in your own package, copy this file and register the module::

    [project.entry-points."moa.graphs"]
    support_triage = "your_package.support_triage"

``moa graphs`` then lists it and ``moa run --graph support_triage`` runs it. Or pass the compiled
graph to a run: ``moa.run(task, graph=build(), agents=[...])``.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from moa.kit import RunDeps, RunGraph, RunState, execute, given_plan, synthesize

PLAN = {
    "subtasks": [
        {"id": "spam", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "urgency", "agent": "urgency", "items": "spam", "depends_on": ["spam"]},
        {"id": "mood", "agent": "sentiment", "items": "spam", "depends_on": ["spam"]},
    ]
}


def dedupe(state: RunState) -> dict[str, Any]:
    """Drop repeated items (keeps the first of each)."""
    return {"items": list(dict.fromkeys(state.get("items", [])))}


async def fixed_plan(state: RunState, runtime: Any) -> dict[str, Any]:
    deps: RunDeps = runtime.context
    outcome = given_plan(PLAN, deps.agents)
    return {"plan": outcome.plan, "planner": outcome.info}


def build() -> RunGraph:
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("dedupe", dedupe)
    graph.add_node("plan", fixed_plan)
    graph.add_node("execute", execute)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "dedupe")
    graph.add_edge("dedupe", "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(name="support_triage")
