"""Running one item through an agent's cascade (the policy is in :mod:`moa.escalation`).

Each step is tried in order until an answer is strong enough. The answer of the highest step that
produced one is kept; a weak answer that could not be checked by a stronger step is kept and
marked *unverified* with the reason. Escalated items that a higher step answered confidently go
to the agent's example store (:mod:`moa.learned`), from which specialists are retrained and
few-shot prompts are drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from moa.errors import ErrorCode, MoaError
from moa.escalation import SPECIALIST, Attempt, Escalation, Step, WeakReason, route_up_front

if TYPE_CHECKING:
    from pydantic import BaseModel

    from moa.agent import AgentRun, ModelAgent, ToolCallRecord
    from moa.context import RunContext
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


async def run_cascade(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, subtask: str | None) -> AgentRun:
    """Run ``data`` through the agent's cascade and return the kept answer with every attempt."""
    from moa.agent import AgentRun

    policy = agent.policy(ctx)
    steps = _steps(agent, ctx, data)
    routed = route_up_front(ctx.settings, str(getattr(data, agent.text_field, "")))
    if routed is not None and any(s.name == routed[0] for s in steps[1:]):
        steps = steps[[s.name for s in steps].index(routed[0]) :]
        log.info("routed", agent=agent.name, subtask=subtask, to=routed[0], reason=routed[1])
    else:
        routed = None
    attempts: list[Attempt] = []
    escalations: list[Escalation] = []
    usage: list[Usage] = []
    tool_calls: list[ToolCallRecord] = []
    best: tuple[int, AgentRun] | None = None
    last_error: AgentRun | None = None
    refused: str | None = None
    weak: WeakReason | None = None
    for index, step in enumerate(steps):
        if index > 0:
            if (why := ctx.budget.refuses(step.name)) is not None:
                refused = f"budget: {why}"
                break
            escalations.append(Escalation(from_step=steps[index - 1].name, to_step=step.name, reason=weak or "low_confidence"))
            log.info("escalated", agent=agent.name, subtask=subtask, to=step.name, reason=weak)
        run, attempt = await agent.attempt(ctx, step, data, subtask)
        ctx.budget.add(run.usage)
        usage += run.usage
        tool_calls += run.tool_calls
        attempt.weak = weak = weakness(run, attempt.confidence, policy.threshold)
        attempts.append(attempt)
        if run.output is not None:
            best = (index, run)
        else:
            last_error = run
        if weak is None:
            break
    if best is None:
        failed = last_error or AgentRun(error={"code": str(ErrorCode.SUBTASK_FAILED), "message": "no step ran"})
        return failed.model_copy(
            update={"usage": usage, "attempts": attempts, "escalations": escalations, "tool_calls": tool_calls, "routed": routed and routed[1]}
        )
    index, run = best
    kept = attempts[index]
    unverified = None
    if kept.weak is not None:
        if refused is None and index < len(attempts) - 1:
            failed_step = attempts[-1]
            error = failed_step.error or {}
            refused = f"{failed_step.step} failed: {error.get('code')} ({str(error.get('message', ''))[:160]})"
        unverified = refused or "no higher step"
    elif index > 0:
        await _remember(agent, ctx, data, run, kept)
    return AgentRun(
        output=run.output,
        usage=usage,
        tool_calls=tool_calls,
        attempts=attempts,
        escalations=escalations,
        answered_by=kept.step,
        unverified=unverified,
        routed=routed and routed[1],
    )


async def _remember(agent: ModelAgent[Any, Any, Any], ctx: RunContext, data: BaseModel, run: AgentRun, kept: Attempt) -> None:
    """Store an escalated item a higher step answered confidently (classification agents)."""
    label = agent.label_of(data, run.output) if run.output is not None else None
    key = agent.specialist_key(data)
    if label is None or key is None:
        return
    try:
        await ctx.examples().add(agent.name, key, str(getattr(data, agent.text_field)), label, kept.model)
    except MoaError as exc:  # the store is a bonus: never fail an item because of it
        log.warning("example_not_stored", agent=agent.name, code=str(exc.code), error=exc.message)
