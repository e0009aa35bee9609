"""plan_execute — the default graph: planner → parallel DAG of agent subtasks → synthesizer.

``execute`` starts each subtask as soon as its own dependencies have finished (one durable
LangGraph task per subtask); when all are done, the synthesizer writes the answer (``llm`` tier,
when it is a chat model) or leaves the structured report.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from moa.executor import RunDeps, RunState, execute, plan_node, synthesize


def build() -> CompiledStateGraph:  # type: ignore[type-arg]
    """Build and compile the plan-and-execute graph."""
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", plan_node)
    graph.add_node("execute", execute)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(name="plan_execute")
