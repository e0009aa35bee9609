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

import operator
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeAlias, TypedDict

from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.workflow.plan import Plan, Subtask
from moa.workflow.planner import (
    PlannerInfo,
)
from moa.workflow.results import SubtaskResult, merge_results
from moa.usage import Usage


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
