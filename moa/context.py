"""Run-scoped dependencies, injected into agents and graph nodes (never global).

A :class:`RunContext` holds the settings, the model backends, the shared memory and the
embedder of one run, plus an event sink for progress views. The memory and embedder are built
lazily, so a run that uses neither never loads them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moa.models.registry import Models
from moa.settings import Settings

if TYPE_CHECKING:
    from moa.embedder import Embedder
    from moa.memory import Memory


@dataclass(frozen=True)
class Event:
    """A progress event (subtask started/finished, item done) for live views."""

    kind: str
    subtask: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


def new_run_id() -> str:
    """A fresh run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def _ignore(_: Event) -> None:
    return None


@dataclass
class RunContext:
    """Everything one run needs. Build it with :meth:`create`."""

    settings: Settings
    models: Models
    run_id: str = field(default_factory=new_run_id)
    on_event: EventSink = _ignore
    _memory: Memory | None = None
    _embedder: Embedder | None = None
    _cache: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        settings: Settings | None = None,
        *,
        models: Models | None = None,
        memory: Memory | None = None,
        embedder: Embedder | None = None,
        on_event: EventSink | None = None,
        run_id: str | None = None,
    ) -> RunContext:
        settings = settings or Settings()
        return cls(
            settings=settings,
            models=models or Models(settings),
            run_id=run_id or new_run_id(),
            on_event=on_event or _ignore,
            _memory=memory,
            _embedder=embedder,
        )

    def embedder(self) -> Embedder:
        if self._embedder is None:
            from moa.embedder import make_embedder

            self._embedder = make_embedder(self.settings.embedder)
        return self._embedder

    def memory(self) -> Memory:
        if self._memory is None:
            from moa.memory import ChromaMemory

            s = self.settings
            if s.memory_url:
                self._memory = ChromaMemory(url=s.memory_url, embedder=self.embedder())
            else:
                self._memory = ChromaMemory(s.memory_dir, embedder=self.embedder())
        return self._memory

    async def cached(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Compute a value once per run and key, even when many tasks ask at the same time.

        Returns the value and whether this caller was the one that computed it.
        """
        future = self._cache.get(key)
        first = future is None
        if future is None:
            future = self._cache[key] = asyncio.ensure_future(compute())
        return await asyncio.shield(future), first

    def emit(self, kind: str, subtask: str | None = None, **data: Any) -> None:
        self.on_event(Event(kind, subtask, data))

    async def aclose(self) -> None:
        await self.models.aclose()
