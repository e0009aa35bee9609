"""Test doubles for moa users' own tests: models that answer instantly, deterministically.

``FakeModel`` answers every request with a handler (a function of the request) or canned
texts, records every request, can simulate latency (to test parallelism) and faults::

    from moa.testing import FakeModel
    slm = FakeModel(lambda req: '{"label": "positive"}')
    result = await moa.arun("classify the sentiment", input=["great"], slm=slm, llm=slm)
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from moa.errors import ErrorCode, RunError
from moa.models.base import Capabilities, GenerateRequest, Generation, ModelBackend
from moa.models.embeddings import Embedder

Handler = Callable[[GenerateRequest], str | Generation]


class FakeModel(ModelBackend):
    """A model that answers from a handler or a cycle of canned texts.

    Args:
        handler: ``request -> text`` (or a full :class:`Generation`); or an iterable of texts
            answered in turn (cycled).
        chat: pretend to be an instruction-tuned chat model (else a base, completion model).
        delay: seconds each call takes (``asyncio.sleep``), to test concurrency; or a function of
            the request (e.g. slow for one subtask's prompts only).
        fail_with: raise this error on every call (fault injection).
    """

    def __init__(
        self,
        handler: Handler | Iterable[str] = ("{}",),
        *,
        spec: str = "fake:",
        chat: bool = False,
        logprobs: bool = False,
        tools: bool = False,
        delay: float | Callable[[GenerateRequest], float] = 0.0,
        fail_with: RunError | None = None,
        max_concurrency: int = 64,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        if callable(handler):
            self._handler: Handler = handler
        else:
            texts = itertools.cycle(list(handler))
            self._handler = lambda _request: next(texts)
        self._caps = Capabilities(chat=chat, completion=True, json_schema=True, logprobs=logprobs, tools=tools)
        self.delay = delay
        self.fail_with = fail_with
        self.requests: list[GenerateRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def generate(self, request: GenerateRequest) -> Generation:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        delay = self.delay(request) if callable(self.delay) else self.delay
        try:
            if delay:
                await asyncio.sleep(delay)
            if self.fail_with is not None:
                raise self.fail_with
            answer = self._handler(request)
        finally:
            self.in_flight -= 1
        if isinstance(answer, Generation):
            return answer
        prompt = request.prompt or " ".join(m.content for m in request.messages or [])
        return Generation(text=answer, prompt_tokens=len(prompt.split()), completion_tokens=len(answer.split()), latency_s=delay)


def unreachable(spec: str = "fake:down", url: str = "http://127.0.0.1:9") -> FakeModel:
    """A model whose server is down (every call raises ``MODEL_UNREACHABLE``)."""
    return FakeModel(
        spec=spec, fail_with=RunError(ErrorCode.MODEL_UNREACHABLE, f"cannot reach the model server at {url}; start it or fix the URL")
    )


def prompt_of(request: GenerateRequest) -> str:
    """The text of a request (prompt or joined messages), for handlers that branch on it."""
    return request.prompt or "\n".join(m.content for m in request.messages or [])


class FakeEmbedder(Embedder):
    """Bag of words hashed into 64 signed buckets, L2-normalised; instant and deterministic.
    Texts sharing words are near each other, which is all specialists and example stores need
    in a unit test. Records the size of every batch in :attr:`calls`."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @property
    def name(self) -> str:
        return "hash64"

    @property
    def dimension(self) -> int:
        return 64

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        out = []
        for text in texts:
            v = np.zeros(64)
            for word in text.lower().split():
                h = zlib.crc32(word.encode())
                v[h % 64] += 1.0 if (h >> 8) & 1 else -1.0
            norm = np.linalg.norm(v)
            out.append((v / norm if norm else v).tolist())
        return out


__all__: list[Any] = ["FakeEmbedder", "FakeModel", "prompt_of", "unreachable"]
