"""plan_execute — the default graph: planner → parallel DAG of agent subtasks → synthesizer.

Every ready subtask is dispatched at once with ``Send``; results merge through a reducer; when
nothing is left to run, the synthesizer writes the answer (``llm`` tier, when it is a chat model)
or leaves the structured report.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from moa.executor import RunDeps, RunState, dispatch, join, plan_node, run_subtask, synthesize


def build() -> CompiledStateGraph:  # type: ignore[type-arg]
    """Build and compile the plan-and-execute graph."""
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", plan_node)
    graph.add_node("run_subtask", run_subtask)
    graph.add_node("join", join)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", dispatch, ["run_subtask", "synthesize"])
    graph.add_edge("run_subtask", "join")
    graph.add_conditional_edges("join", dispatch, ["run_subtask", "synthesize"])
    graph.add_edge("synthesize", END)
    return graph.compile()
