"""The run index: one row per run (id, task, graph, status, start, seconds, items) for ``moa runs``.

It lives in ``runs.sqlite`` under ``state_dir``, next to the LangGraph checkpoints (which hold
the runs' state; see :mod:`moa.workflow.durable`). A row says ``running`` while a process works on the
run; a row left ``running`` by a process that no longer exists (killed) reads as ``interrupted``.
:func:`state_error` turns SQLite's errors (locked, not a database) into moa errors that say what
to do.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from pydantic import BaseModel

from moa.errors import ErrorCode, ErrorInfo, MoaError, RunError, UserError
from moa.routing.approvals import Approval
from moa.settings import Settings

STATE_FILE = "runs.sqlite"

RecordStatus = Literal["running", "interrupted", "ok", "partial", "failed", "error", "stopped", "waiting", "needs_human"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS moa_runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    graph TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    seconds REAL NOT NULL DEFAULT 0,
    items INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    pid INTEGER,
    plan TEXT,
    error TEXT,
    pending TEXT
)
"""
_COLUMNS = "run_id, task, graph, status, started, seconds, items, attempts, pid, plan, error, pending"


class RunRecord(BaseModel):
    """A run as the index knows it."""

    run_id: str
    task: str
    graph: str
    status: RecordStatus
    started: float
    """Unix time the run was first started."""
    seconds: float = 0.0
    """Wall time of all its attempts so far."""
    items: int = 0
    attempts: int = 1
    """1, plus one per ``moa resume``."""
    pid: int | None = None
    plan: str | None = None
    """The plan the caller gave (JSON), needed to resume a run that stopped before planning."""
    error: ErrorInfo | None = None
    pending: list[Approval] = []
    """What the run waits for (status ``waiting``): answer with ``moa resume RUN_ID --approve/--deny``."""


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def unknown_run(run_id: str, settings: Settings) -> UserError:
    return UserError(ErrorCode.UNKNOWN_RUN, f"no run {run_id!r} is recorded in {state_path(settings)}; `moa runs list` shows the runs there")


_CORRUPT = ("not a database", "malformed", "corrupt")


def state_error(exc: sqlite3.Error, path: Path | str, settings: Settings) -> MoaError:
    """A moa error for a failed operation on a state database, saying what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return RunError(
            ErrorCode.STATE_LOCKED,
            f"the state database {path} is locked by another process (waited {settings.state_lock_timeout:g}s: {text}); "
            "wait for the other moa process to finish, raise MOA_STATE_LOCK_TIMEOUT, or use another MOA_STATE_DIR",
        )
    if any(marker in text for marker in _CORRUPT):
        return UserError(
            ErrorCode.STATE_CORRUPT,
            f"the state database {path} is damaged ({text}); move it away (e.g. `mv {path} {path}.bad`) and run again: "
            "moa starts a new one, and the runs recorded in the old one can no longer be listed or resumed",
        )
    return UserError(
        ErrorCode.STATE_UNAVAILABLE,
        f"cannot use the state database {path} ({text}); make its folder writable (and check the disk is not full) "
        "or set MOA_STATE_DIR to another folder",
    )


async def connect(path: Path, settings: Settings) -> aiosqlite.Connection:
    """Open (creating its folder) a SQLite state database in WAL mode; check that it is one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            ErrorCode.STATE_UNAVAILABLE, f"cannot create the state folder {path.parent} ({exc}); set MOA_STATE_DIR to a writable folder"
        ) from exc
    try:
        conn = await aiosqlite.connect(path, timeout=settings.state_lock_timeout)
    except sqlite3.Error as exc:
        raise state_error(exc, path, settings) from exc
    try:
        async with conn.execute("PRAGMA schema_version") as cursor:
            await cursor.fetchone()
        # WAL first: synchronous=NORMAL is crash-safe only in WAL mode (settings.state_sync)
        await conn.executescript(f"PRAGMA journal_mode=WAL; PRAGMA synchronous={settings.state_sync.upper()};")
    except sqlite3.Error as exc:
        await conn.close()
        raise state_error(exc, path, settings) from exc
    return conn


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunIndex:
    """The ``moa_runs`` table. Use :func:`open_index`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, settings: Settings) -> None:
        self.conn = conn
        self.path = path
        self.settings = settings

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            async with self.conn.execute(sql, params):
                pass
            await self.conn.commit()
        except sqlite3.Error as exc:
            raise state_error(exc, self.path, self.settings) from exc

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[RunRecord]:
        try:
            async with self.conn.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise state_error(exc, self.path, self.settings) from exc
        records = []
        for row in rows:
            data = dict(zip(_COLUMNS.split(", "), row, strict=True))
            data["error"] = json.loads(data["error"]) if data["error"] else None
            data["pending"] = json.loads(data["pending"]) if data["pending"] else []
            if data["status"] == "running" and not _alive(data["pid"]):
                data["status"] = "interrupted"
            records.append(RunRecord.model_validate(data))
        return records

    async def start(self, record: RunRecord) -> None:
        """Record a new run (``UserError`` ``RUN_EXISTS`` when the id is taken)."""
        try:
            await self._write(
                f"INSERT INTO moa_runs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, record.task, record.graph, "running", record.started, 0.0, record.items, 1, os.getpid(), record.plan, None, None),
            )
        except UserError as exc:
            if "UNIQUE" not in exc.message:
                raise
            raise UserError(
                ErrorCode.RUN_EXISTS, f"a run with id {record.run_id!r} already exists; continue it with `moa resume {record.run_id}` or pick another id"
            ) from None

    async def resumed(self, run_id: str) -> None:
        """Mark a run as running again, in this process (one more attempt)."""
        await self._write("UPDATE moa_runs SET status = 'running', attempts = attempts + 1, pid = ?, error = NULL WHERE run_id = ?", (os.getpid(), run_id))

    async def finish(
        self, run_id: str, status: RecordStatus, seconds: float, error: ErrorInfo | None = None, pending: list[Approval] | None = None
    ) -> None:
        """Record how an attempt ended (and what it waits for) and add its wall time."""
        waits = json.dumps([a.model_dump(mode="json") for a in pending]) if pending else None
        await self._write(
            "UPDATE moa_runs SET status = ?, seconds = seconds + ?, error = ?, pending = ?, pid = NULL WHERE run_id = ?",
            (status, round(seconds, 3), error.model_dump_json() if error else None, waits, run_id),
        )

    async def get(self, run_id: str) -> RunRecord | None:
        found = await self._read(f"SELECT {_COLUMNS} FROM moa_runs WHERE run_id = ?", (run_id,))
        return found[0] if found else None

    async def list(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        return await self._read(f"SELECT {_COLUMNS} FROM moa_runs ORDER BY started DESC LIMIT ?", (limit,))


@asynccontextmanager
async def open_index(settings: Settings) -> AsyncIterator[RunIndex]:
    """The run index in ``state_dir/runs.sqlite`` (created on first use)."""
    path = state_path(settings)
    conn = await connect(path, settings)
    try:
        try:
            await conn.executescript(f"PRAGMA journal_mode=WAL; {_SCHEMA};")
            async with conn.execute("SELECT name FROM pragma_table_info('moa_runs')") as cursor:
                if not any(row[0] == "pending" for row in await cursor.fetchall()):  # an index written before approvals existed
                    await conn.execute("ALTER TABLE moa_runs ADD COLUMN pending TEXT")
                    await conn.commit()
        except sqlite3.Error as exc:
            raise state_error(exc, path, settings) from exc
        yield RunIndex(conn, path, settings)
    finally:
        await conn.close()
