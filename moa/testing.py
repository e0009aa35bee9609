"""Test doubles for moa users' own tests: models that answer instantly, deterministically.

``FakeModel`` answers every request with a handler (a function of the request) or canned
texts, records every request, can simulate latency (to test parallelism) and faults::

    from moa.testing import FakeModel
    slm = FakeModel(lambda req: '{"label": "positive"}')
    result = await moa.arun("classify the sentiment", input=["great"], slm=slm, llm=slm)

``block_real_models()`` makes the real backends, the offline embedder and Chroma clients refuse
to work, so that a unit test cannot reach a model by accident (moa's own tests use it for every
test not marked ``real``)::

    with block_real_models():
        ...  # a real model, MiniLM or Chroma raises RealModelBlocked here
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, NoReturn
from unittest import mock

import numpy as np

from moa.errors import ErrorCode, RunError, UserError
from moa.memory.chroma import Memory, MetadataValue, Passage, rows_to_add
from moa.models.base import Capabilities, GenerateRequest, Generation, ModelBackend
from moa.models.embeddings import Embedder, MiniLMEmbedder

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


class FakeMemory(Memory):
    """A memory in a dict: exact cosine search over an embedder's vectors (a :class:`FakeEmbedder`
    unless given), nothing on disk, no Chroma. Ids, sources and metadata behave as in
    :class:`~moa.memory.chroma.ChromaMemory`; pass it as ``RunContext.create(memory=...)``."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder or FakeEmbedder()
        self._rows: dict[str, tuple[str, dict[str, MetadataValue], list[float]]] = {}

    async def aadd(
        self,
        texts: Sequence[str],
        *,
        sources: Sequence[str | None] | None = None,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
    ) -> list[str]:
        """Embed and upsert ``texts``; ids default to :func:`~moa.memory.chroma.passage_id`."""
        rows = rows_to_add(texts, sources=sources, ids=ids, metadatas=metadatas)
        vectors = await self.embedder.aembed([text for _, text, _ in rows]) if rows else []
        for (pid, text, merged), vector in zip(rows, vectors, strict=True):
            self._rows[pid] = (text, merged, vector)
        return [pid for pid, _, _ in rows]

    async def aquery(self, text: str, k: int = 5) -> list[Passage]:
        """The ``k`` stored passages closest to ``text`` (cosine), best first."""
        if k < 1:
            raise UserError(ErrorCode.INVALID_INPUT, f"k must be at least 1, got {k}")
        if not self._rows:
            return []
        query = np.asarray((await self.embedder.aembed([text]))[0])
        scored = []
        for pid, (doc, meta, vector) in self._rows.items():
            v = np.asarray(vector)
            norms = float(np.linalg.norm(query) * np.linalg.norm(v))
            fields = dict(meta)
            source = fields.pop("source", None)
            score = float(query @ v) / norms if norms else 0.0
            scored.append(Passage(id=pid, text=doc, score=score, source=None if source is None else str(source), metadata=fields))
        return sorted(scored, key=lambda p: p.score, reverse=True)[:k]

    def count(self) -> int:
        """How many passages are stored."""
        return len(self._rows)


class RealModelBlocked(BaseException):
    """A real model backend, the offline embedder or a Chroma client was used inside
    :func:`block_real_models`.

    A ``BaseException`` (as ``KeyboardInterrupt`` and pytest's own outcomes are) so that no
    ``except Exception`` (a function agent's crash guard, a fallback to the next cascade step, the
    code under test) can turn it into a failed subtask that the test might not notice.
    """


def _blocked(what: str) -> RealModelBlocked:
    return RealModelBlocked(
        f"{what} while real models are blocked (moa.testing.block_real_models); use the fakes in moa.testing "
        "(FakeModel, FakeEmbedder, FakeMemory) or mark the test @pytest.mark.real"
    )


async def _refuse_generate(self: ModelBackend, request: GenerateRequest) -> Generation:
    raise _blocked(f"{self!r} was asked to generate")


def _refuse_embed(self: Embedder, texts: Sequence[str]) -> list[list[float]]:
    raise _blocked(f"the real embedder {type(self).__name__} was asked to embed {len(texts)} texts")


async def _refuse_aembed(self: Embedder, texts: Sequence[str]) -> list[list[float]]:
    raise _blocked(f"the real embedder {type(self).__name__} was asked to embed {len(texts)} texts")


def _refuse_load(self: Embedder) -> NoReturn:
    raise _blocked(f"the real embedder {type(self).__name__} was loaded")


def _refuse_client(name: str) -> Callable[..., NoReturn]:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        where = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items() if k != "settings")])
        raise _blocked(f"a real Chroma client chromadb.{name}({where}) was created")

    return refuse


@contextmanager
def block_real_models() -> Iterator[None]:
    """Inside the block, nothing real can be reached by accident: the real backends' ``generate``
    (``EmbeddedBackend``, ``OllamaBackend``, ``OpenAIBackend``), the offline MiniLM embedder (``embed``, ``aembed``, loading its model) and
    Chroma clients (``chromadb.PersistentClient``, ``chromadb.HttpClient``) raise
    :class:`RealModelBlocked`. Everything is restored when the block ends (the pydantic-ai
    ``ALLOW_MODEL_REQUESTS = False`` idea, as a context manager that needs no pytest)::

        @pytest.fixture(autouse=True)
        def _no_real_models(request):
            if request.node.get_closest_marker("real"):
                yield
            else:
                with block_real_models():
                    yield
    """
    import chromadb  # imported here: importing moa.testing stays as light as importing moa

    from moa.models.embedded import EmbeddedBackend
    from moa.models.ollama import OllamaBackend
    from moa.models.openai import OpenAIBackend

    with ExitStack() as stack:
        for backend in (EmbeddedBackend, OllamaBackend, OpenAIBackend):
            stack.enter_context(mock.patch.object(backend, "generate", _refuse_generate))
        stack.enter_context(mock.patch.object(MiniLMEmbedder, "embed", _refuse_embed))
        stack.enter_context(mock.patch.object(MiniLMEmbedder, "aembed", _refuse_aembed))
        stack.enter_context(mock.patch.object(MiniLMEmbedder, "_load", _refuse_load))
        for client in ("PersistentClient", "HttpClient"):
            stack.enter_context(mock.patch.object(chromadb, client, _refuse_client(client)))
        yield


__all__ = ["FakeEmbedder", "FakeMemory", "FakeModel", "RealModelBlocked", "block_real_models", "prompt_of", "unreachable"]
