"""The one door for model calls, and the scopes that collect what the calls cost.

Every model call of a run goes through :meth:`moa.agent.context.RunContext.call` — structured
generation, the tool loop, every agent (also one called as another agent's tool), the planner,
the synthesizer and the built-in graphs. In this order, the door

1. asks the approval rules (:mod:`moa.routing.approvals`): a call on a gated step goes on only
   once a person approved it. In a graph node (``ask_as`` given) the run pauses right there; inside
   a subtask's item the door raises :class:`~moa.routing.approvals.AwaitingApproval` and the cascade
   parks the item. A denied call raises :class:`~moa.errors.ApprovalDenied`;
2. holds one of the step's concurrency slots, reserves an estimate of the call in the run's
   budget (:meth:`~moa.routing.budget.Budget.reserve`: waits while it does not fit and other calls
   are in flight; :class:`~moa.errors.BudgetExceeded` once the budget is used up), and calls the
   backend (through the call cache);
3. prices the call (:class:`~moa.usage.Usage`), settles its reservation with it in the budget,
   adds it to the open :class:`CallScope`, emits a ``model_call`` event and logs it at debug level.

A :class:`CallScope` says on whose behalf calls are made (subtask, agent, item) and collects their
usage and tool calls; scopes nest through a context variable, so an agent called as a tool inside
another agent's step adds its calls to that step, and inherits its subtask and approvals.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moa.errors import ApprovalDenied, ErrorCode
from moa.logs import get_logger
from moa.routing.approvals import Approval, AwaitingApproval, ask, step_rule, tool_rule
from moa.usage import Usage

if TYPE_CHECKING:
    from moa.agent.context import RunContext
    from moa.agent.results import ToolCallRecord
    from moa.models.base import GenerateRequest, Generation, ModelBackend
    from moa.routing.policy import Step

log = get_logger(__name__)

Purpose = str
"""What a call is for, in its usage record: moa's own are ``agent``, ``repair``, ``calibrate``,
``extract``, ``plan``, ``synthesize``, ``tool``, ``answer``, ``propose``, ``aggregate``; a custom
node may name its own."""


@dataclass
class CallScope:
    """On whose behalf model calls are made, and what they cost (see the module docstring)."""

    subtask: str | None = None
    agent: str | None = None
    item: str | None = None
    """The item's text (approvals of items are keyed by it)."""
    position: int | None = None
    """The item's position in its subtask, from 1 (side-effect tool calls are recorded under it)."""
    reason: str | None = None
    """Why a gated call in this scope would run, in words (shown to the approver)."""
    usage: list[Usage] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    parent: CallScope | None = None


_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("moa_call_scope", default=None)


def current_scope() -> CallScope | None:
    """The innermost open scope of this task (``None`` outside any)."""
    return _SCOPE.get()


@contextlib.contextmanager
def open_scope(
    *, subtask: str | None = None, agent: str | None = None, item: str | None = None, position: int | None = None, reason: str | None = None
) -> Iterator[CallScope]:
    """Open a scope inside the current one; on exit its usage and tool calls join the parent's.
    Unset fields come from the parent."""
    parent = _SCOPE.get()
    scope = CallScope(
        subtask=subtask if subtask is not None or parent is None else parent.subtask,
        agent=agent if agent is not None or parent is None else parent.agent,
        item=item if item is not None or parent is None else parent.item,
        position=position if position is not None or parent is None else parent.position,
        reason=reason if reason is not None or parent is None else parent.reason,
        parent=parent,
    )
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        if parent is not None:
            parent.usage += scope.usage
            parent.tool_calls += scope.tool_calls


def price(backend: ModelBackend, gen: Generation, *, tier: str | None, agent: str | None, subtask: str | None, purpose: str) -> Usage:
    """The accounting record of one call, priced with the backend's $/1k tokens."""
    prompt_price, completion_price = backend.price_per_1k
    return Usage(
        model=backend.spec,
        tier=tier,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s,
        cost=0.0 if gen.cached else (gen.prompt_tokens * prompt_price + gen.completion_tokens * completion_price) / 1000,
        cached=gen.cached,
        retries=gen.retries,
        agent=agent,
        subtask=subtask,
        purpose=purpose,
    )


def approve(ctx: RunContext, approval: Approval, *, ask_as: str | None) -> None:
    """Return when ``approval`` is granted; raise :class:`ApprovalDenied` when a person denied it.

    Not answered yet: with ``ask_as`` (a graph node's call) the run pauses here with a LangGraph
    interrupt and goes on with the answer on resume; else :class:`AwaitingApproval` (the cascade
    parks the item, the subtask waits)."""
    decided = ctx.decisions.get(approval)
    if decided is None and ask_as is not None:
        decided = ask([approval])[approval.id]
        ctx.decisions.record(approval, decided)
    if decided is None:
        raise AwaitingApproval(approval)
    if not decided:
        where = f" in {approval.subtask}" if approval.subtask and approval.subtask != approval.id else ""
        raise ApprovalDenied(ErrorCode.APPROVAL_DENIED, f"a person denied this step{where}: {approval.reason} ({approval.rule})")


def step_approval(ctx: RunContext, step: Step, *, purpose: str, ask_as: str | None, reason: str | None) -> Approval | None:
    """The approval a call on ``step`` needs here (``None``: no rule asks for one)."""
    rule = step_rule(ctx.settings, step)
    if rule is None:
        return None
    scope = _SCOPE.get() or CallScope()
    why = reason or scope.reason or f"{purpose} on the {step.name} step ({ctx.backend_for(step).spec})"
    if ask_as is None and scope.item is None:  # not an agent's item (nothing to park): a graph node pauses where it is
        ask_as = scope.subtask or purpose
    if ask_as is not None:
        kind = ask_as if ask_as in ("plan", "synthesize") else "node"
        return Approval(id=ask_as, kind=kind, rule=rule, reason=why, subtask=scope.subtask, agent=scope.agent, step=step.name)  # type: ignore[arg-type]
    return Approval(id="", kind="step", rule=rule, reason=why, subtask=scope.subtask, agent=scope.agent, item=scope.item, step=step.name)


def tool_approval(ctx: RunContext, name: str, arguments: dict[str, object], *, approve_flag: bool, side_effects: bool) -> Approval | None:
    """The approval a tool call needs here (``None``: it runs without asking)."""
    rule = tool_rule(ctx.settings, name, approve_flag, side_effects)
    if rule is None:
        return None
    scope = _SCOPE.get() or CallScope()
    return Approval(
        id="", kind="tool", rule=rule, subtask=scope.subtask, agent=scope.agent, item=scope.item, tool=name, arguments=dict(arguments),
        reason=f"the model asks to call {name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})",
    )  # fmt: skip


async def call(
    ctx: RunContext, step: Step, request: GenerateRequest, *, purpose: str, ask_as: str | None = None, reason: str | None = None
) -> Generation:
    """The door (see the module docstring)."""
    if ctx.settings.approve:  # no rules: nothing to ask (the common case, kept cheap)
        approval = step_approval(ctx, step, purpose=purpose, ask_as=ask_as, reason=reason)
        if approval is not None:
            approve(ctx, approval, ask_as=approval.id or None)
    backend = ctx.backend_for(step)
    scope = _SCOPE.get()
    semaphore = ctx.slots(step.name)
    if semaphore is not None:
        await semaphore.acquire()
    try:
        # once the call can go out: calls queued for a slot see what those before them spent and hold
        reservation = await ctx.budget.reserve(step.name, request, backend.price_per_1k)
        spent: tuple[Usage, ...] = ()
        try:
            gen = await backend.agenerate(request)
            usage = price(
                backend, gen, tier=step.name, agent=scope.agent if scope is not None else None,
                subtask=scope.subtask if scope is not None else None, purpose=purpose,
            )  # fmt: skip
            spent = (usage,)
        finally:
            ctx.budget.settle(reservation, spent)
    finally:
        if semaphore is not None:
            semaphore.release()
    if scope is not None:
        scope.usage.append(usage)
    if ctx.listening:
        ctx.emit("model_call", usage.subtask, step=step.name, model=usage.model, purpose=purpose, tokens=usage.tokens, cost=usage.cost, cached=usage.cached)
    if ctx.debug_logs:
        log.debug("model_call", step=step.name, model=usage.model, purpose=purpose, agent=usage.agent, tokens=usage.tokens, latency_s=usage.latency_s)
    return gen

