"""Executing a plan: every subtask starts as soon as its own dependencies have finished.

Each subtask is one task (a LangGraph ``@task`` when the run is checkpointed); a slow subtask never
delays an unrelated chain. Durability: with a checkpointer, each finished subtask's result is saved
the moment it finishes; a resumed run replays ``execute`` and LangGraph hands back the saved
results of finished subtasks instead of running them again. A task's id depends on the order of
the calls, so ``execute`` calls them in plan order, never in order of completion. Inside a subtask
that had not finished, the items that had are not run again either: each is saved as it finishes
(the run ledger, :mod:`moa.workflow.ledger`), see :mod:`moa.workflow.subtask`.

Approvals (:mod:`moa.routing.approvals`): once nothing else can move, ``execute`` pauses the run
with one LangGraph ``interrupt`` carrying every pending approval. On resume it replays: saved
results come back, the interrupt returns the answers, and each fully answered waiting subtask goes
on as a new task (called in plan order after each pause, so task ids stay stable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.errors import GraphInterrupt
from langgraph.func import task
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from moa.errors import ErrorCode, UserError
from moa.logs import get_logger
from moa.routing.approvals import payload
from moa.workflow.langgraph import checkpointed
from moa.workflow.results import SubtaskResult, revive_results
from moa.workflow.state import RunDeps, RunState
from moa.workflow.subtask import _job, continue_subtask, run_subtask

log = get_logger(__name__)


async def execute(state: RunState, runtime: Runtime[RunDeps]) -> dict[str, Any]:
    """Run every subtask of the plan as soon as its own dependencies have finished.

    Each subtask is a task (a LangGraph task when the run is checkpointed, see :func:`_spawners`),
    started in plan order (LangGraph task ids depend on the call order, and must match when a
    resumed run replays this node); each waits for its dependencies' results, then runs.
    Subtasks already in ``results`` are not run again.

    A ``waiting`` subtask holds its dependents back. Once nothing else can move, the run pauses
    with every unanswered approval (one ``interrupt``); after the answers, each waiting subtask
    whose approvals are all answered goes on as a new task (in plan order).
    """
    deps = runtime.context
    plan = state["plan"]
    limit = deps.ctx.settings.max_steps
    if len(plan.subtasks) > limit:
        raise UserError(
            ErrorCode.STEP_LIMIT,
            f"the plan has {len(plan.subtasks)} subtasks, more than max_steps={limit}; "
            "raise MOA_MAX_STEPS (or max_steps in moa.toml) or split the task",
        )
    known = state.get("results", {})
    loop = asyncio.get_running_loop()
    finished: dict[str, asyncio.Future[SubtaskResult]] = {s.id: loop.create_future() for s in plan.subtasks}
    for sid, done in known.items():
        if sid in finished:
            finished[sid].set_result(done)
    waiting: dict[str, SubtaskResult] = {}
    going_on: dict[str, SubtaskResult] = {}
    outcomes: list[dict[str, Any]] = []
    calls: list[asyncio.Future[Any]] = []
    ran: set[str] = set()
    changed = asyncio.Event()

    by_id = {s.id: s for s in plan.subtasks}

    async def subtask(subtask_id: str) -> dict[str, Any]:
        spec = by_id[subtask_id]
        upstream = {d: await finished[d] for d in spec.depends_on}
        ran.add(subtask_id)
        return await run_subtask(_job(state, spec, upstream), deps)

    async def approved(subtask_id: str) -> dict[str, Any]:
        spec = by_id[subtask_id]
        upstream = {d: finished[d].result() for d in spec.depends_on}
        ran.add(subtask_id)
        return await continue_subtask(_job(state, spec, upstream), going_on[subtask_id], deps)

    def fail(sid: str, exc: BaseException) -> None:
        """Pass a failure on to the dependents (marked observed: the node may have ended already)."""
        finished[sid].set_exception(exc)
        finished[sid].exception()

    def settle(sid: str, call: asyncio.Future[dict[str, Any]]) -> None:
        changed.set()
        if call.cancelled():
            finished[sid].cancel()
        elif (exc := call.exception()) is not None:
            fail(sid, exc)
        else:
            outcomes.append(call.result())
            result = revive_results(call.result()["results"], deps.agents)[sid]
            if sid not in ran:
                log.info("subtask_reused", run_id=deps.ctx.run_id, subtask=sid, status=result.status)
                deps.ctx.emit("subtask_done", sid, status=result.status, reused=True)
            if result.status == "waiting":
                waiting[sid] = result
            else:
                finished[sid].set_result(result)

    def start(sid: str, call: Any) -> None:
        """Track a subtask's task call (a LangGraph future) until it settles."""
        calls.append(call)
        call.add_done_callback(lambda c: settle(sid, c))

    def held(sid: str) -> bool:
        """Cannot move before a person answers: waits, or depends on one that does."""
        return sid in waiting or any(not finished[d].done() and held(d) for d in by_id[sid].depends_on)

    def failure() -> BaseException | None:
        for future in finished.values():
            if future.cancelled():
                return asyncio.CancelledError()
            if future.done() and future.exception() is not None:
                return future.exception()
        return None

    first, then = _spawners(subtask, approved)
    for s in plan.subtasks:
        if s.id not in known:
            start(s.id, first(s.id))
    try:
        answers: dict[str, bool] = {}
        while True:
            while not all(finished[s.id].done() or held(s.id) for s in plan.subtasks) and failure() is None:
                changed.clear()
                await changed.wait()
            if (exc := failure()) is not None:
                raise exc
            if not waiting:
                break
            ready = [s.id for s in plan.subtasks if s.id in waiting and all(a.id in answers for a in waiting[s.id].waiting)]
            for sid in ready:
                going_on[sid] = waiting.pop(sid)
                start(sid, then(sid))
            if ready:
                continue
            unanswered = [a for s in plan.subtasks if s.id in waiting for a in waiting[s.id].waiting if a.id not in answers]
            try:
                got = interrupt(payload(unanswered))
            except GraphInterrupt:  # the first pass: let every held task end without a result, then pause
                for sid in waiting:
                    fail(sid, GraphInterrupt(()))
                await asyncio.gather(*calls, return_exceptions=True)
                log.info("run_paused", run_id=deps.ctx.run_id, approvals=[a.id for a in unanswered])
                raise
            for approval in unanswered:
                if approval.id in (got or {}):
                    answers[approval.id] = bool(got[approval.id])
                    deps.ctx.decisions.record(approval, answers[approval.id])
    finally:  # failed or cancelled: stop the subtasks still running (a cancelled run does no more work)
        for call in calls:
            if not call.done():
                call.cancel()
    results = {s.id: finished[s.id].result() for s in plan.subtasks if s.id not in known}
    return {"results": results, "usage": [u for o in outcomes for u in o["usage"]], "reused": sorted(set(results) - ran)}


def _spawners(
    subtask: Callable[[str], Awaitable[dict[str, Any]]], approved: Callable[[str], Awaitable[dict[str, Any]]]
) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """How ``execute`` starts a subtask: as a LangGraph task when the run is checkpointed (its
    result is saved as soon as it finishes, so a resumed run does not do it again), else as a
    plain asyncio task (nothing to save, and a LangGraph task costs ~0.2 ms of bookkeeping)."""
    if checkpointed():
        return task(name="subtask")(subtask), task(name="approved")(approved)  # type: ignore[arg-type, return-value]
    return (lambda sid: asyncio.ensure_future(subtask(sid))), (lambda sid: asyncio.ensure_future(approved(sid)))
