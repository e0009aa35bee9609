"""The run index: one row per run (id, task, graph, status, start, seconds, items, the options it
was started with) for ``moa runs`` and ``moa resume``.

It lives in ``runs.sqlite`` under ``state_dir``, next to the LangGraph checkpoints (which hold
the runs' state; see :mod:`moa.workflow.durable`). A row says ``running`` while a process works on the
run; a row left ``running`` by a process that no longer exists (killed) reads as ``interrupted``.
A resume claims a run with one conditional update (:meth:`RunIndex.claim`), so of two resumes of
the same run exactly one goes on. Readers (:func:`open_index` with ``write=False``) open a state
folder they cannot write read-only. :func:`state_error` turns SQLite's errors (locked, not a
database) into moa errors that say what to do.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiosqlite
from pydantic import BaseModel

from moa.errors import ErrorCode, ErrorInfo, MoaError, RunError, UserError
from moa.routing.approvals import Approval
from moa.settings import Settings
from moa.workflow.options import RunOptions, Tightening

STATE_FILE = "runs.sqlite"

RecordStatus = Literal["running", "interrupted", "ok", "partial", "failed", "error", "stopped", "waiting", "needs_human"]
FINISHED: tuple[RecordStatus, ...] = ("ok", "partial", "failed", "needs_human")
"""The statuses of runs that ended and cannot be resumed."""

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
    pending TEXT,
    options TEXT,
    tightened TEXT,
    stopped TEXT
)
"""
_NAMES = ("run_id", "task", "graph", "status", "started", "seconds", "items", "attempts", "pid", "plan", "error", "pending", "options", "tightened", "stopped")
_COLUMNS = ", ".join(_NAMES)
_ADDED = ("pending", "options", "tightened", "stopped")
"""Columns added after the first release: an older index gets them on first (writable) use."""
_JSON = ("error", "pending", "options", "tightened")


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
    options: RunOptions | None = None
    """The options the run is in force with, restored on resume (``None``: recorded before moa kept them)."""
    tightened: list[Tightening] = []
    """Options a resume made stricter, oldest first."""
    stopped: str | None = None
    """Which budget stopped the run (status ``stopped``), in words."""


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


async def close_connection(conn: aiosqlite.Connection) -> None:
    """Close ``conn`` so that it holds no lock afterwards, even when the run was cancelled mid-query.

    A statement a cancelled query left unfinished (its cursor kept alive by the cancellation's
    traceback) makes SQLite defer the close: the connection lingers as a "zombie" that keeps its
    write lock until the cursor is garbage-collected, and the next ``moa resume`` of the run waits
    ``state_lock_timeout`` for nothing. Rolling back first ends any open transaction and resets
    unfinished statements, so the lock goes with the close."""
    with suppress(sqlite3.Error, ValueError):
        await conn.rollback()
    await conn.close()


async def connect(path: Path, settings: Settings, *, autocommit: bool = False) -> aiosqlite.Connection:
    """Open (creating its folder) a SQLite state database in WAL mode; check that it is one.
    ``autocommit``: each statement commits itself (no ``commit()`` needed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            ErrorCode.STATE_UNAVAILABLE, f"cannot create the state folder {path.parent} ({exc}); set MOA_STATE_DIR to a writable folder"
        ) from exc
    try:
        conn = await aiosqlite.connect(path, timeout=settings.state_lock_timeout, **({"isolation_level": None} if autocommit else {}))
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


def read_only(path: Path) -> bool:
    """Whether the state database ``path`` can only be read here: its folder (where SQLite keeps
    its ``-wal`` and ``-shm`` files) or the file itself is not writable."""
    return path.exists() and not (os.access(path.parent, os.W_OK) and os.access(path, os.W_OK))


async def connect_read_only(path: Path, settings: Settings) -> aiosqlite.Connection:
    """Open an existing state database read-only (``mode=ro``). In a folder nobody can write, a
    database without its ``-shm`` file cannot be opened that way; it is then opened as immutable
    (nothing can be writing it)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    last: sqlite3.Error = sqlite3.OperationalError("unable to open database file")
    for extra in ("", "&immutable=1"):
        try:
            conn = await aiosqlite.connect(uri + extra, uri=True, timeout=settings.state_lock_timeout)
        except sqlite3.Error as exc:
            last = exc
            continue
        try:
            async with conn.execute("SELECT count(*) FROM sqlite_master") as cursor:
                await cursor.fetchone()
            return conn
        except sqlite3.Error as exc:
            await conn.close()
            last = exc
            if any(marker in str(exc) for marker in _CORRUPT):
                break
    raise state_error(last, path, settings) from last


async def tables(conn: aiosqlite.Connection) -> set[str]:
    """The names of the tables in a database."""
    async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        return {row[0] for row in await cursor.fetchall()}


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this machine (``None`` or ``<= 0``: no)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json(value: BaseModel | list[Any] | None) -> str | None:
    if value is None or value == []:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps([v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value])


class RunIndex:
    """The ``moa_runs`` table. Use :func:`open_index`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, settings: Settings, columns: Iterable[str] = _NAMES) -> None:
        self.conn = conn
        self.path = path
        self.settings = settings
        self.columns = tuple(c for c in _NAMES if c in set(columns))
        """The columns this index has (an older index opened read-only lacks the newer ones)."""

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement and commit; the number of rows it changed."""
        try:
            async with self.conn.execute(sql, params) as cursor:
                changed = cursor.rowcount
            await self.conn.commit()
        except sqlite3.Error as exc:
            raise state_error(exc, self.path, self.settings) from exc
        return changed

    async def _read(self, where: str = "", params: tuple[Any, ...] = ()) -> list[RunRecord]:
        try:
            async with self.conn.execute(f"SELECT {', '.join(self.columns)} FROM moa_runs {where}", params) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise state_error(exc, self.path, self.settings) from exc
        records = []
        for row in rows:
            data = dict(zip(self.columns, row, strict=True))
            for name in _JSON:
                if data.get(name) is not None:
                    data[name] = json.loads(data[name])
                else:
                    data.pop(name, None)
            if data["status"] == "running" and not process_alive(data["pid"]):
                data["status"] = "interrupted"
            records.append(RunRecord.model_validate(data))
        return records

    async def start(self, record: RunRecord) -> None:
        """Record a new run (``UserError`` ``RUN_EXISTS`` when the id is taken)."""
        try:
            await self._write(
                f"INSERT INTO moa_runs ({_COLUMNS}) VALUES ({', '.join('?' * len(_NAMES))})",
                (
                    record.run_id, record.task, record.graph, "running", record.started, 0.0, record.items, 1, os.getpid(),
                    record.plan, None, None, _json(record.options), None, None,
                ),
            )  # fmt: skip
        except UserError as exc:
            if "UNIQUE" not in exc.message:
                raise
            raise UserError(
                ErrorCode.RUN_EXISTS, f"a run with id {record.run_id!r} already exists; continue it with `moa resume {record.run_id}` or pick another id"
            ) from None

    async def claim(self, record: RunRecord, options: RunOptions | None = None, tightened: list[Tightening] | None = None) -> None:
        """Mark ``record``'s run as running again, in this process (one more attempt), with the
        options now in force and what this attempt tightened.

        One conditional update: it changes the row only if no one claimed the run since ``record``
        was read (same attempt count and process), so of two resumes racing for a run exactly one
        wins; the other gets ``UserError`` ``RUN_ACTIVE``."""
        changed = await self._write(
            "UPDATE moa_runs SET status = 'running', attempts = attempts + 1, pid = ?, error = NULL, options = COALESCE(?, options), "
            "tightened = COALESCE(?, tightened) WHERE run_id = ? AND attempts = ? AND pid IS ?",
            (os.getpid(), _json(options), _json([*record.tightened, *tightened]) if tightened else None, record.run_id, record.attempts, record.pid),
        )
        if changed != 1:
            now = await self.get(record.run_id)
            holder = f" (process {now.pid})" if now is not None and now.pid else ""
            raise UserError(
                ErrorCode.RUN_ACTIVE,
                f"run {record.run_id} was just resumed by another process{holder}; wait for it (`moa runs show {record.run_id}`), "
                "or stop that process first",
            )

    async def finish(
        self,
        run_id: str,
        status: RecordStatus,
        seconds: float,
        error: ErrorInfo | None = None,
        pending: list[Approval] | None = None,
        stopped: str | None = None,
    ) -> None:
        """Record how an attempt ended (and what it waits for) and add its wall time."""
        await self._write(
            "UPDATE moa_runs SET status = ?, seconds = seconds + ?, error = ?, pending = ?, stopped = ?, pid = NULL WHERE run_id = ?",
            (status, round(seconds, 3), _json(error), _json(pending), stopped, run_id),
        )

    async def remove(self, record: RunRecord) -> bool:
        """Delete ``record``'s row unless the run was claimed since it was read (then ``False``)."""
        return await self._write("DELETE FROM moa_runs WHERE run_id = ? AND attempts = ? AND pid IS ?", (record.run_id, record.attempts, record.pid)) == 1

    async def get(self, run_id: str) -> RunRecord | None:
        found = await self._read("WHERE run_id = ?", (run_id,))
        return found[0] if found else None

    async def list(self, limit: int | None = 20) -> list[RunRecord]:
        """The latest runs, newest first (``limit=None``: all of them)."""
        return await self._read("ORDER BY started DESC LIMIT ?", (-1 if limit is None else limit,))


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.executescript(f"PRAGMA journal_mode=WAL; {_SCHEMA};")
    async with conn.execute("SELECT name FROM pragma_table_info('moa_runs')") as cursor:
        have = {row[0] for row in await cursor.fetchall()}
    for column in _ADDED:  # an index written by an older moa
        if column not in have:
            await conn.execute(f"ALTER TABLE moa_runs ADD COLUMN {column} TEXT")
    await conn.commit()


@asynccontextmanager
async def open_index(settings: Settings, *, write: bool = True) -> AsyncIterator[RunIndex]:
    """The run index in ``state_dir/runs.sqlite`` (created on first use).

    ``write=False`` (listing and showing runs): a state folder or file this process cannot write
    is opened read-only, and a missing database reads as an empty index (nothing is created)."""
    path = state_path(settings)
    if not write and (not path.exists() or read_only(path)):
        async with _read_index(path, settings) as index:
            yield index
        return
    conn = await connect(path, settings)
    try:
        try:
            await _migrate(conn)
        except sqlite3.Error as exc:
            raise state_error(exc, path, settings) from exc
        yield RunIndex(conn, path, settings)
    finally:
        await close_connection(conn)


@asynccontextmanager
async def _read_index(path: Path, settings: Settings) -> AsyncIterator[RunIndex]:
    conn = await connect_read_only(path, settings) if path.exists() else await aiosqlite.connect(":memory:")
    try:
        try:
            if "moa_runs" in await tables(conn):
                async with conn.execute("SELECT name FROM pragma_table_info('moa_runs')") as cursor:
                    columns = [row[0] for row in await cursor.fetchall()]
            else:  # a database without runs (or none at all): an empty index
                await conn.close()
                conn = await aiosqlite.connect(":memory:")
                await conn.executescript(_SCHEMA)
                columns = list(_NAMES)
        except sqlite3.Error as exc:
            raise state_error(exc, path, settings) from exc
        yield RunIndex(conn, path, settings, columns)
    finally:
        await conn.close()
