"""Tools: typed functions a model can call — other agents, memory search, the user's functions.

A :class:`Tool` has a name, a description and a pydantic model of its arguments. An agent is
given tools explicitly; those names are its **allowlist**. :func:`run_tool_loop` offers the
allowed tools to a chat model through the backend's tool-calling API, executes the calls it asks
for, and feeds the results back. A call to an unknown or disallowed tool is *refused*: it is not
executed, the model is told why, and the refusal is kept in the run record. A tool marked
``side_effects=True`` or ``approve=True`` may need a person's approval first (:mod:`moa.routing.approvals`);
a denied call is refused the same way. In a durable run a side-effect call is made at most once,
even across a crash and a resume (:mod:`moa.agent.ledger`).

Any agent can also be exposed as a langchain-core tool (:func:`as_langchain_tool`), with typed
arguments from its input model, for use in other LangChain/LangGraph code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ValidationError, create_model
from pydantic_core import to_jsonable_python

from moa.agent.calls import CallScope, tool_approval
from moa.agent.context import RunContext
from moa.agent.ledger import CallKey, RecordedCall
from moa.agent.results import ToolCallRecord
from moa.errors import ErrorCode, MoaError, UserError
from moa.logs import get_logger
from moa.models.base import GenerateRequest, Generation, Message, ToolCall, ToolSpec
from moa.routing.approvals import AwaitingApproval
from moa.routing.policy import Step

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

    from moa.agent.base import Agent

log = get_logger(__name__)

ToolFn = Callable[[RunContext, BaseModel], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A function a model may call."""

    name: str
    description: str
    args_type: type[BaseModel]
    fn: ToolFn
    side_effects: bool = False
    """It changes something outside the run (writes, sends, deletes): the ``tools:side_effects``
    approval rule makes its calls wait for a person. In a durable run each call is recorded before
    it runs, and a resumed run never makes it again (:mod:`moa.agent.ledger`)."""
    approve: bool = False
    """Every call waits for a person's approval."""

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.args_type.model_json_schema())

    async def call(self, ctx: RunContext, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments``, run the tool, return its result as JSON-ready data."""
        args = self.args_type.model_validate(arguments)
        return to_jsonable_python(await self.fn(ctx, args), fallback=str)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    approve: bool = False,
) -> Any:
    """Make a tool of a plain (sync or async) function; its typed parameters become the arguments.

    ::

        @moa.tool
        def order_status(order_id: str) -> str:
            "Look up the shipping status of an order."
            ...

        @moa.tool(side_effects=True)   # waits for approval under the rule tools:side_effects
        def refund(order_id: str, amount: float) -> str: ...
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        params = inspect.signature(f).parameters
        hints = get_type_hints(f)  # resolves string annotations (`from __future__ import annotations`)
        fields: dict[str, Any] = {}
        for p in params.values():
            if p.name not in hints:
                raise UserError(ErrorCode.BAD_CONFIG, f"tool {f.__name__!r}: parameter {p.name!r} needs a type annotation")
            fields[p.name] = (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
        args_type = create_model(f"{f.__name__}_args", **fields)

        async def call(ctx: RunContext, args: BaseModel) -> Any:
            out = f(**args.model_dump())
            return await out if inspect.isawaitable(out) else out

        return Tool(name or f.__name__, description or inspect.getdoc(f) or f.__name__, args_type, call, side_effects, approve)

    return wrap(fn) if fn is not None else wrap


def agent_tool(agent: Agent) -> Tool:  # type: ignore[type-arg]
    """Expose an agent as a tool (arguments: the agent's input model).

    The agent runs inside the calling step's scope: its model calls go through the same door with
    the outer run's budget and approvals, and its usage and tool calls count as the calling step's.
    When one of its steps or tools waits for a person, the calling item waits too."""

    async def call(ctx: RunContext, args: BaseModel) -> Any:
        run = await agent.run(ctx, args)
        if run.waiting is not None:
            raise AwaitingApproval(run.waiting)
        if run.error:
            return {"error": run.error.message, "code": str(run.error.code)}
        return run.output

    return Tool(agent.name, agent.description, agent.input_type, call)


class MemorySearch(BaseModel):
    """Search the shared memory."""

    query: str
    """What to look for."""
    k: int = 3
    """How many passages."""


async def _memory_search(ctx: RunContext, args: BaseModel) -> Any:
    search = MemorySearch.model_validate(args.model_dump())
    return await ctx.memory().aquery(search.query, k=search.k)


memory_search = Tool("memory_search", "Search the shared memory for passages relevant to a query.", MemorySearch, _memory_search)


def as_langchain_tool(agent: Agent, ctx: RunContext) -> StructuredTool:  # type: ignore[type-arg]
    """The agent as a langchain-core ``StructuredTool`` (typed args from its input model)."""
    from langchain_core.tools import StructuredTool

    t = agent_tool(agent)

    async def coroutine(**kwargs: Any) -> Any:
        return await t.call(ctx, kwargs)

    return StructuredTool.from_function(coroutine=coroutine, name=agent.name, description=agent.description, args_schema=agent.input_type)


async def run_tool_loop(
    ctx: RunContext,
    step: Step | str,
    messages: list[Message],
    tools: Sequence[Tool],
    *,
    max_rounds: int = 3,
    max_tokens: int = 128,
) -> list[Message]:
    """Let the model of ``step`` call ``tools`` until it stops asking (or ``max_rounds``).

    Returns the extended conversation; every call (executed or refused) is recorded in the open
    :class:`~moa.agent.calls.CallScope`'s ``tool_calls``, and the model calls' usage in its ``usage``.
    A tool call that an approval rule gates waits for a person (the calls of a round are all
    decided before any of them runs, so a call waiting for approval never leaves its siblings half
    done); a denied or unknown call is refused and the model is told why.
    """
    allowed = {t.name: t for t in tools}
    specs = [t.spec() for t in tools]
    with ctx.scope() as scope:
        for _ in range(max_rounds):
            gen: Generation = await ctx.call(step, GenerateRequest(messages=messages, tools=specs, max_tokens=max_tokens), purpose="tool")
            if not gen.tool_calls:
                break
            messages = [*messages, Message(role="assistant", content=gen.text, tool_calls=tuple(gen.tool_calls))]
            denied = {i for i, c in enumerate(gen.tool_calls) if c.name in allowed and not _decide(ctx, allowed[c.name], c)}
            for position, call in enumerate(gen.tool_calls):
                chosen = allowed.get(call.name)
                if position in denied:
                    error = UserError(ErrorCode.TOOL_REFUSED, f"a person denied the call of tool {call.name!r}; not executed")
                    scope.tool_calls.append(ToolCallRecord(name=call.name, arguments=call.arguments, allowed=False, error=error.info()))
                    content = json.dumps({"error": error.message})
                elif chosen is None:
                    error = UserError(
                        ErrorCode.TOOL_REFUSED,
                        f"tool {call.name!r} is not on the allowlist of agent {scope.agent!r} (allowed: {', '.join(sorted(allowed)) or 'none'}); not executed",
                    )
                    scope.tool_calls.append(ToolCallRecord(name=call.name, arguments=call.arguments, allowed=False, error=error.info()))
                    content = json.dumps({"error": error.message})
                else:
                    record = await _execute(ctx, scope, chosen, call)
                    content = json.dumps({"error": record.error.message} if record.error is not None else record.result)
                messages = [*messages, Message(role="tool", content=content, tool_call_id=call.id)]
    return messages


async def _execute(ctx: RunContext, scope: CallScope, tool: Tool, call: ToolCall) -> ToolCallRecord:
    """Run an allowed call and record it in ``scope`` (a nested agent's own tool calls are listed
    after it). In a durable run, a call of a side-effect tool goes through the run's ledger
    (:mod:`moa.agent.ledger`): recorded before it runs, its recorded result given back when an
    earlier attempt made it, refused when that attempt stopped while it ran."""
    key: CallKey | None = None
    if tool.side_effects and ctx.ledger is not None:
        key = ctx.ledger.key(scope.subtask, scope.position, tool.name, call.arguments)
        earlier = await ctx.ledger.begin_call(key)
        if earlier is not None:
            record = _recorded(tool, call, earlier)
            log.info("tool_call_recorded" if earlier.done else "tool_call_not_repeated", tool=tool.name, subtask=key.subtask, position=key.position)
            scope.tool_calls.append(record)
            return record
    try:
        with ctx.scope() as inner:
            value = await tool.call(ctx, call.arguments)
        record = ToolCallRecord(name=call.name, arguments=call.arguments, allowed=True, result=value)
        scope.tool_calls.insert(len(scope.tool_calls) - len(inner.tool_calls), record)
        if key is not None and ctx.ledger is not None:
            await ctx.ledger.end_call(key, result=value)
    except (ValidationError, MoaError) as exc:
        failure = exc if isinstance(exc, MoaError) else UserError(ErrorCode.INVALID_INPUT, str(exc))
        record = ToolCallRecord(name=call.name, arguments=call.arguments, allowed=True, error=failure.info())
        scope.tool_calls.append(record)
        if key is not None and ctx.ledger is not None:
            await ctx.ledger.end_call(key, error=failure)
    return record


def _recorded(tool: Tool, call: ToolCall, earlier: RecordedCall) -> ToolCallRecord:
    """What a call an earlier attempt of the run made gives now: its recorded result or error, or
    a refusal when that attempt stopped while the tool ran (it may have had its effect)."""
    if earlier.done:
        return ToolCallRecord(name=call.name, arguments=call.arguments, allowed=True, result=earlier.result, error=earlier.error)
    error = UserError(
        ErrorCode.TOOL_MAY_HAVE_RUN,
        f"tool {tool.name!r} was called with these arguments before the run crashed and may already have run; not repeated",
    )
    return ToolCallRecord(name=call.name, arguments=call.arguments, allowed=False, error=error.info())


def _decide(ctx: RunContext, tool: Tool, call: ToolCall) -> bool:
    """``True``: run the call; ``False``: a person denied it. Raises
    :class:`~moa.routing.approvals.AwaitingApproval` while the decision is not known."""
    approval = tool_approval(ctx, tool.name, call.arguments, approve_flag=tool.approve, side_effects=tool.side_effects)
    if approval is None:
        return True
    decided = ctx.decisions.get(approval)
    if decided is None:
        raise AwaitingApproval(approval)
    return decided
