"""The events of a served run and their subscribers (``GET /v1/runs/{id}/events``), each with a
bounded buffer.

A run publishes events faster than a slow client may read them. Each subscriber holds at most
``limit`` events waiting to be sent: when its buffer is full, the **oldest** waiting event is
dropped (the subscriber stays connected), and before the next event it gets a :class:`Gap` naming
the event ids it missed. The end of the run is a flag, never a buffered event, so the final
``finished`` event (the whole result) always arrives last. We chose dropping the oldest over
dropping the subscriber: the newest events and the final state matter most to a bot, a gap is
explicit, and a client that wants what it missed reconnects with ``Last-Event-ID`` (the run's kept
history still has the events) or reads ``GET /v1/runs/{id}``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServedEvent:
    """One event of a run: its number in the run (SSE ``id``), its kind and JSON-ready data."""

    id: int
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    """Events a subscriber did not get (its buffer overflowed, or the run no longer keeps them):
    ids ``first`` to ``last``. Sent as a ``gap`` event without an SSE id, so that a reconnect with
    ``Last-Event-ID`` starts after the last event the client did get."""

    first: int
    last: int

    def data(self) -> dict[str, Any]:
        return {
            "first": self.first, "last": self.last, "missed": self.last - self.first + 1,
            "message": "events were dropped for this slow subscriber; reconnect with Last-Event-ID to get those still kept, or read the run",
        }  # fmt: skip


@dataclass
class Subscriber:
    """One subscriber's waiting events: at most ``limit``; beyond it the oldest are dropped."""

    limit: int
    waiting: deque[ServedEvent] = field(default_factory=deque)
    ended: bool = False
    """The run ended: once ``waiting`` is empty, the subscription is over."""
    dropped: int = 0
    """Events dropped from this subscriber's buffer (for the server's log and tests)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, event: ServedEvent) -> None:
        if len(self.waiting) >= self.limit:
            self.waiting.popleft()
            self.dropped += 1
        self.waiting.append(event)
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()

    async def next(self, timeout: float) -> ServedEvent | None:
        """The next waiting event; ``None`` when the run ended and all was sent. Raises
        :class:`TimeoutError` after ``timeout`` seconds without one."""
        while not self.waiting:
            if self.ended:
                return None
            self._wake.clear()
            await asyncio.wait_for(self._wake.wait(), timeout)
        return self.waiting.popleft()


def with_gaps(last: int, event: ServedEvent) -> list[ServedEvent | Gap]:
    """``event`` after the event numbered ``last``, preceded by a :class:`Gap` when ids are missing
    in between (a run's ids count up by one)."""
    return [Gap(last + 1, event.id - 1), event] if event.id > last + 1 else [event]
