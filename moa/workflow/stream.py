"""``moa.stream``: a run as an async iterator, for apps that show progress as it happens.

::

    async for event in moa.stream("classify the sentiment", input=reviews):
        if isinstance(event, moa.RunResult):   # always the last thing yielded
            answer = event.answer
        else:                                   # a moa.Event: planned, subtask_started, item_done...
            print(event.kind, event.subtask)

It is :func:`moa.arun` with its events put on a queue. When the consumer stops early (``break``,
an exception, or its task is cancelled), the run is cancelled: it ends ``interrupted`` in the run
index with what finished saved, and ``await moa.aresume(run_id)`` continues it. A run that raises
raises from the iterator, after the events before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from moa.agent.context import Event
from moa.workflow.driver import arun
from moa.workflow.results import RunResult


async def stream(task: str, **options: Any) -> AsyncIterator[Event | RunResult]:
    """Run ``task`` like :func:`moa.arun` (same keyword arguments), yielding each event as it
    happens and then the :class:`RunResult`. An ``on_event`` given still receives every event."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    also = options.pop("on_event", None)

    def sink(event: Event) -> None:
        queue.put_nowait(event)
        if also is not None:
            also(event)

    run = asyncio.create_task(arun(task, on_event=sink, **options), name="moa-stream")
    try:
        while True:
            next_event = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({next_event, run}, return_when=asyncio.FIRST_COMPLETED)
            if next_event in done:
                yield next_event.result()
                continue
            next_event.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            yield run.result()
            return
    finally:
        if not run.done():  # the consumer stopped early: the run is interrupted, resumable
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
