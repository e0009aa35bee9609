"""Running one subtask: its items through its agent, approvals before it starts, the
items parked for approval, and the subtask's result (ok / partial / failed / waiting / denied).

A subtask that must wait for a person returns a ``waiting`` result (saved like any other) instead
of running; so does one whose items were parked by a gated escalation or tool call.
:func:`continue_subtask` goes on once the approvals are answered.

In a durable run each item is saved as it finishes (the run's ledger, :mod:`moa.agent.ledger`):
a subtask killed half-way and resumed runs only the items that had not finished, and its result is
the same as an uninterrupted run's (the reused items are logged as ``items_reused``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from moa.agent.base import Agent
from moa.agent.model import ModelAgent
from moa.agent.results import AgentRun
from moa.errors import ErrorCode, MoaError
from moa.logs import get_logger, log_context
from moa.routing.approvals import Approval, subtask_rule
from moa.usage import Usage
from moa.workflow.plan import INPUT, Subtask
from moa.workflow.results import ItemResult, SubtaskResult, SubtaskStatus, revive_run
from moa.workflow.state import RunDeps, RunState, SubtaskJob

log = get_logger(__name__)


def _job(state: RunState, subtask: Subtask, upstream: Mapping[str, SubtaskResult]) -> SubtaskJob:
    blocked = [d for d in subtask.depends_on if upstream[d].status in ("failed", "skipped", "denied")]
    items = (state.get("items") or [state["task"]]) if subtask.items == INPUT else upstream[subtask.items].forwarded
    denied = tuple(d for d in blocked if upstream[d].status == "denied")
    return SubtaskJob(subtask=subtask, items=list(items), blocked_by=blocked, denied=denied)


def _handoff(run: AgentRun) -> str | None:
    """Why an item's answer cannot be trusted (``None``: it can, or it is not over yet)."""
    if run.waiting is not None:
        return None
    if run.output is not None:
        weak = run.attempts[-1].weak if run.attempts else None
        return f"unsure ({weak}): {run.unverified}" if run.unverified else None
    error = run.error
    if error is None:
        return "no step gave an answer"
    if error.code == ErrorCode.BUDGET_EXCEEDED:  # the run stopped; that is not a doubt about the item
        return None
    return f"no step gave an answer: [{error.code}] {error.message}"


def _items(subtask: Subtask, runs: Iterable[tuple[int, str, AgentRun]], deps: RunDeps) -> tuple[list[ItemResult], list[Approval]]:
    """Item results of ``(position, item, run)``, and the approvals the parked ones wait for
    (ids ``<subtask>/<position>/<step or tool:name>``, positions from 1)."""
    to_human = deps.ctx.settings.on_unsure == "needs_human"
    items: list[ItemResult] = []
    approvals: dict[tuple[str | None, str | None, str], Approval] = {}
    for position, item, run in runs:
        result = ItemResult.of(item, run, handoff=_handoff(run) if to_human else None)
        if run.waiting is not None:
            if run.waiting.key not in approvals:  # copies of an item share one approval
                what = f"tool:{run.waiting.tool}" if run.waiting.kind == "tool" else run.waiting.step
                approvals[run.waiting.key] = run.waiting.model_copy(update={"id": f"{subtask.id}/{position}/{what}"})
            result.waiting = approvals[run.waiting.key].id
        items.append(result)
    return items, list(approvals.values())


def _outcome(
    job: SubtaskJob, agent: Agent, items: list[ItemResult], approvals: list[Approval], usage: list[Usage], *, seconds: float, models: list[str],
    warnings: list[str],
) -> SubtaskResult:  # type: ignore[type-arg]
    """A subtask's result from its items: waiting while any item waits, else ok / partial / failed."""
    sid = job.subtask.id
    if approvals:
        return SubtaskResult(
            id=sid, agent=agent.name, status="waiting", items=items, seconds=seconds, waiting=approvals,
            models=sorted({*models, *(u.model for u in usage)}), reason=f"{len(approvals)} item step(s) wait for approval", warnings=warnings,
        )  # fmt: skip
    failed = sum(1 for i in items if i.output is None)
    handed = sum(1 for i in items if i.handoff)
    status: SubtaskStatus = "ok" if failed == 0 else ("failed" if failed == len(items) else "partial")
    first_error = next((i.error for i in items if i.error and not i.handoff), None)
    reason = f"{failed - handed} of {len(items)} items failed: {first_error.message}" if first_error else None
    if handed:
        reason = "; ".join(r for r in (reason, f"{handed} of {len(items)} items need a person") if r)
    return SubtaskResult(
        id=sid,
        agent=agent.name,
        status=status,
        items=items,
        forwarded=[f for i in items if i.output is not None for f in agent.forward(i.item, i.output)],
        reason=reason,
        seconds=seconds,
        models=sorted({*models, *(u.model for u in usage)}),
        handled=dict(Counter(i.answered_by for i in items if i.answered_by and not i.deduplicated)),
        warnings=warnings,
    )


def _agent_for(subtask: Subtask, deps: RunDeps) -> Agent:  # type: ignore[type-arg]
    """The subtask's agent, with the subtask's own cascade and threshold when it sets them."""
    agent = deps.agents[subtask.agent]
    if (subtask.cascade is not None or subtask.threshold is not None) and isinstance(agent, ModelAgent):
        return agent.with_policy(threshold=subtask.threshold, cascade=subtask.cascade)
    return agent


def _learned_warnings(agent: Agent, inputs: list[Any], deps: RunDeps) -> list[str]:  # type: ignore[type-arg]
    """What was learned for the subtask's agent but does not fit its task (every item shares the
    subtask's options, so its first item stands for all)."""
    if not isinstance(agent, ModelAgent) or not inputs:
        return []
    try:
        warnings = agent.learned_warnings(deps.ctx, inputs[0])
    except MoaError as exc:  # a note for the user: never a reason to fail the subtask
        log.warning("learned_files_unreadable", agent=agent.name, code=str(exc.code), error=exc.message)
        return []
    for warning in warnings:
        log.info("learned_not_used", agent=agent.name, reason=warning)
    return warnings


def _subtask_approval(job: SubtaskJob, agent: Agent, deps: RunDeps) -> Approval | None:  # type: ignore[type-arg]
    subtask = job.subtask
    rule = subtask_rule(deps.ctx.settings, subtask.id, agent.name, subtask.approve, agent.approve)
    if rule is None:
        return None
    what = f"run {agent.name} on {len(job.items)} item(s)" + (f": {subtask.instruction}" if subtask.instruction else "")
    if subtask.routing():
        what += f" (the plan sets {subtask.routing()})"
    return Approval(id=subtask.id, kind="subtask", rule=rule, reason=what, subtask=subtask.id, agent=agent.name)


async def run_subtask(job: SubtaskJob, deps: RunDeps, *, approved: bool = False) -> dict[str, Any]:
    """Run one subtask's agent over its items; return ``{"results": {id: result}, "usage": [...]}``.

    The result is ``waiting`` when the subtask must be approved before it starts (unless
    ``approved``) or when items wait for approval of a step (see :func:`continue_subtask`)."""
    subtask = job.subtask
    agent = _agent_for(subtask, deps)
    started = time.perf_counter()
    if job.blocked_by:
        reason = f"skipped: depends on {', '.join(job.blocked_by)}, which did not succeed"
        if job.denied:
            reason = f"skipped: depends on {', '.join(job.blocked_by)}; a person denied {', '.join(job.denied)}"
        deps.ctx.emit("subtask_done", subtask.id, status="skipped")
        return {"results": {subtask.id: SubtaskResult(id=subtask.id, agent=agent.name, status="skipped", reason=reason)}, "usage": []}
    if not approved and (approval := _subtask_approval(job, agent, deps)) is not None:
        log.info("awaiting_approval", run_id=deps.ctx.run_id, subtask=subtask.id, rule=approval.rule)
        deps.ctx.emit("subtask_done", subtask.id, status="waiting")
        waiting = SubtaskResult(id=subtask.id, agent=agent.name, status="waiting", waiting=[approval], reason=f"waiting for approval ({approval.rule})")
        return {"results": {subtask.id: waiting}, "usage": []}
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(job.items))
    with log_context(run_id=deps.ctx.run_id, subtask=subtask.id):
        if deps.ctx.info_logs:
            log.info("subtask_started", agent=agent.name, items=len(job.items))
        try:
            inputs = [agent.make_input(item, subtask.options) for item in job.items]
        except MoaError as exc:
            result = SubtaskResult(id=subtask.id, agent=agent.name, status="failed", reason=exc.message)
            deps.ctx.emit("subtask_done", subtask.id, status="failed")
            return {"results": {subtask.id: result}, "usage": []}
        warnings = _learned_warnings(agent, inputs, deps)
        positions = list(range(1, len(inputs) + 1))
        saved = await _saved(agent, subtask.id, positions, job.items, deps)
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id, positions=positions, saved=saved)
    items, approvals = _items(subtask, [(p, item, r) for p, (item, r) in enumerate(zip(job.items, runs, strict=True), start=1)], deps)
    usage = [u for r in runs for u in r.usage]
    result = _outcome(job, agent, items, approvals, usage, seconds=round(time.perf_counter() - started, 3), models=[], warnings=warnings)
    return _done(result, usage, deps)


async def _saved(agent: Agent, subtask: str, positions: list[int], items: list[str], deps: RunDeps) -> list[AgentRun | None] | None:  # type: ignore[type-arg]
    """The items of ``subtask`` an earlier attempt of the run finished and saved (``None`` where
    not; ``None`` altogether when the run keeps no ledger), their outputs of the agent's type again."""
    ledger = deps.ctx.ledger
    if ledger is None:
        return None
    saved: list[AgentRun | None] = []
    for run in await ledger.saved_items(subtask, list(zip(positions, items, strict=True))):
        try:
            saved.append(revive_run(run, agent.output_type) if run is not None else None)
        except ValidationError as exc:  # the agent's output type changed since: run the item again
            log.warning("saved_item_not_revived", subtask=subtask, agent=agent.name, error=str(exc)[:200])
            saved.append(None)
    reused = sum(run is not None for run in saved)
    if reused:
        log.info("items_reused", run_id=deps.ctx.run_id, subtask=subtask, items=reused, of=len(items))
        deps.ctx.emit("items_reused", subtask, items=reused, of=len(items))
    return saved


def _done(result: SubtaskResult, usage: list[Usage], deps: RunDeps) -> dict[str, Any]:
    deps.ctx.emit("subtask_done", result.id, status=result.status, seconds=result.seconds)
    if deps.ctx.info_logs:
        log.info("subtask_done", run_id=deps.ctx.run_id, subtask=result.id, status=result.status, items=len(result.items))
    return {"results": {result.id: result}, "usage": usage}


async def continue_subtask(job: SubtaskJob, prior: SubtaskResult, deps: RunDeps) -> dict[str, Any]:
    """Go on with a ``waiting`` subtask now that its approvals are answered (``deps.ctx.decisions``).

    Approved start: it runs. Denied start: status ``denied`` (its dependents are skipped).
    Parked items go on from the step that waited; a denied escalation keeps the weaker answer
    (``unverified = "denied: <step> escalation"``), a denied tool call is refused."""
    subtask = job.subtask
    agent = _agent_for(subtask, deps)
    start = next((a for a in prior.waiting if a.kind == "subtask"), None)
    if start is not None:
        if deps.ctx.decisions.get(start):
            return await run_subtask(job, deps, approved=True)
        reason = f"denied: a person refused to start {subtask.id} ({start.rule})"
        log.info("subtask_denied", run_id=deps.ctx.run_id, subtask=subtask.id, rule=start.rule)
        return _done(SubtaskResult(id=subtask.id, agent=agent.name, status="denied", reason=reason), [], deps)
    started = time.perf_counter()
    parked = [position for position, item in enumerate(prior.items) if item.waiting]
    deps.ctx.emit("subtask_started", subtask.id, agent=agent.name, items=len(parked))
    with log_context(run_id=deps.ctx.run_id, subtask=subtask.id):
        inputs = [agent.make_input(prior.items[p].item, subtask.options) for p in parked]
        priors: list[AgentRun | None] = [prior.items[p].run for p in parked]
        saved = await _saved(agent, subtask.id, [p + 1 for p in parked], [prior.items[p].item for p in parked], deps)
        runs = await agent.run_batch(deps.ctx, inputs, subtask=subtask.id, priors=priors, positions=[p + 1 for p in parked], saved=saved)
    fresh, approvals = _items(subtask, [(p + 1, prior.items[p].item, r) for p, r in zip(parked, runs, strict=True)], deps)
    items = list(prior.items)  # items that had finished stay as they were saved
    for p, went_on in zip(parked, fresh, strict=True):
        items[p] = went_on
    usage = [u for r in runs for u in r.usage]
    seconds = round(prior.seconds + time.perf_counter() - started, 3)
    result = _outcome(job, agent, items, approvals, usage, seconds=seconds, models=prior.models, warnings=prior.warnings)
    return _done(result, usage, deps)
