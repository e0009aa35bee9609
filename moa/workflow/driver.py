"""Driving a run: :func:`arun` / :func:`aresume` / :func:`apending`, the async core of the
Python API (:mod:`moa.api` adds the sync wrappers).

Every run is durable unless ``durable=False``: it is recorded in the run index and checkpointed
under its run id after each step and each finished subtask (:mod:`moa.workflow.durable`), so
:func:`aresume` continues a run that was killed without redoing the subtasks that finished. The
driver also opens the run's ledger (:mod:`moa.workflow.ledger`: finished items inside a subtask,
side-effect tool calls), counts its saved items in a resumed run's budget, and drops what the
checkpoint holds once it holds it.

A run that needs a person's approval (:mod:`moa.routing.approvals`) returns with status ``waiting``
and its ``pending`` approvals; ``aresume(run_id, approve=[...], deny=[...])`` answers them and goes on.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError
from langgraph.pregel import Pregel
from langgraph.types import Command, Durability

from moa.agent.base import Agent
from moa.agent.context import EventSink, RunContext, new_run_id
from moa.errors import ErrorCode, ErrorInfo, MoaError, RunError, UserError
from moa.logs import get_logger, log_context
from moa.models.base import ModelBackend
from moa.models.registry import Models
from moa.routing.approvals import Approval, pending_of, resolve_answers, resume_map
from moa.routing.policy import plan_models, resolve_cascade
from moa.settings import Settings, load_settings
from moa.usage import Usage
from moa.workflow.catalog import GraphFile, agent_catalog, builtin_graphs, get_graph
from moa.workflow.durable import RunSnapshot, checkpoint_location, load_snapshot, open_checkpointer, translate
from moa.workflow.graphfile import is_graph_file
from moa.workflow.index import FINISHED, RecordStatus, RunIndex, RunRecord, open_index, unknown_run
from moa.workflow.inputs import check_items, check_task, read_items
from moa.workflow.langgraph import interrupts_of
from moa.workflow.ledger import checkpointed, open_ledger
from moa.workflow.limits import DocumentLimits
from moa.workflow.options import RunOptions, Tightening, restore
from moa.workflow.output import check_output, write_result
from moa.workflow.plan import Plan
from moa.workflow.planner import given_plan
from moa.workflow.results import ItemResult, RunResult, SubtaskResult, run_result
from moa.workflow.state import RunDeps

log = get_logger(__name__)
Answer = Iterable[str] | bool


def _plan_json(plan: Plan | dict[str, Any] | str | None) -> str | None:
    if plan is None or isinstance(plan, str):
        return plan
    return plan.model_dump_json() if isinstance(plan, Plan) else json.dumps(plan)


def _graph(graph: str | Pregel, agents: Mapping[str, Agent] | None, settings: Settings) -> tuple[Pregel, str]:  # type: ignore[type-arg]
    """The compiled graph ``graph`` names; a YAML graph file is read within the settings' limits
    and may name only the models a plan may name."""
    if isinstance(graph, str):
        source = get_graph(graph, DocumentLimits.of(settings), plan_models(settings))
        return (source.build(agents) if isinstance(source, GraphFile) else source.build()), graph
    return graph, getattr(graph, "name", None) or "custom"


@asynccontextmanager
async def _durable(settings: Settings) -> AsyncIterator[tuple[BaseCheckpointSaver | None, RunIndex | None]]:  # type: ignore[type-arg]
    if not settings.durable:
        yield None, None
        return
    async with open_index(settings) as index, open_checkpointer(settings) as saver:
        yield saver, index


def _translate(exc: BaseException, settings: Settings) -> MoaError | None:
    if isinstance(exc, GraphRecursionError):
        return RunError(
            ErrorCode.STEP_LIMIT,
            f"the run took more than max_steps={settings.max_steps} graph steps without finishing; "
            "if the graph loops on purpose raise MOA_MAX_STEPS (or max_steps in moa.toml), else fix the loop in the graph",
        )
    return translate(exc, settings)


def _result(
    state: Mapping[str, Any],
    *,
    ctx: RunContext,
    record: RunRecord,
    deps: RunDeps,
    seconds: float,
    resumed: bool,
    interrupted: bool = False,
    pending: list[Approval] | None = None,
) -> RunResult:
    price = ctx.settings.prices.get(ctx.settings.llm)
    return run_result(
        state,
        run_id=ctx.run_id,
        task=record.task,
        graph=record.graph,
        agents=deps.agents,
        seconds=seconds,
        input_items=len(state["items"]) if "items" in state else record.items,
        llm_price=(price.prompt, price.completion) if price else None,
        stopped=ctx.budget.stopped,
        resumed=resumed,
        interrupted=interrupted,
        pending=pending,
    )


async def _resume_input(
    graph: Pregel, config: RunnableConfig, run_id: str, settings: Settings, answers: tuple[Answer, Answer] | None
) -> tuple[Any, dict[str, Any] | None, list[Approval]]:
    """What a resumed run is invoked with (``None``, or the answers to its open approvals as a
    ``Command``), its final state when it had already ended, and the approvals it waited for."""
    try:
        saved = await graph.aget_state(config)
    except sqlite3.Error as exc:
        raise translate(exc, settings) or exc from exc
    if not saved.values:
        raise UserError(
            ErrorCode.RUN_NOT_RESUMABLE,
            f"run {run_id} has no checkpoint in {checkpoint_location(settings)} (it stopped before its first step, "
            "or its checkpoints went to another checkpoint_url); start it again with `moa run`",
        )
    waits = pending_of(saved.interrupts)
    if waits:
        open_ = [a for _, approvals in waits for a in approvals]
        given = resolve_answers(run_id, open_, *(answers or ((), ())))
        return Command(resume=resume_map(waits, given)), None, open_
    if answers is not None:
        raise UserError(ErrorCode.NOT_WAITING, f"run {run_id} is not waiting for approvals; run `moa resume {run_id}` without answers")
    return None, (None if saved.next else saved.values), []


async def _drive(
    compiled: Pregel[Any, Any, Any, Any],
    input: dict[str, Any] | None,
    *,
    deps: RunDeps,
    record: RunRecord,
    resume: bool,
    answers: tuple[Answer, Answer] | None = None,
    options: RunOptions | None = None,
    tightened: list[Tightening] | None = None,
) -> RunResult:
    """Invoke the graph under the run's checkpoint thread; keep the run index up to date; write
    the result to the run's output file, if it has one.

    A resume claims the run in the index (one wins when two race for it) with the ``options`` now
    in force and what it ``tightened``."""
    ctx = deps.ctx
    settings = ctx.settings
    config: RunnableConfig = {"configurable": {"thread_id": ctx.run_id}, "recursion_limit": settings.max_steps}
    started = time.perf_counter()
    with log_context(run_id=ctx.run_id):
        async with _durable(settings) as (saver, index), AsyncExitStack() as stack:
            graph = compiled if saver is None or compiled.checkpointer is not None else compiled.copy(update={"checkpointer": saver})
            state: dict[str, Any] | None = None
            start: Any = input
            answered: list[Approval] = []
            spent: RunSnapshot | None = None
            if resume:  # before the index says `running`: a wrong answer leaves the run as it was
                start, state, answered = await _resume_input(graph, config, ctx.run_id, settings, answers)
                if isinstance(graph.checkpointer, BaseCheckpointSaver):
                    spent = await load_snapshot(graph.checkpointer, ctx.run_id)
            if index is not None and resume:
                await index.claim(record, options, tightened)
                if tightened:
                    log.warning("run_options_tightened", changes={t.option: [t.before, t.after] for t in tightened})
            elif index is not None:
                await index.start(record)
            ledger = ctx.ledger = await stack.enter_async_context(open_ledger(index, ctx.run_id)) if index is not None else None
            if spent is not None:  # the budget is the run's, not this attempt's: the checkpoint's usage, and the saved items'
                if ledger is not None:
                    await ledger.forget(checkpointed(spent.results))
                ctx.budget.carry([*spent.usage, *(await ledger.usage() if ledger is not None else [])], record.seconds)
            log.info("run_resumed" if resume else "run_started", task=record.task[:200], items=record.items, graph=record.graph)
            pending: list[Approval] = []
            try:
                if state is None:
                    durability: Durability | None = "sync" if graph.checkpointer is not None else None  # save each step before the next
                    state = await graph.ainvoke(start, config, context=deps, durability=durability)
                pending = [a for _, approvals in pending_of(interrupts_of(state)) for a in approvals]
                if pending:
                    state = await _paused_state(graph, ctx.run_id, state, pending)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):  # Ctrl-C: hand what finished to the event sink
                    partial = _result(
                        _journal_state(ctx), ctx=ctx, record=record, deps=deps, seconds=time.perf_counter() - started, resumed=resume, interrupted=True
                    )
                    ctx.emit("run_interrupted", result=partial)
                    log.warning("run_interrupted", finished_items=len(ctx.journal))
                error = _translate(exc, settings)
                if index is not None:
                    failure = error or exc
                    status: RecordStatus = "error" if isinstance(exc, Exception) else "interrupted"
                    details: ErrorInfo | None = None  # interrupted (Ctrl-C, cancelled): the status says it all
                    if isinstance(failure, MoaError):
                        details = failure.info()
                    elif status == "error":
                        details = ErrorInfo(type=type(exc).__name__, code=ErrorCode.INTERNAL_ERROR, message=str(exc))
                    try:  # answers are saved only at the next pause or the end: on a failure the approvals still wait
                        await index.finish(ctx.run_id, status, time.perf_counter() - started, details, pending=answered)
                    except Exception as also:  # the index itself may be what failed
                        log.warning("run_index_not_updated", error=str(also))
                if error is not None:
                    raise error from exc
                raise
            result = _result(state, ctx=ctx, record=record, deps=deps, seconds=time.perf_counter() - started, resumed=resume, pending=pending)
            if ledger is not None:  # the checkpoint holds it now
                await ledger.forget(None if result.status in FINISHED and not pending else checkpointed(result.results))
            if index is not None:
                await index.finish(ctx.run_id, result.status, result.seconds, pending=result.pending, stopped=result.stopped)
    output = (options or record.options or RunOptions()).output
    if output is not None:  # after the index: a result that cannot be written is still kept there
        write_result(output, result)
    if pending:
        log.info("run_waiting", approvals=[a.id for a in pending], seconds=result.seconds)
    else:
        log.info("run_finished", status=result.status, seconds=result.seconds, calls=result.summary.calls, reused=len(result.reused))
    return result


async def _paused_state(graph: Pregel, run_id: str, state: dict[str, Any], pending: list[Approval]) -> dict[str, Any]:
    """The state of a paused run: what the checkpoint holds, with the subtasks finished so far."""
    if not isinstance(graph.checkpointer, BaseCheckpointSaver):
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"{pending[0].id} needs a person's approval ({pending[0].rule}), and a run can only wait for one when it is durable; "
            "unset MOA_DURABLE=false, or remove the approval rule",
        )
    snapshot = await load_snapshot(graph.checkpointer, run_id)
    return {**state, "results": snapshot.results, "usage": snapshot.usage} if snapshot is not None else state


def _check_agent_options(settings: Settings, catalog: Mapping[str, Agent]) -> None:  # type: ignore[type-arg]
    """``agent_options`` name known agents and valid options (before any model runs)."""
    for name, options in settings.agent_options.items():
        if name not in catalog:
            raise UserError(
                ErrorCode.BAD_CONFIG, f"agent_options names the agent {name!r}, which is not known (known: {', '.join(sorted(catalog))}); fix --option or moa.toml"
            )
        catalog[name].make_input("x", dict(options))


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
    run_id: str | None = None,
    output: Path | str | None = None,
) -> RunResult:
    """Run ``task`` over ``input`` items (a text file with one item per line, or a list of texts).

    Args:
        graph: a built-in graph's name (``moa graphs``) or a compiled LangGraph graph over
            :class:`moa.kit.RunState` with :class:`moa.kit.RunDeps` as its context.
        agents: extra agents (replace built-ins of the same name).
        plan: a plan to run instead of planning.
        slm, llm: backends to use for the tiers instead of the configured specs (e.g. fakes).
        context: a :class:`RunContext` to reuse: its models, memory and embedder stay open; the run gets
            its own budget, journal and approvals. Else one is made and closed.
            Each run gets its own run id either way.
        run_id: the id to record the run under (default: a fresh one); must not exist yet.
        output: also write the result as JSON to this file when the run ends or pauses (checked
            before the run starts; never the input file). A resume writes it there too.

    The options that decide what the run may do (approval rules, budgets, cascade, thresholds,
    cache, memory folder, ``output``...) are recorded with it and restored when it is resumed
    (:mod:`moa.workflow.options`).
    """
    settings = settings or (context.settings if context else load_settings())
    task = check_task(task, settings)
    target = check_output(output, input=input if isinstance(input, (str, Path)) else None) if output is not None else None
    resolve_cascade(settings)  # a bad cascade fails before any model runs
    if settings.approve and not settings.durable:
        raise UserError(
            ErrorCode.BAD_CONFIG, "approval rules need durable runs (a waiting run is resumed from its checkpoint); unset MOA_DURABLE=false or drop `approve`"
        )
    if input is None:
        items: list[str] = []
    elif isinstance(input, (str, Path)):
        items = read_items(Path(input), settings)
    else:
        items = check_items([str(i) for i in input], settings)
        if not items:
            raise UserError(ErrorCode.INVALID_INPUT, "input= is an empty list; give the items to work on, or input=None to run the task on its own text")
    catalog = agent_catalog(agents)
    _check_agent_options(settings, catalog)
    if plan is not None:  # a bad plan (or one naming models it may not) fails before the run is recorded
        given_plan(plan, catalog, models=plan_models(settings), limits=DocumentLimits.of(settings))
    compiled, graph_name = _graph(graph, catalog, settings)
    if context is None:
        ctx = RunContext.create(settings, models=Models(settings, slm=slm, llm=llm), on_event=on_event, run_id=run_id)
    else:
        ctx = context.for_run(settings, run_id or new_run_id(), on_event)
    options = RunOptions.of(settings, target)
    record = RunRecord(
        run_id=ctx.run_id, task=task, graph=graph_name, status="running", started=time.time(), items=len(items), plan=_plan_json(plan), options=options
    )
    try:
        return await _drive(
            compiled, {"task": task, "items": items}, deps=RunDeps(ctx=ctx, agents=catalog, plan=plan), record=record, resume=False, options=options
        )
    finally:
        if context is None:
            await ctx.aclose()


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


def _answer(value: Answer, side: str) -> bool | list[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        raise UserError(ErrorCode.INVALID_INPUT, f"{side}= takes a list of approval ids or True, not the string {value!r}; e.g. {side}=[{value!r}]")
    return list(value)


async def aresume(
    run_id: str,
    *,
    approve: Answer = (),
    deny: Answer = (),
    graph: Pregel | None = None,
    agents: Iterable[Agent] | None = None,  # type: ignore[type-arg]
    settings: Settings | None = None,
    slm: ModelBackend | None = None,
    llm: ModelBackend | None = None,
    on_event: EventSink | None = None,
    context: RunContext | None = None,
    tighten: Mapping[str, Any] | None = None,
    output: Path | str | None = None,
) -> RunResult:
    """Continue a run that stopped (killed, interrupted, failed with an error, or waiting for a
    person's approval) from its checkpoint.

    Subtasks that had finished are not run again (``RunResult.reused`` lists them). The options
    the run was started with (approval rules, budgets, cascade, thresholds, cache, memory folder,
    output file...) are restored; models, timeouts and credentials are the current settings'
    (models may differ from the first attempt). Of two resumes of the same run at once, one runs
    and the other gets ``run_active``.

    Args:
        approve, deny: answers to a ``waiting`` run's approvals: ids from ``RunResult.pending`` /
            :func:`apending`, or ``True`` for every pending one (named ids win over ``True``).
            Ids that are not pending are a ``not_waiting`` error; the run may wait again later.
        graph: the compiled graph, when the run used a custom one (built-ins are found by name).
        agents: the extra agents the run used.
        context: a :class:`RunContext` to reuse (its models stay open; e.g. to resume in the same
            process right after a run paused).
        tighten: options to make stricter for the rest of the run: ``approve`` (more approval
            rules), ``budget_tokens`` / ``budget_cost`` / ``budget_seconds`` (lower), ``on_unsure``
            (``needs_human``). A looser value is refused (``resume_loosens``); the run record lists
            what was tightened. Stricter approval rules or budgets in ``settings`` apply too.
        output: write the result to this file instead of the run's recorded output file.
    """
    settings = settings or (context.settings if context else load_settings())
    approve, deny = _answer(approve, "approve"), _answer(deny, "deny")
    answers = (approve, deny) if approve or deny else None
    if not settings.durable:
        raise UserError(ErrorCode.BAD_CONFIG, "cannot resume with durable=false (runs are not recorded); unset MOA_DURABLE")
    async with open_index(settings) as index:
        record = await index.get(run_id)
    if record is None:
        raise unknown_run(run_id, settings)
    if record.status == "running":
        raise UserError(ErrorCode.RUN_ACTIVE, f"run {run_id} is still running in process {record.pid}; wait for it, or stop that process first")
    if answers is not None and not record.pending:
        raise UserError(
            ErrorCode.NOT_WAITING,
            f"run {run_id} is not waiting for approvals (status {record.status}), so there is nothing to approve or deny; "
            f"`moa runs show {run_id}` shows it",
        )
    if record.status in FINISHED:
        raise UserError(
            ErrorCode.RUN_FINISHED,
            f"run {run_id} already finished (status {record.status}); `moa runs show {run_id}` shows it, `moa run` starts a new one",
        )
    if graph is None and record.graph not in builtin_graphs() and not is_graph_file(record.graph):
        raise UserError(
            ErrorCode.UNKNOWN_GRAPH, f"run {run_id} used the custom graph {record.graph!r}; pass it: moa.resume({run_id!r}, graph=build())"
        )
    settings, options, tightened = resume_options(record, settings, tighten=tighten, output=output)
    catalog = agent_catalog(agents)
    compiled, _ = _graph(graph if graph is not None else record.graph, catalog, settings)
    if context is None:
        ctx = RunContext.create(settings, models=Models(settings, slm=slm, llm=llm), on_event=on_event, run_id=run_id)
    else:
        ctx = context.for_run(settings, run_id, on_event)
    deps = RunDeps(ctx=ctx, agents=catalog, plan=record.plan)
    try:
        return await _drive(compiled, None, deps=deps, record=record, resume=True, answers=answers, options=options, tightened=tightened)
    finally:
        if context is None:
            await ctx.aclose()


def resume_options(
    record: RunRecord, settings: Settings, *, tighten: Mapping[str, Any] | None = None, output: Path | str | None = None
) -> tuple[Settings, RunOptions, list[Tightening]]:
    """The settings to resume ``record``'s run with (its recorded options put back, ``tighten``
    applied), the options to record, and what was tightened. The output file is checked.

    A run recorded before moa kept its options takes the options of ``settings`` (recorded from
    then on)."""
    recorded = record.options or RunOptions.of(settings)
    settings, options, tightened = restore(record.run_id, recorded, settings, tighten=tighten, attempt=record.attempts + 1)
    if output is not None:
        options = options.model_copy(update={"output": check_output(output)})
    elif options.output is not None:
        check_output(options.output)
    return settings, options, tightened


async def aresume_settings(
    run_id: str, settings: Settings, *, tighten: Mapping[str, Any] | None = None, output: Path | str | None = None
) -> tuple[Settings, RunOptions]:
    """The settings :func:`aresume` will run ``run_id`` with, and its options (for a caller that
    builds its :class:`RunContext` before resuming, so the context has the run's own settings)."""
    async with open_index(settings, write=False) as index:
        record = await index.get(run_id)
    if record is None:
        raise unknown_run(run_id, settings)
    restored, options, _ = resume_options(record, settings, tighten=tighten, output=output)
    return restored, options


async def apending(run_id: str, *, settings: Settings | None = None) -> list[Approval]:
    """The approvals run ``run_id`` waits for (empty when it waits for none). A run whose resume
    failed after it was answered (``error``) waits for the same approvals again."""
    settings = settings or load_settings()
    async with open_index(settings, write=False) as index:
        record = await index.get(run_id)
    if record is None:
        raise unknown_run(run_id, settings)
    return [] if record.status == "running" else record.pending
