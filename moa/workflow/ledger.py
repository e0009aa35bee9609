"""The run ledger in SQLite: a durable run's finished items and side-effect tool calls, kept
until its subtask's result is checkpointed (:mod:`moa.agent.ledger` says what they are for).

Two tables in the run index's database (``runs.sqlite`` under ``state_dir``, also when the
checkpoints go to Postgres): ``moa_items`` (run id, subtask, item position, a hash of the item's
text → the item's :class:`~moa.agent.results.AgentRun` as JSON) and ``moa_tool_calls`` (run id,
subtask, position, tool, canonical JSON arguments, occurrence → done, result). Each write is
committed before the call that made it returns (the ledger's connection is in autocommit mode).

What is kept goes away once the checkpoint holds it (:meth:`SqliteLedger.forget`, by the driver at
the end of an attempt and at the start of a resume), and with the run (``moa runs rm`` / ``prune``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from moa.agent.ledger import CallKey, Ledger, RecordedCall
from moa.agent.results import AgentRun
from moa.errors import MoaError
from moa.usage import Usage
from moa.workflow.index import RunIndex, close_connection, connect, state_error
from moa.workflow.results import SubtaskResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS moa_items (
    run_id TEXT NOT NULL,
    subtask TEXT NOT NULL,
    position INTEGER NOT NULL,
    item_hash TEXT NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (run_id, subtask, position, item_hash)
);
CREATE TABLE IF NOT EXISTS moa_tool_calls (
    run_id TEXT NOT NULL,
    subtask TEXT NOT NULL,
    position INTEGER NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    PRIMARY KEY (run_id, subtask, position, tool, arguments, occurrence)
);
"""

Finished = Mapping[str, Sequence[int] | None]
"""Checkpointed work of a run: subtask → the positions of its items the checkpoint holds (``None``: all of them)."""


def checkpointed(results: Mapping[str, SubtaskResult]) -> Finished:
    """What a checkpoint's subtask results hold: every item of a subtask that is over, the
    finished items of one that waits for approval (its parked items go on later)."""
    return {sid: [p for p, i in enumerate(r.items, start=1) if i.waiting is None] if r.status == "waiting" else None for sid, r in results.items()}


def item_hash(item: str) -> str:
    return hashlib.sha256(item.encode()).hexdigest()


class SqliteLedger(Ledger):
    """A run's ledger in the run index's database. Use :func:`open_ledger`.

    It has a connection of its own in autocommit mode: each write is committed by the statement
    itself, in one trip to SQLite's thread, so that the time between recording a side-effect call
    and making it stays as short as it can be (a kill in between leaves a call recorded that never
    ran: it is refused on resume, never repeated)."""

    def __init__(self, conn: aiosqlite.Connection, index: RunIndex, run_id: str) -> None:
        super().__init__()
        self.conn = conn
        self.index = index
        self.run_id = run_id

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one statement (committed by itself) and fetch its rows, in one trip to SQLite's thread."""
        try:
            return list(await self.conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise state_error(exc, self.index.path, self.index.settings) from exc

    async def saved_items(self, subtask: str, items: Sequence[tuple[int, str]]) -> list[AgentRun | None]:
        rows = await self._rows("SELECT position, item_hash, run FROM moa_items WHERE run_id = ? AND subtask = ?", (self.run_id, subtask))
        saved = {(position, digest): run for position, digest, run in rows}
        found = (saved.get((position, item_hash(item))) for position, item in items)
        return [AgentRun.model_validate_json(run) if run is not None else None for run in found]

    async def save_item(self, subtask: str, position: int, item: str, run: AgentRun) -> None:
        await self._rows(
            "INSERT OR REPLACE INTO moa_items (run_id, subtask, position, item_hash, run) VALUES (?, ?, ?, ?, ?)",
            (self.run_id, subtask, position, item_hash(item), run.model_dump_json()),
        )

    async def begin_call(self, key: CallKey) -> RecordedCall | None:
        where = (self.run_id, key.subtask, key.position, key.tool, key.arguments, key.occurrence)
        try:
            await self.conn.execute_fetchall("INSERT INTO moa_tool_calls (run_id, subtask, position, tool, arguments, occurrence) VALUES (?, ?, ?, ?, ?, ?)", where)
            return None
        except sqlite3.IntegrityError:  # an earlier attempt made this call
            pass
        except sqlite3.Error as exc:
            raise state_error(exc, self.index.path, self.index.settings) from exc
        rows = await self._rows(
            "SELECT done, result FROM moa_tool_calls WHERE run_id = ? AND subtask = ? AND position = ? AND tool = ? AND arguments = ? AND occurrence = ?", where
        )
        done, result = rows[0]
        return RecordedCall.model_validate({"done": bool(done), **json.loads(result or "{}")})

    async def end_call(self, key: CallKey, result: Any = None, error: MoaError | None = None) -> None:
        outcome = json.dumps({"error": error.info().model_dump(mode="json")} if error is not None else {"result": result}, default=str)
        await self._rows(
            "UPDATE moa_tool_calls SET done = 1, result = ? "
            "WHERE run_id = ? AND subtask = ? AND position = ? AND tool = ? AND arguments = ? AND occurrence = ?",
            (outcome, self.run_id, key.subtask, key.position, key.tool, key.arguments, key.occurrence),
        )

    async def usage(self) -> list[Usage]:
        """What the saved items cost (an earlier attempt spent it; the checkpoint does not hold it yet)."""
        rows = await self._rows("SELECT run FROM moa_items WHERE run_id = ?", (self.run_id,))
        return [u for (run,) in rows for u in AgentRun.model_validate_json(run).usage]

    async def forget(self, finished: Finished | None = None) -> None:
        """Drop what the checkpoint now holds: the saved items of ``finished`` (and the tool calls
        of its subtasks that are over, i.e. hold all their items); ``None``: everything of the run."""
        if finished is None:
            await forget_runs(self.index.conn, [self.run_id])
            return
        for subtask, positions in finished.items():
            if positions is None:
                await self._rows("DELETE FROM moa_items WHERE run_id = ? AND subtask = ?", (self.run_id, subtask))
                await self._rows("DELETE FROM moa_tool_calls WHERE run_id = ? AND subtask = ?", (self.run_id, subtask))
            elif positions:
                marks = ", ".join("?" * len(positions))
                await self._rows(f"DELETE FROM moa_items WHERE run_id = ? AND subtask = ? AND position IN ({marks})", (self.run_id, subtask, *positions))


async def setup(conn: aiosqlite.Connection) -> None:
    """Create the ledger's tables (once)."""
    await conn.executescript(SCHEMA)
    await conn.commit()


@asynccontextmanager
async def open_ledger(index: RunIndex, run_id: str) -> AsyncIterator[SqliteLedger]:
    """The ledger of ``run_id`` in ``index``'s database (its tables created on first use); closed on exit."""
    try:
        await setup(index.conn)
    except sqlite3.Error as exc:
        raise state_error(exc, index.path, index.settings) from exc
    conn = await connect(index.path, index.settings, autocommit=True)  # see SqliteLedger
    try:
        yield SqliteLedger(conn, index, run_id)
    finally:
        await close_connection(conn)


async def forget_runs(conn: aiosqlite.Connection, run_ids: Iterable[str]) -> None:
    """Drop everything the ledger keeps of ``run_ids`` (removed or finished runs)."""
    await setup(conn)
    for run_id in run_ids:
        await conn.execute("DELETE FROM moa_items WHERE run_id = ?", (run_id,))
        await conn.execute("DELETE FROM moa_tool_calls WHERE run_id = ?", (run_id,))
    await conn.commit()


async def forget_orphans(conn: aiosqlite.Connection) -> None:
    """Drop what the ledger keeps of runs the index no longer has (a removal killed half-way)."""
    await setup(conn)
    for table in ("moa_items", "moa_tool_calls"):
        await conn.execute(f"DELETE FROM {table} WHERE run_id NOT IN (SELECT run_id FROM moa_runs)")
    await conn.commit()
