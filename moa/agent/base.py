"""The Agent type: a small typed unit of work that the planner can assign a subtask to.

An agent has a name, a description (the planner reads it), example requests (the router
planner matches tasks against them), an input model and an output model. Two kinds:

* :class:`~moa.agent.model.ModelAgent` — prompts a model of its tier (:mod:`moa.agent.model`).
* :class:`FunctionAgent` — runs Python (e.g. retrieval over the shared memory).

Agents work on one input (:meth:`Agent.run`) or a batch (:meth:`Agent.run_batch`): a batch is sent
concurrently; each backend bounds its in-flight requests.
"""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ValidationError

from moa.agent.context import JournalEntry, RunContext
from moa.agent.ledger import worth_saving
from moa.agent.results import AgentRun
from moa.errors import ErrorCode, ErrorInfo, MoaError, ModelUnavailable, RunError, UserError
from moa.logs import get_logger
from moa.routing.approvals import AwaitingApproval
from moa.settings import Tier

log = get_logger(__name__)

InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


class Agent(ABC, Generic[InputT, OutputT]):
    """Base class of all agents. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    """What the agent does, for the planner."""
    examples: ClassVar[tuple[str, ...]] = ()
    """Example requests this agent serves (the router planner matches tasks against them)."""
    input_type: ClassVar[type[BaseModel]]
    output_type: ClassVar[type[BaseModel]]
    tier: ClassVar[Tier] = "slm"
    text_field: ClassVar[str] = "text"
    """The input field an item (one line of input) goes into."""
    plan_options: ClassVar[frozenset[str] | None] = None
    """The options a plan (from a planner, ``--plan`` or a YAML graph) may set; ``None``: every field
    of the input model. Options with side effects beyond the run (e.g. the retrieval agent's ``add``,
    which writes the shared memory) are left out: only code may set them."""
    approve: bool = False
    """A subtask of this agent waits for a person's approval before it starts (:meth:`with_approval`)."""

    @abstractmethod
    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        """Process one input. Must not raise for a model failure: return ``AgentRun(error=...)``."""

    async def proceed(self, ctx: RunContext, data: InputT, prior: AgentRun, *, subtask: str | None = None) -> AgentRun:
        """Go on with an item that was parked for approval (``prior.waiting``) once it is answered.
        The default runs it again; :class:`ModelAgent` continues its cascade where it stopped."""
        return await self.run(ctx, data, subtask=subtask)

    def with_approval(self, approve: bool = True) -> Self:
        """A copy of this agent whose subtasks wait for a person's approval before they start."""
        clone = copy.copy(self)
        clone.approve = approve
        return clone

    def make_input(self, item: str, options: dict[str, Any] | None = None) -> InputT:
        """Build this agent's input from one item and the subtask's options."""
        try:
            return self.input_type.model_validate({**(options or {}), self.text_field: item})  # type: ignore[return-value]
        except ValidationError as exc:
            raise UserError(
                ErrorCode.INVALID_INPUT,
                f"invalid options for agent {self.name!r}: {exc.errors()[0]['msg']} "
                f"(at {'.'.join(map(str, exc.errors()[0]['loc']))}); fields: {sorted(self.input_type.model_fields)}",
            ) from exc

    def options_from_task(self, task: str) -> dict[str, Any]:
        """Input options this agent reads from the words of a task (the router planner asks; e.g.
        sentiment: "positive or negative" → ``{"labels": ["positive", "negative"]}``). Default: none."""
        return {}

    def task_wording(self, options: dict[str, Any]) -> str | None:
        """Words in a task that make :meth:`options_from_task` give ``options`` (``None``: no such words)."""
        return None

    def forward(self, item: str, output: OutputT) -> list[str]:
        """Items this output passes to dependent subtasks (default: the item itself)."""
        return [item]

    async def run_batch(
        self,
        ctx: RunContext,
        inputs: Sequence[InputT],
        *,
        subtask: str | None = None,
        priors: Sequence[AgentRun | None] | None = None,
        positions: Sequence[int] | None = None,
        saved: Sequence[AgentRun | None] | None = None,
    ) -> list[AgentRun]:
        """Run many inputs concurrently (each backend bounds its own concurrency).

        An unreachable or timed-out model stops the batch early: the remaining items get the same
        error instead of each waiting for its own timeout. Identical inputs run once (the copies
        share the result, marked ``deduplicated``). Once the run's budget is reached, items not
        started get a ``BUDGET_EXCEEDED`` error. Every finished item goes to ``ctx.journal``.
        ``priors``: items parked for approval, to go on with (:meth:`proceed`).
        ``positions``: the items' positions in their subtask (from 1; default 1, 2, ...).
        ``saved`` (a durable run's subtask, :mod:`moa.agent.ledger`): the runs an earlier attempt
        saved (``None`` where there is none); those come back as they are, without running, and
        every other item is saved to ``ctx.ledger`` as it finishes.
        """
        stop: list[ErrorInfo] = []
        first: dict[str, asyncio.Future[AgentRun]] = {}
        places = list(positions) if positions is not None else list(range(1, len(inputs) + 1))
        ledger = ctx.ledger if saved is not None and subtask is not None else None

        async def compute(index: int, data: InputT, prior: AgentRun | None) -> AgentRun:
            if stop:
                return AgentRun(error=stop[0])
            if ctx.budget.exhausted() is not None:
                return AgentRun(error=ctx.budget.error().info())
            with ctx.scope(position=places[index]):
                if prior is not None:
                    result = await self.proceed(ctx, data, prior, subtask=subtask)
                else:
                    result = await self.run(ctx, data, subtask=subtask)
            if result.error and result.error.code in ModelUnavailable.codes and not stop:
                stop.append(result.error)
            return result

        async def one(index: int, data: InputT) -> AgentRun:
            kept = saved[index] if saved is not None else None
            if kept is not None:
                result = kept
                if len(inputs) > 1:
                    first.setdefault(data.model_dump_json(), _done(kept))
            elif len(inputs) == 1:  # nothing to share: no task, no shield (a cancellation reaches the work directly)
                result = await compute(index, data, priors[0] if priors else None)
            elif (key := data.model_dump_json()) in first:
                shared = await asyncio.shield(first[key])
                result = shared.model_copy(update={"usage": [], "deduplicated": True})
            else:
                first[key] = asyncio.ensure_future(compute(index, data, priors[index] if priors else None))
                result = await asyncio.shield(first[key])
            text = str(getattr(data, self.text_field, ""))
            if ledger is not None and kept is None and subtask is not None and worth_saving(result):
                await ledger.save_item(subtask, places[index], text, result)
            ctx.journal.append(JournalEntry(subtask, self.name, index, text, result))
            ctx.emit("item_done", subtask, index=index, ok=result.ok, answered_by=result.answered_by, **({"reused": True} if kept is not None else {}))
            return result

        results: list[AgentRun | None] = [None] * len(inputs)
        pending = iter(enumerate(inputs))

        async def worker() -> None:  # a pool as wide as the model can serve: budgets stop between items
            for index, data in pending:
                results[index] = await one(index, data)

        workers = max(1, min(len(inputs), self.batch_width(ctx)))
        try:
            await (worker() if workers == 1 else asyncio.gather(*(worker() for _ in range(workers))))
        finally:  # cancelled (the run was): stop the items' work too, which the shields kept from the cancellation
            for work in first.values():
                work.cancel()
        return [r for r in results if r is not None]

    def batch_width(self, ctx: RunContext) -> int:
        """How many items of a batch run at once (the backends bound their own calls below this)."""
        return ctx.settings.concurrency

    def __repr__(self) -> str:
        return f"<agent {self.name}>"


def _done(run: AgentRun) -> asyncio.Future[AgentRun]:
    """A future already holding ``run`` (a saved item that later copies in the batch share)."""
    future: asyncio.Future[AgentRun] = asyncio.get_running_loop().create_future()
    future.set_result(run)
    return future


AgentFn = Callable[[RunContext, Any], Awaitable[BaseModel]]


class FunctionAgent(Agent[InputT, OutputT]):
    """An agent whose work is a Python coroutine ``fn(ctx, input) -> output`` (no model call)."""

    def __init__(self, fn: AgentFn) -> None:
        self._fn = fn

    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        """Run the function in this item's scope: model calls it makes through ``ctx.call`` are
        accounted to it and gated like any agent's (a gated call parks the item)."""
        with ctx.scope(subtask=subtask, agent=self.name, item=str(getattr(data, self.text_field, ""))) as scope:
            try:
                output = await self._fn(ctx, data)
            except AwaitingApproval as wait:
                return AgentRun(usage=scope.usage, tool_calls=scope.tool_calls, waiting=wait.approval)
            except MoaError as exc:
                log.warning("agent_failed", agent=self.name, subtask=subtask, code=str(exc.code), error=exc.message)
                return AgentRun(error=exc.info(), usage=scope.usage, tool_calls=scope.tool_calls)
            except Exception as exc:  # a user's function failed: keep the run going, record why
                log.exception("agent_crashed", agent=self.name, subtask=subtask)
                error = RunError(ErrorCode.SUBTASK_FAILED, f"agent {self.name!r} raised {type(exc).__name__}: {exc}").info()
                return AgentRun(error=error, usage=scope.usage, tool_calls=scope.tool_calls)
        return AgentRun(output=output, usage=scope.usage, tool_calls=scope.tool_calls)
