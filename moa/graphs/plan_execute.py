"""plan_execute — the default graph: planner → parallel DAG of agent subtasks → synthesizer.

``execute`` starts each subtask as soon as its own dependencies have finished (one durable
LangGraph task per subtask); when all are done, the synthesizer writes the answer (``llm`` tier,
when it is a chat model) or leaves the structured report.
"""

from __future__ import annotations

from functools import cache

from moa.kit import Plan, RunGraph, compile_plan_execute, make_plan_node, plan_node


def build(plan: Plan | None = None) -> RunGraph:
    """Build and compile the plan-and-execute graph.

    Args:
        plan: a fixed DAG to run instead of planning each task (what a YAML graph's nodes declare).

    Without ``plan`` the compiled graph is built once and shared (compiling takes ~4 ms, a run
    of a small plan about as long): treat it as read-only, e.g. ``build().copy(update=...)``.
    """
    return _planned() if plan is None else compile_plan_execute(make_plan_node(fixed=plan), "plan_execute")


@cache
def _planned() -> RunGraph:
    return compile_plan_execute(plan_node, "plan_execute")
