"""The state of a moa graph and its run-scoped dependencies.

:class:`RunState` flows ``plan → execute → synthesize``; parallel results merge through reducers
declared on it (nodes never mutate shared state). :class:`RunDeps` (the run context, the agent
catalog, a given plan) arrives in every node through LangGraph's ``Runtime`` context.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeAlias, TypedDict

from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.usage import Usage
from moa.workflow.plan import Plan, Subtask
from moa.workflow.planner import (
    PlannerInfo,
)
from moa.workflow.results import SubtaskResult, merge_results


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
