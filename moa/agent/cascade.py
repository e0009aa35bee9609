"""Running one item through an agent's cascade (the policy is in :mod:`moa.routing.policy`).

Each step is tried in order until an answer is strong enough: its confidence reaches the step's
threshold (the agent's, or the step's own when thresholds were chosen from the user's data for this
task and cascade, :meth:`moa.agent.model.ModelAgent.chosen_thresholds`). The answer of the highest step that
produced one is kept; a weak answer that could not be checked by a stronger step is kept and
marked *unverified* with the reason (``denied: llm escalation`` when a person refused the step).
Escalated items that a higher step answered confidently go to the agent's example store
(:mod:`moa.learning.store`, unless ``store_examples`` is off), from which specialists are retrained
and few-shot prompts are drawn.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from moa.agent.results import AgentRun, Attempt, Escalation, WeakReason
from moa.errors import ApprovalDenied, ErrorCode, InvalidOutput, MoaError, ModelFailed, ModelUnavailable, RunError
from moa.logs import get_logger
from moa.routing.approvals import AwaitingApproval
from moa.routing.policy import SPECIALIST, Step, route_up_front

if TYPE_CHECKING:
    from pydantic import BaseModel

    from moa.agent.context import RunContext
    from moa.agent.model import ModelAgent

log = get_logger(__name__)

_ESCALATING = (InvalidOutput, ModelUnavailable, ModelFailed)


def weakness(attempt: Attempt, threshold: float | None) -> WeakReason | None:
    """Why an attempt's answer should escalate (``None``: it is good enough)."""
    if attempt.error is not None:
        family = type(attempt.error.error())
        if attempt.step == SPECIALIST and not issubclass(family, _ESCALATING):
            return "model_error"  # a specialist that cannot answer (e.g. its embedder is unavailable) passes the item on
        if not issubclass(family, _ESCALATING):
            return None
        return "invalid_output" if family is InvalidOutput else "model_error"
    if threshold is not None and attempt.confidence is not None and attempt.confidence < threshold:
        return "low_confidence"
    return None


def cascade_steps(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel) -> list[Step]:
    """The steps ``data`` may climb in ``ctx``'s run: the agent's cascade without a specialist step
    when none is trained for the task (only the first step when escalation is off)."""
    policy = agent.policy(ctx)
    if agent.tier == "llm":  # an agent that needs the large model starts there
        return [Step("llm", ctx.settings.llm)]
    steps = [s for s in policy.steps if s.name != SPECIALIST or agent.specialist_for(ctx, data) is not None]
    if not steps:
        steps = [s for s in policy.steps if s.name == SPECIALIST][:1]  # a specialist-only cascade with none trained: say so
    return steps if policy.escalate else steps[:1]


def _reason(step: Step, attempts: list[Attempt], routed: tuple[str, str] | None, own: str = "") -> str:
    """What a call on ``step`` would do for this item, in words (for the person who approves it),
    with the cascade and threshold the agent's copy has of its own (``own``, e.g. set by the plan)."""
    policy = f" (policy: {own})" if own else ""
    if attempts:
        last = attempts[-1]
        said = f"{last.error.code}" if last.error else f"confidence {last.confidence}"
        return f"escalate to {step.name}: the {last.step} answer is weak ({last.weak}, {said}){policy}"
    return f"run this item on {step.name}" + (f" ({routed[1]})" if routed else "") + policy


async def run_cascade(
    agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, subtask: str | None, prior: AgentRun | None = None
) -> AgentRun:
    """Run ``data`` through the agent's cascade and return the kept answer with every attempt.

    Every step's calls go through the run's door inside this item's scope (subtask, agent, item).
    A step that needs a person's approval and has no answer yet *parks* the item: the returned run
    carries ``waiting`` and everything so far. ``prior`` is such a parked run, answered since; the
    cascade goes on from the step that waited."""
    policy = agent.policy(ctx)
    full = cascade_steps(agent, ctx, data)
    if (chosen := agent.chosen_thresholds(ctx, data, full)) is not None:  # chosen from the user's data
        policy = dataclasses.replace(policy, step_thresholds=chosen.thresholds)
    text = str(getattr(data, agent.text_field, ""))
    routed = route_up_front(ctx.settings, text) if prior is None or prior.routed is not None else None
    steps = full
    if routed is not None and any(s.name == routed[0] for s in full[1:]):
        steps = full[[s.name for s in full].index(routed[0]) :]
        log.info("routed", agent=agent.name, subtask=subtask, to=routed[0], reason=routed[1])
    else:
        routed = None
    attempts: list[Attempt] = list(prior.attempts) if prior else []
    escalations: list[Escalation] = list(prior.escalations) if prior else []
    refused: str | None = None
    denied: ApprovalDenied | None = None
    weak: WeakReason | None = attempts[-1].weak if attempts else None
    with ctx.scope(subtask=subtask, agent=agent.name, item=text) as scope:
        if prior is not None:  # the tool calls made before the item was parked (their usage is counted already)
            scope.tool_calls += prior.tool_calls

        def done(**fields: Any) -> AgentRun:
            return AgentRun(usage=scope.usage, tool_calls=scope.tool_calls, attempts=attempts, escalations=escalations, routed=routed and routed[1], **fields)

        index = len(attempts)
        while index < len(steps):
            step = steps[index]
            if index > 0 and (why := ctx.budget.refuses(step.name)) is not None:
                refused = f"budget: {why}"
                break
            scope.reason = _reason(step, attempts, routed, agent.own_routing())
            try:
                attempt = await agent.attempt(ctx, step, data)
            except AwaitingApproval as wait:  # the step (or a tool it called) waits: the step runs again once answered
                log.info("awaiting_approval", agent=agent.name, subtask=subtask, step=step.name, rule=wait.approval.rule)
                best = next((a for a in reversed(attempts) if a.output is not None), None)
                return done(output=best.output if best else None, waiting=wait.approval)
            except ApprovalDenied as exc:
                if index == 0 and routed is not None:  # a person refused the shortcut: take the usual way up
                    steps, routed = full, None
                    continue
                refused, denied = f"denied: {step.name} escalation", exc
                break
            if index > 0:
                escalations.append(Escalation(from_step=steps[index - 1].name, to_step=step.name, reason=weak or "low_confidence"))
                log.info("escalated", agent=agent.name, subtask=subtask, to=step.name, reason=weak)
                ctx.emit("escalated", subtask, agent=agent.name, from_step=steps[index - 1].name, to_step=step.name, reason=weak or "low_confidence")
            attempt.weak = weak = weakness(attempt, policy.threshold_of(step.name))
            attempts.append(attempt)
            if weak is None:
                break
            index += 1
        kept_index = next((i for i in range(len(attempts) - 1, -1, -1) if attempts[i].output is not None), None)
        if kept_index is None:
            last = next((a.error for a in reversed(attempts) if a.error), None)
            error = last or (denied.info() if denied else RunError(ErrorCode.SUBTASK_FAILED, "no step ran").info())
            return done(error=error)
        kept = attempts[kept_index]
        unverified = None
        if kept.weak is not None:
            if refused is None and kept_index < len(attempts) - 1:
                failed_step = attempts[-1]
                failure = failed_step.error
                refused = f"{failed_step.step} failed: {failure and failure.code} ({(failure.message if failure else '')[:160]})"
            unverified = refused or "no higher step"
        elif kept_index > 0:
            await _remember(agent, ctx, data, kept)
        return done(output=kept.output, answered_by=kept.step, unverified=unverified)


async def _remember(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, kept: Attempt) -> None:
    """Store an escalated item a higher step answered confidently (classification agents), with
    its provenance (this run, the model, the time), unless ``store_examples`` is off."""
    if not ctx.settings.store_examples:
        return
    label = agent.label_of(data, kept.output) if kept.output is not None else None
    key = agent.specialist_key(data)
    if label is None or key is None:
        return
    try:
        await ctx.examples().add(agent.name, key, str(getattr(data, agent.text_field)), label, kept.model, run_id=ctx.run_id)
    except MoaError as exc:  # the store is a bonus: never fail an item because of it
        log.warning("example_not_stored", agent=agent.name, code=str(exc.code), error=exc.message)
