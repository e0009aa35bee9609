"""Running one item through an agent's cascade (the policy is in :mod:`moa.escalation`).

Each step is tried in order until an answer is strong enough. The answer of the highest step that
produced one is kept; a weak answer that could not be checked by a stronger step is kept and
marked *unverified* with the reason (``denied: llm escalation`` when a person refused the step). Escalated items that a higher step answered confidently go
to the agent's example store (:mod:`moa.learning.store`), from which specialists are retrained and
few-shot prompts are drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from moa.agent.results import Attempt, Escalation, WeakReason
from moa.errors import ErrorCode, MoaError, UserError
from moa.routing.approvals import Approval, AwaitingApproval, step_rule
from moa.routing.policy import SPECIALIST, Step, route_up_front

if TYPE_CHECKING:
    from pydantic import BaseModel

    from moa.agent.context import RunContext
    from moa.agent.model import ModelAgent
    from moa.agent.results import AgentRun, ToolCallRecord
    from moa.usage import Usage

log = structlog.get_logger(__name__)

_ESCALATING_CODES = {ErrorCode.INVALID_OUTPUT, ErrorCode.MODEL_UNREACHABLE, ErrorCode.MODEL_TIMEOUT, ErrorCode.MODEL_ERROR}
_DOWN_CODES = {ErrorCode.MODEL_UNREACHABLE, ErrorCode.MODEL_TIMEOUT}


def weakness(run: AgentRun, confidence: float | None, threshold: float | None) -> WeakReason | None:
    """Why an attempt's answer should escalate (``None``: it is good enough)."""
    if run.error is not None:
        code = run.error.get("code")
        if code not in _ESCALATING_CODES:
            return None
        return "invalid_output" if code == ErrorCode.INVALID_OUTPUT else "model_error"
    if threshold is not None and confidence is not None and confidence < threshold:
        return "low_confidence"
    return None


def _steps(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel) -> list[Step]:
    policy = agent.policy(ctx)
    if agent.tier == "llm":  # an agent that needs the large model starts there
        return [Step("llm", ctx.settings.llm)]
    steps = [s for s in policy.steps if s.name != SPECIALIST or agent.specialist_for(ctx, data) is not None]
    if not steps:
        steps = [s for s in policy.steps if s.name == SPECIALIST][:1]  # a specialist-only cascade with none trained: say so
    return steps if policy.escalate else steps[:1]


async def run_cascade(
    agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, subtask: str | None, prior: AgentRun | None = None
) -> AgentRun:
    """Run ``data`` through the agent's cascade and return the kept answer with every attempt.

    A step that needs a person's approval (:mod:`moa.approvals`) and has no answer yet *parks* the
    item: the returned run carries ``waiting`` and everything so far. ``prior`` is such a parked run,
    answered since; the cascade goes on from the step that waited."""
    from moa.agent.results import AgentRun

    policy = agent.policy(ctx)
    full = _steps(agent, ctx, data)
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
    usage: list[Usage] = []
    tool_calls: list[ToolCallRecord] = []
    refused: str | None = None
    denied: str | None = None
    weak: WeakReason | None = attempts[-1].weak if attempts else None

    def parked(approval: Approval) -> AgentRun:
        best = next((a for a in reversed(attempts) if a.output is not None), None)
        return AgentRun(
            output=best.output if best else None, usage=usage, tool_calls=tool_calls, attempts=attempts, escalations=escalations,
            routed=routed and routed[1], waiting=approval,
        )  # fmt: skip

    index = len(attempts)
    while index < len(steps):
        step = steps[index]
        if index > 0 and (why := ctx.budget.refuses(step.name)) is not None:
            refused = f"budget: {why}"
            break
        approval = _gate(ctx, agent, step, text, subtask, attempts, routed)
        decided = True if approval is None else ctx.decisions.get(approval)
        if decided is None and approval is not None:
            log.info("awaiting_approval", agent=agent.name, subtask=subtask, step=step.name, rule=approval.rule)
            return parked(approval)
        if not decided:
            if index == 0 and routed is not None:  # a person refused the shortcut: take the usual way up
                steps, routed = full, None
                continue
            refused = f"denied: {step.name} escalation"
            denied = f"a person denied running this item on the {step.name} step ({approval and approval.rule})"
            break
        if index > 0:
            escalations.append(Escalation(from_step=steps[index - 1].name, to_step=step.name, reason=weak or "low_confidence"))
            log.info("escalated", agent=agent.name, subtask=subtask, to=step.name, reason=weak)
        try:
            run, attempt = await agent.attempt(ctx, step, data, subtask)
        except AwaitingApproval as wait:  # a tool call of this step needs a decision: the step runs again once answered
            ctx.budget.add(wait.usage)
            usage += wait.usage
            return parked(wait.approval)
        ctx.budget.add(run.usage)
        usage += run.usage
        tool_calls += run.tool_calls
        attempt.weak = weak = weakness(run, attempt.confidence, policy.threshold)
        attempts.append(attempt)
        if weak is None:
            break
        index += 1
    kept_index = next((i for i in range(len(attempts) - 1, -1, -1) if attempts[i].output is not None), None)
    if kept_index is None:
        last = next((a.error for a in reversed(attempts) if a.error), None)
        error = last or (
            UserError(ErrorCode.APPROVAL_DENIED, denied).to_dict() if denied else {"code": str(ErrorCode.SUBTASK_FAILED), "message": "no step ran"}
        )
        return AgentRun(error=error, usage=usage, attempts=attempts, escalations=escalations, tool_calls=tool_calls, routed=routed and routed[1])
    kept = attempts[kept_index]
    unverified = None
    if kept.weak is not None:
        if refused is None and kept_index < len(attempts) - 1:
            failed_step = attempts[-1]
            error = failed_step.error or {}
            refused = f"{failed_step.step} failed: {error.get('code')} ({str(error.get('message', ''))[:160]})"
        unverified = refused or "no higher step"
    elif kept_index > 0:
        await _remember(agent, ctx, data, kept)
    return AgentRun(
        output=kept.output,
        usage=usage,
        tool_calls=tool_calls,
        attempts=attempts,
        escalations=escalations,
        answered_by=kept.step,
        unverified=unverified,
        routed=routed and routed[1],
    )


def _gate(
    ctx: RunContext, agent: ModelAgent[Any, Any, Any], step: Step, text: str, subtask: str | None, attempts: list[Attempt], routed: tuple[str, str] | None
) -> Approval | None:
    """The approval a call on ``step`` needs for this item (``None``: no rule asks for one)."""
    rule = step_rule(ctx.settings, step) if subtask is not None else None
    if rule is None:
        return None
    if attempts:
        last = attempts[-1]
        said = f"{last.error.get('code')}" if last.error else f"confidence {last.confidence}"
        reason = f"escalate to {step.name}: the {last.step} answer is weak ({last.weak}, {said})"
    else:
        reason = f"run this item on {step.name}" + (f" ({routed[1]})" if routed else "")
    return Approval(id="", kind="step", rule=rule, reason=reason, subtask=subtask, agent=agent.name, item=text, step=step.name)


async def _remember(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, kept: Attempt) -> None:
    """Store an escalated item a higher step answered confidently (classification agents)."""
    label = agent.label_of(data, kept.output) if kept.output is not None else None
    key = agent.specialist_key(data)
    if label is None or key is None:
        return
    try:
        await ctx.examples().add(agent.name, key, str(getattr(data, agent.text_field)), label, kept.model)
    except MoaError as exc:  # the store is a bonus: never fail an item because of it
        log.warning("example_not_stored", agent=agent.name, code=str(exc.code), error=exc.message)
