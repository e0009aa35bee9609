"""The model backend interface.

A backend turns one :class:`GenerateRequest` into one :class:`Generation`. That single
abstract method is all a backend must implement (the shape of langgraph's ``BaseStore``);
everything else (structured output, repair, confidence, tool loops) is built on top of it.

A request is either a *completion* (``prompt``: for base models with no chat template, e.g.
the embedded Gemma 3 270M) or a *chat* (``messages``). Agents pick the style from
:attr:`ModelBackend.capabilities`, never from the backend's name.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the assistant asked for (assistant messages only)."""
    tool_call_id: str | None = None
    """Which call this message answers (tool messages only)."""


class ToolSpec(BaseModel):
    """A tool offered to the model: name, what it does, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolCall(BaseModel):
    """A tool call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class TokenLogprob(BaseModel):
    """Log-probability of one generated token and its most likely alternatives."""

    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)
    """Alternative token text → logprob (the backend's top-k, chosen token included)."""


class GenerateRequest(BaseModel):
    """What to generate. Exactly one of ``prompt`` / ``messages`` is set."""

    prompt: str | None = None
    messages: list[Message] | None = None
    json_schema: dict[str, Any] | None = None
    """Constrain the output to JSON matching this schema (constrained decoding where supported)."""
    tools: list[ToolSpec] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    """Sampling seed (for reproducible samples at temperature > 0, e.g. k-sample agreement)."""
    top_logprobs: int = 0
    """Return this many alternatives per generated token (0: no logprobs)."""
    stop: list[str] | None = None


class Generation(BaseModel):
    """What a backend returned for one request."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    cached: bool = False
    """Served from the model-call cache (no model ran; ``latency_s`` is the lookup time)."""
    retries: int = 0
    """Requests sent again because their connection broke before the server answered
    (:mod:`moa.models.transport`); ``latency_s`` includes them."""


class Capabilities(BaseModel):
    """What a backend/model can do; agents choose prompt style and decoding from this."""

    chat: bool
    """The model has a chat template (instruction-tuned); False for base models."""
    completion: bool
    """Raw text completion is available (few-shot prompts)."""
    json_schema: bool = True
    """Output can be constrained by a JSON schema."""
    logprobs: bool = False
    tools: bool = False
    embeddings: bool = False


class ModelBackend(ABC):
    """One concrete model behind a spec string such as ``embedded:`` or ``ollama:llama3.2:1b``.

    Subclasses implement :meth:`generate` (and may override :meth:`aclose` / :meth:`check`).
    ``max_concurrency`` bounds in-flight requests per backend instance; callers use
    :attr:`semaphore` through :meth:`agenerate`.
    """

    spec: str
    """The spec string that built this backend (used in usage records)."""
    price_per_1k: tuple[float, float] = (0.0, 0.0)
    """(prompt, completion) price in $ per 1k tokens; local models cost 0."""

    def __init__(self, spec: str, *, max_concurrency: int = 4) -> None:
        self.spec = spec
        self.max_concurrency = max_concurrency
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this model can do."""

    async def acapabilities(self) -> Capabilities:
        """:attr:`capabilities`, after asking the server where that is needed (e.g. Ollama's /api/show).

        Callers that choose a prompt style use this; the property may return a conservative
        default until the backend has been probed.
        """
        return self.capabilities

    @abstractmethod
    async def generate(self, request: GenerateRequest) -> Generation:
        """Run one request. Raise :class:`moa.errors.RunError` (MODEL_UNREACHABLE,
        MODEL_TIMEOUT, MODEL_ERROR) with a message naming the endpoint on failure."""

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """:meth:`generate`, bounded by this backend's concurrency limit."""
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:  # one per event loop: a backend may outlive a `moa.run()` loop
            self._semaphores = {loop: (semaphore := asyncio.Semaphore(self.max_concurrency))}
        async with semaphore:
            return await self.generate(request)

    async def check(self) -> str:
        """Verify the backend is reachable; return a short description. Raise RunError if not."""
        return self.spec

    async def aclose(self) -> None:
        """Release resources (servers, sessions)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


Message.model_rebuild()
