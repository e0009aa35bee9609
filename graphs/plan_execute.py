"""plan_execute — the default graph: planner → parallel DAG of agent subtasks → synthesizer.

``execute`` starts each subtask as soon as its own dependencies have finished (one durable
LangGraph task per subtask); when all are done, the synthesizer writes the answer (``llm`` tier,
when it is a chat model) or leaves the structured report.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from moa.executor import RunDeps, RunState, execute, make_plan_node, plan_node, synthesize
from moa.plan import Plan


def build(plan: Plan | None = None) -> CompiledStateGraph:  # type: ignore[type-arg]
    """Build and compile the plan-and-execute graph.

    Args:
        plan: a fixed DAG to run instead of planning each task (what a YAML graph's nodes declare).
    """
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", plan_node if plan is None else make_plan_node(fixed=plan))
    graph.add_node("execute", execute)
    graph.add_node("synthesize", synthesize)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(name="plan_execute")
