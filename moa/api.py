"""The Python API: :func:`arun` (async core) and :func:`run` (thin sync wrapper)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import structlog
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field

from moa.agent import Agent
from moa.context import EventSink, RunContext
from moa.errors import ErrorCode, UserError
from moa.escalation import EscalationSummary, resolve_cascade, summarize_escalations
from moa.executor import ItemResult, RunDeps, SubtaskResult
from moa.inputs import check_items, check_task, read_items
from moa.models.base import ModelBackend
from moa.models.registry import Models
from moa.plan import Plan
from moa.planner import PlannerInfo
from moa.registry import agent_catalog, get_graph
from moa.settings import Settings, load_settings
from moa.usage import Usage, UsageSummary, summarize

log = structlog.get_logger(__name__)

RunStatus = Literal["ok", "partial", "failed", "stopped", "interrupted"]


class RunResult(BaseModel):
    """The record of one run: plan, per-subtask results, usage, answer."""

    run_id: str
    task: str
    graph: str
    status: RunStatus
    """``ok``: every subtask succeeded; ``partial``: some items or subtasks failed; ``failed``: none
    succeeded; ``stopped``: a budget ran out (see ``stopped``); ``interrupted``: cancelled (Ctrl-C),
    results are what finished before."""
    stopped: str | None = None
    """Which budget stopped the run, in words."""
    plan: Plan | None = None
    planner: PlannerInfo | None = None
    results: dict[str, SubtaskResult] = Field(default_factory=dict)
    answer: str | None = None
    """The synthesizer's answer (``None`` when the report is rendered without a model)."""
    synthesizer: str | None = None
    usage: list[Usage] = Field(default_factory=list)
    summary: UsageSummary
    escalations: EscalationSummary = Field(default_factory=EscalationSummary)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float = 0.0
    input_items: int = 0

    @property
    def exit_code(self) -> int:
        if self.status == "ok":
            return 0
        codes = {e.get("type") for e in self.errors}
        return 2 if codes == {"UserError"} else 3


def _status(results: Mapping[str, SubtaskResult]) -> RunStatus:
    statuses = [r.status for r in results.values()]
    if statuses and all(s == "ok" for s in statuses):
        return "ok"
    if any(s in ("ok", "partial") for s in statuses):
        return "partial"
    return "failed"


def _errors(results: Mapping[str, SubtaskResult]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for r in results.values():
        first = next((i.error for i in r.items if i.error), None)
        if first is not None:
            errors.append({**first, "subtask": r.id})
        elif r.status in ("failed", "skipped"):
            errors.append({"type": "RunError", "code": str(ErrorCode.SUBTASK_FAILED), "message": r.reason or r.status, "subtask": r.id})
    return errors


async def arun(
    task: str,
    *,
    input: Path | str | Iterable[str] | None = None,
    graph: str | Pregel = "plan_execute",
    agents: Iterable[Agent] | None = None,  # type: ignore[type-arg]
    plan: Plan | dict[str, Any] | str | None = None,
    settings: Settings | None = None,
    slm: ModelBackend | None = None,
    llm: ModelBackend | None = None,
    on_event: EventSink | None = None,
    context: RunContext | None = None,
) -> RunResult:
    """Run ``task`` over ``input`` items (a text file with one item per line, or a list of texts).

    Args:
        graph: a built-in graph's name (``moa graphs``) or a compiled LangGraph graph over
            :class:`moa.executor.RunState` with :class:`moa.executor.RunDeps` as its context.
        agents: extra agents (replace built-ins of the same name).
        plan: a plan to run instead of planning.
        slm, llm: backends to use for the tiers instead of the configured specs (e.g. fakes).
        context: a :class:`RunContext` to reuse (its models stay open); else one is made and closed.
    """
    settings = settings or (context.settings if context else load_settings())
    task = check_task(task, settings)
    resolve_cascade(settings)  # a bad cascade fails before any model runs
    if input is None:
        items: list[str] = []
    elif isinstance(input, (str, Path)):
        items = read_items(Path(input), settings)
    else:
        items = check_items([str(i) for i in input], settings)
    catalog = agent_catalog(agents)
    compiled = get_graph(graph).build() if isinstance(graph, str) else graph
    graph_name = graph if isinstance(graph, str) else (getattr(graph, "name", None) or "custom")
    own_context = context is None
    ctx = context or RunContext.create(settings, models=Models(settings, slm=slm, llm=llm), on_event=on_event)
    started = time.perf_counter()
    try:
        with structlog.contextvars.bound_contextvars(run_id=ctx.run_id):
            log.info("run_started", task=task[:200], items=len(items), graph=graph_name)
            try:
                state = await compiled.ainvoke({"task": task, "items": items}, context=RunDeps(ctx=ctx, agents=catalog, plan=plan))
            except asyncio.CancelledError:
                ctx.partial = _record(ctx, task, graph_name, _journal_state(ctx), len(items), started, interrupted=True)
                log.warning("run_interrupted", finished_items=len(ctx.journal))
                raise
    finally:
        if own_context:
            await ctx.aclose()
    result = _record(ctx, task, graph_name, state, len(items), started)
    log.info("run_finished", status=result.status, seconds=result.seconds, calls=result.summary.calls)
    return result


def _journal_state(ctx: RunContext) -> dict[str, Any]:
    """What an interrupted run finished, rebuilt from ``ctx.journal``."""
    by_subtask: dict[str, SubtaskResult] = {}
    usage: list[Usage] = []
    for entry in sorted(ctx.journal, key=lambda e: (e.subtask or "", e.position)):
        sid = entry.subtask or entry.agent
        result = by_subtask.setdefault(sid, SubtaskResult(id=sid, agent=entry.agent, status="partial", reason="interrupted"))
        result.items.append(ItemResult.of(entry.item, entry.run))
        usage += entry.run.usage
    return {"results": by_subtask, "usage": usage}


def _record(ctx: RunContext, task: str, graph: str, state: Mapping[str, Any], n_items: int, started: float, *, interrupted: bool = False) -> RunResult:
    results: dict[str, SubtaskResult] = state.get("results", {})
    usage: list[Usage] = state.get("usage", [])
    price = ctx.settings.prices.get(ctx.settings.llm)
    items = [i for r in results.values() for i in r.items if not i.deduplicated]
    status: RunStatus = "interrupted" if interrupted else ("stopped" if ctx.budget.stopped else _status(results))
    return RunResult(
        run_id=ctx.run_id,
        task=task,
        graph=graph,
        status=status,
        stopped=ctx.budget.stopped,
        plan=state.get("plan"),
        planner=state.get("planner"),
        results=results,
        answer=state.get("answer"),
        synthesizer=state.get("synthesizer"),
        usage=usage,
        summary=summarize(usage, llm_price=(price.prompt, price.completion) if price else None),
        escalations=summarize_escalations([(i.escalations, i.unverified, i.routed) for i in items]),
        errors=_errors(results),
        seconds=round(time.perf_counter() - started, 3),
        input_items=n_items,
    )


def _check_no_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UserError(
        ErrorCode.NESTED_EVENT_LOOP,
        "moa.run() cannot be called from a running event loop (e.g. inside async code or Jupyter); use `await moa.arun(...)`",
    )


def run(task: str, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun` (refuses to run inside an event loop)."""
    _check_no_running_loop()
    return asyncio.run(arun(task, **kwargs))
