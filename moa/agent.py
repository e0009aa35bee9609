"""The Agent type: a small typed unit of work that the planner can assign a subtask to.

An agent has a name, a description (the planner reads it), example requests (the router
planner matches tasks against them), an input model and an output model. Two kinds:

* :class:`ModelAgent` — prompts a model of its tier, with a *completion* prompt for base models
  and a *chat* prompt for instruction-tuned ones (chosen from the backend's capabilities), decodes
  constrained JSON and validates it (:mod:`moa.structured`), then computes a confidence.
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

import structlog
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError

from moa.confidence import calibrate, choice_probs
from moa.context import RunContext
from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.models.base import Capabilities, Generation, GenerateRequest, Message, ModelBackend
from moa.settings import Tier
from moa.structured import generate_structured
from moa.tools import Tool, run_tool_loop
from moa.usage import Usage

log = structlog.get_logger(__name__)

InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)
DecodeT = TypeVar("DecodeT", bound=BaseModel)


class ToolCallRecord(BaseModel):
    """A tool call an agent's model made, and what happened to it."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    allowed: bool
    result: Any = None
    error: dict[str, Any] | None = None


class AgentRun(BaseModel):
    """The outcome of one agent call: an output or an error, and what it cost."""

    output: SerializeAsAny[BaseModel] | None = None
    error: dict[str, Any] | None = None
    """``MoaError.to_dict()`` when the call failed."""
    usage: list[Usage] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.output is not None


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

    @abstractmethod
    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        """Process one input. Must not raise for a model failure: return ``AgentRun(error=...)``."""

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

    def forward(self, item: str, output: OutputT) -> list[str]:
        """Items this output passes to dependent subtasks (default: the item itself)."""
        return [item]

    async def run_batch(self, ctx: RunContext, inputs: Sequence[InputT], *, subtask: str | None = None) -> list[AgentRun]:
        """Run many inputs concurrently (each backend bounds its own concurrency).

        An unreachable or timed-out model stops the batch early: the remaining items get the same
        error instead of each waiting for its own timeout.
        """
        stop: dict[str, Any] = {}

        async def one(index: int, data: InputT) -> AgentRun:
            if stop:
                return AgentRun(error=stop)
            result = await self.run(ctx, data, subtask=subtask)
            if result.error and result.error.get("code") in (ErrorCode.MODEL_UNREACHABLE, ErrorCode.MODEL_TIMEOUT):
                stop.update(result.error)
            ctx.emit("item_done", subtask, index=index, ok=result.ok)
            return result

        return list(await asyncio.gather(*(one(i, d) for i, d in enumerate(inputs))))

    def __repr__(self) -> str:
        return f"<agent {self.name}>"


class ModelAgent(Agent[InputT, OutputT], Generic[InputT, OutputT, DecodeT]):
    """An agent that prompts a model and validates its structured answer.

    Subclasses implement :meth:`decode_type`, :meth:`completion_prompt`, :meth:`chat_messages`
    and :meth:`finish`. Put constant text (instructions, shots) first and the item last, so the
    embedded engine reuses the KV cache of the shared prefix across a batch.
    """

    max_tokens: ClassVar[int] = 128
    logprobs: ClassVar[int] = 10

    def __init__(self, *, tools: Sequence[Tool] = ()) -> None:
        self.tools: tuple[Tool, ...] = tuple(tools)
        """Tools this agent may call (its allowlist); used with chat models that support tool calls."""

    def with_tools(self, *tools: Tool) -> Self:
        """A copy of this agent that may call ``tools`` (e.g. ``agent_tool(other)``, ``memory_search``)."""
        clone = copy.copy(self)
        clone.tools = (*self.tools, *tools)
        return clone

    @abstractmethod
    def decode_type(self, data: InputT, caps: Capabilities) -> type[DecodeT]:
        """The pydantic model the model is constrained to produce."""

    @abstractmethod
    def completion_prompt(self, data: InputT) -> str:
        """A few-shot completion prompt for base models (ends where the JSON answer begins)."""

    @abstractmethod
    def chat_messages(self, data: InputT) -> list[Message]:
        """Chat messages for instruction-tuned models."""

    @abstractmethod
    def finish(self, data: InputT, decoded: DecodeT, gen: Generation, probs: dict[str, float] | None) -> OutputT:
        """Turn the decoded answer into the agent's output.

        ``probs``: for choice agents (:meth:`choices`), the calibrated probability of each choice
        when the backend gives logprobs, else ``None``. The decision is the most probable choice.
        """

    def choices(self, data: InputT) -> Sequence[str] | None:
        """The allowed values of :attr:`choice_field` for a classification agent (else ``None``)."""
        return None

    choice_field: ClassVar[str] = "label"
    calibration_inputs: ClassVar[tuple[str, ...]] = ()
    """Content-free texts whose mean choice probabilities are divided out on base models
    (contextual calibration, :func:`moa.confidence.calibrate`); empty: no calibration."""

    async def _choice_probs(
        self, ctx: RunContext, backend: ModelBackend, data: InputT, caps: Capabilities, decoded: DecodeT, gen: Generation
    ) -> tuple[dict[str, float] | None, list[Usage]]:
        """Calibrated choice probabilities, and the usage of the calibration call if this item made it."""
        choices = self.choices(data)
        if not choices or not caps.logprobs:
            return None, []
        probs = choice_probs(gen, choices, str(getattr(decoded, self.choice_field)))
        if probs is None or caps.chat or not self.calibration_inputs:
            return probs, []
        free = data.model_copy(update={self.text_field: "N/A"})
        key = ("prior", backend.spec, self.name, self.completion_prompt(free))
        (prior, usage), first = await ctx.cached(key, lambda: self._prior(backend, data, caps))
        return (calibrate(probs, prior) if prior else probs), (usage if first else [])

    async def _prior(self, backend: ModelBackend, data: InputT, caps: Capabilities) -> tuple[dict[str, float] | None, list[Usage]]:
        """Mean choice probabilities over content-free inputs: the prompt's own bias."""
        choices = self.choices(data) or []
        priors: list[dict[str, float]] = []
        usage: list[Usage] = []
        for text in self.calibration_inputs:
            free = data.model_copy(update={self.text_field: text})
            try:
                result = await generate_structured(
                    backend, self.request(free, caps), self.decode_type(free, caps), tier=self.tier, agent=self.name, purpose="calibrate"
                )
            except MoaError:
                continue
            usage += result.usage
            probs = choice_probs(result.generation, choices, str(getattr(result.value, self.choice_field)))
            if probs:
                priors.append(probs)
        if not priors:
            return None, usage
        return {c: sum(p[c] for p in priors) / len(priors) for c in choices}, usage

    async def _use_tools(
        self, ctx: RunContext, backend: ModelBackend, data: InputT, caps: Capabilities, subtask: str | None
    ) -> tuple[list[Message] | None, list[ToolCallRecord], list[Usage]]:
        """Run the tool loop first when this agent has tools and the model can call them."""
        if not self.tools:
            return None, [], []
        if not (caps.chat and caps.tools):
            log.info("tools_unavailable", agent=self.name, model=backend.spec, reason="the model has no tool-calling API")
            return None, [], []
        messages, calls, usage = await run_tool_loop(
            ctx, backend, self.chat_messages(data), self.tools, tier=self.tier, agent=self.name, subtask=subtask
        )
        if calls:
            messages = [*messages, Message(role="user", content="Now give your final answer as JSON.")]
        return messages, calls, usage

    def backend(self, ctx: RunContext) -> ModelBackend:
        return ctx.models.tier(self.tier)

    def request(self, data: InputT, caps: Capabilities, messages: list[Message] | None = None) -> GenerateRequest:
        schema = self.decode_type(data, caps).model_json_schema()
        top = self.logprobs if caps.logprobs else 0
        if caps.chat:
            messages = messages or self.chat_messages(data)
            return GenerateRequest(messages=messages, json_schema=schema, max_tokens=self.max_tokens, top_logprobs=top)
        return GenerateRequest(prompt=self.completion_prompt(data), json_schema=schema, max_tokens=self.max_tokens, top_logprobs=top)

    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        try:
            backend = self.backend(ctx)
            caps = await backend.acapabilities()
            messages, calls, tool_usage = await self._use_tools(ctx, backend, data, caps, subtask)
            result = await generate_structured(
                backend, self.request(data, caps, messages), self.decode_type(data, caps), tier=self.tier, agent=self.name, subtask=subtask
            )
            probs, calibration = await self._choice_probs(ctx, backend, data, caps, result.value, result.generation)
            output = self.finish(data, result.value, result.generation, probs)
            return AgentRun(output=output, usage=[*tool_usage, *calibration, *result.usage], tool_calls=calls)
        except MoaError as exc:
            log.warning("agent_failed", agent=self.name, subtask=subtask, code=str(exc.code), error=exc.message)
            usage = [Usage.model_validate(u) for u in exc.details.get("usage", [])]
            return AgentRun(error=exc.to_dict(), usage=usage)


AgentFn = Callable[[RunContext, Any], Awaitable[BaseModel]]


class FunctionAgent(Agent[InputT, OutputT]):
    """An agent whose work is a Python coroutine ``fn(ctx, input) -> output`` (no model call)."""

    def __init__(self, fn: AgentFn) -> None:
        self._fn = fn

    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        try:
            return AgentRun(output=await self._fn(ctx, data))  # type: ignore[arg-type]
        except MoaError as exc:
            log.warning("agent_failed", agent=self.name, subtask=subtask, code=str(exc.code), error=exc.message)
            return AgentRun(error=exc.to_dict())
        except Exception as exc:  # a user's function failed: keep the run going, record why
            log.exception("agent_crashed", agent=self.name, subtask=subtask)
            return AgentRun(error=RunError(ErrorCode.SUBTASK_FAILED, f"agent {self.name!r} raised {type(exc).__name__}: {exc}").to_dict())
