"""The runs a server works on: a bounded worker pool (a semaphore) over moa's async driver, the
state of each accepted run, and its events for subscribers.

A run is checked (task, items, graph, options) before it is accepted, so a bad request stores
nothing. Accepted runs wait ``queued`` for one of ``max_runs`` workers, then run in the server's
event loop with the server's shared :class:`~moa.agent.context.RunContext` (models stay loaded).
Runs are durable as with ``moa run``: the run index and the checkpoints hold them, so a run the
server no longer keeps in memory (older ones, or after a restart) is read back from there, and a
waiting run is answered and resumed after a restart too.

Accepted runs are also written to the server's journal (:mod:`moa.server.spool`) until they
settle: a server that starts finds the runs a dead server had accepted and resumes them
(:meth:`RunManager.recover`): from their checkpoint, or from the start when they never reached one.

Each run keeps its latest events (:class:`ServedEvent`) so that a subscriber that comes late gets
what happened, then the live ones, and last the final state; each subscriber's buffer is bounded
(:mod:`moa.server.subscribers`: a slow one misses the oldest events, and is told so by a ``gap``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from moa.agent.context import Event, EventSink, RunContext, new_run_id
from moa.errors import ErrorCode, ErrorInfo, MoaError, UserError
from moa.logs import get_logger, log_context
from moa.routing.approvals import Approval
from moa.server.config import ServerConfig
from moa.server.schemas import FINAL, ApprovalRequest, RunRequest, RunState, ServedStatus
from moa.server.spool import Accepted, Spool
from moa.server.subscribers import Gap, ServedEvent, Subscriber, with_gaps
from moa.settings import Settings
from moa.workflow.catalog import builtin_graphs
from moa.workflow.driver import aresume, arun
from moa.workflow.index import RunRecord, open_index, unknown_run
from moa.workflow.inputs import check_items, check_task
from moa.workflow.options import tightened
from moa.workflow.results import RunResult
from moa.workflow.view import load_result

log = get_logger(__name__)

MAX_RECOVERIES = 3
"""A run that servers picked up this many times after dying is not resumed again (it may be what
kills them): it ends ``error`` (``run_not_resumable``), and ``moa resume RUN_ID`` can still try."""

Start = Callable[[EventSink], Coroutine[Any, Any, RunResult]]


@dataclass
class ServedRun:
    """A run this server accepted."""

    run_id: str
    graph: str
    key: str | None
    """The name of the API key that started it."""
    status: ServedStatus = "queued"
    result: RunResult | None = None
    error: ErrorInfo | None = None
    created: float = field(default_factory=time.time)
    history: int = 1000
    buffer: int = 256
    """Events one subscriber may have waiting to be sent (beyond it, its oldest are dropped)."""
    events: deque[ServedEvent] = field(init=False)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the run has ended or waits for approvals (what a chat completion waits for)."""
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    """A client cancelled it (else a cancel is the server stopping: the run is resumed at the next start)."""
    _next: int = 0
    _listeners: list[Subscriber] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = deque(maxlen=self.history)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def pending(self) -> list[Approval]:
        return self.result.pending if self.result is not None and self.status == "waiting" else []

    def publish(self, kind: str, data: dict[str, Any] | None = None) -> None:
        self._next += 1
        event = ServedEvent(self._next, kind, to_jsonable_python(data or {}, fallback=str))
        self.events.append(event)
        for listener in self._listeners:
            listener.push(event)

    def on_event(self, event: Event) -> None:
        """The run's event sink (called in the server's event loop)."""
        if event.kind == "run_interrupted":  # the partial result: it is the final state, published with it
            self.result = event.data.get("result")
            return
        self.publish(event.kind, {"subtask": event.subtask, **event.data} if event.subtask else dict(event.data))

    def settle(self, status: ServedStatus, *, result: RunResult | None = None, error: ErrorInfo | None = None) -> None:
        self.status, self.error = status, error
        self.result = result or self.result
        if status == "waiting":
            self.publish("approval_needed", {"pending": self.pending})
        else:
            self.publish("finished", {"status": status, "error": error, "result": self.result})
            for listener in self._listeners:
                listener.end()
        self.settled.set()

    def state(self) -> RunState:
        return RunState(
            run_id=self.run_id, status=self.status, graph=self.graph, result=self.result, error=self.error, pending=self.pending,
            events=f"/v1/runs/{self.run_id}/events",
        )  # fmt: skip

    async def subscribe(self, after: int = 0, keepalive: float = 15.0) -> AsyncIterator[ServedEvent | Gap | None]:
        """The run's events after ``after`` (those still kept), then live ones until it ends;
        ``None`` every ``keepalive`` seconds of silence; a :class:`Gap` before an event when the
        ones before it were dropped (no longer kept, or this subscriber's buffer overflowed)."""
        replay = [e for e in self.events if e.id > after]
        last = after
        if self.final:
            for event in replay:
                for out in with_gaps(last, event):
                    yield out
                last = event.id
            return
        listener = Subscriber(self.buffer)
        self._listeners.append(listener)
        try:
            for event in replay:
                for out in with_gaps(last, event):
                    yield out
                last = event.id
            while True:
                try:
                    got = await listener.next(keepalive)
                except TimeoutError:
                    yield None
                    continue
                if got is None:
                    return
                if got.id > last:
                    for out in with_gaps(last, got):
                        yield out
                    last = got.id
        finally:
            self._listeners.remove(listener)
            if listener.dropped:
                log.warning("slow_subscriber", run_id=self.run_id, dropped=listener.dropped)


class RunManager:
    """The server's runs and its worker pool."""

    def __init__(self, settings: Settings, context: RunContext, config: ServerConfig) -> None:
        self.settings = settings
        self.context = context
        self.config = config
        self._slots = asyncio.Semaphore(config.max_runs)
        self._runs: dict[str, ServedRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.spool = Spool(settings)

    def counts(self) -> dict[str, int]:
        """Runs by status (those kept in memory)."""
        counts: dict[str, int] = {}
        for run in self._runs.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    def _admit(self, key: str | None) -> None:
        queued = sum(r.status == "queued" for r in self._runs.values())
        if queued >= self.config.max_queued:
            raise UserError(ErrorCode.TOO_MANY_RUNS, f"the server has {queued} runs waiting for a worker (its limit); retry later")
        limit = self.config.per_key_runs
        if limit is not None and key is not None:
            mine = sum(r.key == key and r.status in ("queued", "running") for r in self._runs.values())
            if mine >= limit:
                raise UserError(
                    ErrorCode.TOO_MANY_RUNS, f"this API key has {mine} runs queued or running, its limit; wait for one to end (GET /v1/runs/ID) and retry"
                )

    def start(self, request: RunRequest, key: str | None) -> ServedRun:
        """Check ``request`` and queue its run (nothing is stored when a check fails)."""
        settings = tightened(self.settings, request.options.given())
        task = check_task(request.task, settings)
        items = check_items(list(request.input), settings) if request.input is not None else None
        if items is not None and not items:
            raise UserError(ErrorCode.INVALID_INPUT, "input is an empty list; give the items to work on, or leave input out to run the task on its own text")
        if request.graph not in builtin_graphs():
            raise UserError(ErrorCode.UNKNOWN_GRAPH, f"no graph {request.graph!r} on this server; GET /v1/graphs lists them")
        self._admit(key)
        run = ServedRun(new_run_id(), request.graph, key, history=self.config.event_history, buffer=self.config.subscriber_buffer)
        self.spool.put(Accepted(run_id=run.run_id, graph=request.graph, task=task, items=items, options=request.options.given(), key=key))
        self._runs[run.run_id] = run
        run.publish("queued", {"graph": run.graph, "items": len(items or [])})
        self._spawn(
            run, lambda sink: arun(task, input=items, graph=request.graph, settings=settings, context=self.context, run_id=run.run_id, on_event=sink)
        )
        return run

    def _spawn(self, run: ServedRun, start: Start) -> None:
        run.settled.clear()
        run.task = asyncio.create_task(self._work(run, start), name=f"moa-run-{run.run_id}")
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)

    async def _work(self, run: ServedRun, start: Start) -> None:
        with log_context(run_id=run.run_id):
            try:
                async with self._slots:
                    run.status = "running"
                    run.publish("started")
                    result = await start(run.on_event)
            except asyncio.CancelledError:
                run.settle("interrupted")
            except MoaError as exc:
                run.settle("error", error=exc.info())
            except Exception as exc:  # a bug in moa or a plugin: the run fails, the server goes on
                log.error("run_crashed", error=type(exc).__name__)
                run.settle("error", error=ErrorInfo(type=type(exc).__name__, code=ErrorCode.INTERNAL_ERROR, message=f"the run crashed ({type(exc).__name__})"))
            else:
                run.settle(result.status, result=result)
            finally:
                if run.status in ("queued", "running"):  # a BaseException (not a cancel) went through: never leave it running
                    run.settle("error", error=ErrorInfo(type="RunError", code=ErrorCode.INTERNAL_ERROR, message="the run was stopped by the server process"))
                if run.cancelled:
                    await self._record_cancel(run)
                if run.status != "interrupted" or run.cancelled:  # interrupted by the server stopping: resumed at its next start
                    self.spool.drop(run.run_id)
                self._forget_old()

    async def _record_cancel(self, run: ServedRun) -> None:
        """A run a client cancelled before it was recorded (queued, or starting) goes into the run
        index as ``interrupted`` with the reason, so it is still known after a restart."""
        entry = self.spool.get(run.run_id)
        if entry is None or not entry.task:
            return
        reason = ErrorInfo(type="RunError", code=ErrorCode.RUN_NOT_RESUMABLE, message="cancelled by a client before it started; start it again with POST /v1/runs")
        try:
            async with open_index(self.settings) as index:
                if await index.get(run.run_id) is not None:
                    return
                await index.start(RunRecord(run_id=run.run_id, task=entry.task, graph=entry.graph, status="running", started=run.created, items=len(entry.items or [])))
                await index.finish(run.run_id, "interrupted", 0.0, reason)
        except MoaError as exc:
            log.warning("cancel_not_recorded", error=exc.message)
            return
        run.error = reason

    def _forget_old(self) -> None:
        finished = [r for r in self._runs.values() if r.final]
        for run in finished[: max(0, len(finished) - self.config.keep_finished)]:
            del self._runs[run.run_id]

    async def _find(self, run_id: str) -> ServedRun | None:
        """A run kept in memory, or one read back from the run index."""
        run = self._runs.get(run_id)
        if run is not None:
            return run
        async with open_index(self.settings, write=False) as index:
            record = await index.get(run_id)
        if record is None:
            return None
        run = ServedRun(run_id, record.graph, None, history=self.config.event_history)
        run.status = "running" if record.status == "running" else ("error" if record.status == "error" else run.status)
        run.error = record.error
        if record.status != "running":
            try:
                run.result = await load_result(self.settings, run_id)
            except UserError:  # no checkpoint: stopped before its first step
                run.result = None
            if run.result is not None:
                run.status = run.result.status
            else:  # no checkpoint: cancelled or stopped before its first step (``error`` says why)
                run.status = "interrupted" if record.status == "interrupted" else "error"
        return run

    async def get(self, run_id: str) -> ServedRun:
        run = await self._find(run_id)
        if run is None:
            raise unknown_run(run_id, self.settings)
        return run

    async def answer(self, run_id: str, answers: ApprovalRequest) -> ServedRun:
        """Answer a waiting run's approvals and resume it (in the pool, like a new run)."""
        run = await self.get(run_id)
        if run.status != "waiting":
            raise UserError(ErrorCode.NOT_WAITING, f"run {run_id} is not waiting for approvals (status {run.status}); GET /v1/runs/{run_id} shows it")
        ids = {a.id for a in run.pending}
        named = [i for side in (answers.approve, answers.deny) if not isinstance(side, bool) for i in side]
        unknown = sorted(set(named) - ids)
        if unknown:
            raise UserError(ErrorCode.NOT_WAITING, f"run {run_id} waits for {', '.join(sorted(ids))}, not {', '.join(unknown)}; answer those ids, or true for all")
        if not named and answers.approve is not True and answers.deny is not True:
            raise UserError(ErrorCode.INVALID_INPUT, 'give approve and/or deny: approval ids from the run\'s pending, or true for all of them')
        approve, deny = answers.approve, answers.deny
        self.spool.put(
            Accepted(run_id=run_id, graph=run.graph, task="", key=run.key, answers={"approve": approve, "deny": deny})
        )  # no task: it cannot start again from scratch, only resume from the checkpoint it waits at
        self._runs[run_id] = run
        run.status = "queued"
        run.publish("resumed", {"approve": answers.approve, "deny": answers.deny})
        self._spawn(run, lambda sink: aresume(run_id, approve=approve, deny=deny, settings=self.settings, context=self.context, on_event=sink))
        return run

    async def cancel(self, run_id: str) -> ServedRun:
        """Stop a queued or running run (it ends ``interrupted``; ``moa resume`` can continue it);
        a waiting run is stopped by denying what it waits for."""
        run = await self.get(run_id)
        if run.final:
            raise UserError(ErrorCode.RUN_FINISHED, f"run {run_id} already ended (status {run.status}); nothing to cancel")
        if run.status == "waiting":
            return await self.answer(run_id, ApprovalRequest(deny=True))
        if run.task is None:  # running in another process (its index row says so)
            raise UserError(ErrorCode.RUN_ACTIVE, f"run {run_id} is running in another process; stop it there")
        run.cancelled = True
        run.task.cancel()
        await asyncio.wait({run.task})
        return run

    async def recover(self) -> list[str]:
        """Pick up the runs a server that died (or stopped) had accepted and not settled: those that
        reached a checkpoint resume from it (finished subtasks and saved items are not redone), the
        others start again with the same run id; each publishes ``recovered`` first. Runs that had
        settled after all are just forgotten. Returns the ids picked up."""
        picked: list[str] = []
        for entry in self.spool.orphans():
            async with open_index(self.settings, write=False) as index:
                record = await index.get(entry.run_id)
            if record is not None and record.status != "interrupted":  # it settled; the journal was not cleared in time
                self.spool.drop(entry.run_id)
                continue
            attempt = entry.recoveries + 1
            run = ServedRun(entry.run_id, entry.graph, entry.key, history=self.config.event_history, buffer=self.config.subscriber_buffer)
            self._runs[run.run_id] = run
            run.publish("recovered", {"attempt": attempt, "from": "checkpoint" if record is not None else "start"})
            if attempt > MAX_RECOVERIES:
                self.spool.drop(entry.run_id)
                run.settle("error", error=ErrorInfo(
                    type="UserError", code=ErrorCode.RUN_NOT_RESUMABLE,
                    message=f"the server stopped {entry.recoveries} times while working on run {entry.run_id}, so it is not resumed again; "
                    f"`moa resume {entry.run_id}` tries once more, `moa runs show {entry.run_id}` shows what finished",
                ))  # fmt: skip
                continue
            self.spool.put(entry.model_copy(update={"recoveries": attempt}))
            log.warning("run_recovered", run_id=entry.run_id, attempt=attempt, resumed=record is not None)
            picked.append(entry.run_id)
            self._spawn(run, functools.partial(self._restart, entry))
        return picked

    async def _restart(self, entry: Accepted, sink: EventSink) -> RunResult:
        """Resume ``entry``'s run from its checkpoint, or start it again when it has none."""
        async with open_index(self.settings, write=False) as index:
            exists = await index.get(entry.run_id) is not None
        if exists:
            try:
                if entry.answers is not None:
                    try:
                        return await aresume(entry.run_id, **entry.answers, settings=self.settings, context=self.context, on_event=sink)
                    except UserError as exc:
                        if exc.code != ErrorCode.NOT_WAITING:  # the answers were taken before the server died
                            raise
                return await aresume(entry.run_id, settings=self.settings, context=self.context, on_event=sink)
            except UserError as exc:
                if exc.code != ErrorCode.RUN_NOT_RESUMABLE or not entry.task:
                    raise
            async with open_index(self.settings) as index:  # it died before its first checkpoint: start it again
                record = await index.get(entry.run_id)
                if record is not None and not await index.remove(record):
                    raise UserError(ErrorCode.RUN_ACTIVE, f"run {entry.run_id} was picked up by another process")
        settings = tightened(self.settings, entry.options)
        return await arun(entry.task, input=entry.items, graph=entry.graph, settings=settings, context=self.context, run_id=entry.run_id, on_event=sink)

    async def aclose(self) -> None:
        """Cancel what still runs (each ends ``interrupted`` in the run index) and wait for it."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
