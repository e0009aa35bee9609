"""Durable runs: the LangGraph checkpointer of every run, and reading a run's saved state.

Every run is checkpointed under its run id (LangGraph ``thread_id`` = run id): the state after
each graph step, and each subtask's result the moment it finishes (see :mod:`moa.workflow.scheduler`).
What happens inside a subtask before it finishes (its finished items, its side-effect tool calls)
is kept by the run ledger (:mod:`moa.workflow.ledger`), in the run index's SQLite file.
Checkpoints go to ``runs.sqlite`` under ``state_dir`` (LangGraph's SQLite saver), to another
SQLite file, or to Postgres (``checkpoint_url = "postgresql://..."``, ``pip install 'moa[postgres]'``).

LangGraph's SQLite saver stores every channel value in every checkpoint, so a run's input items
were stored once per graph step. moa resumes from the latest checkpoint only and shows no
history, so in SQLite it keeps only each run's latest checkpoint (:class:`LatestCheckpointSaver`);
Postgres stores each channel version once anyway and keeps its history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel, Field

from moa.errors import ErrorCode, MoaError, UserError
from moa.settings import Settings
from moa.usage import Usage
from moa.workflow.index import close_connection, connect, connect_read_only, read_only, state_error, state_path, tables
from moa.workflow.langgraph import RETURN_CHANNEL
from moa.workflow.plan import Plan
from moa.workflow.planner import PlannerInfo
from moa.workflow.results import SubtaskResult

_POSTGRES = ("postgres://", "postgresql://")


def _status(result: Any) -> Any:
    return result.get("status") if isinstance(result, dict) else getattr(result, "status", None)


def serializer() -> JsonPlusSerializer:
    """LangGraph's serializer, allowed to rebuild moa's state types (and nothing unexpected)."""
    return JsonPlusSerializer(allowed_msgpack_modules=[Plan, PlannerInfo, SubtaskResult, Usage, ErrorCode])


def checkpoint_location(settings: Settings) -> str:
    """Where the checkpoints of ``settings`` go (a file path or a Postgres URL)."""
    url = settings.checkpoint_url
    if url is None:
        return str(state_path(settings))
    return url if url.startswith(_POSTGRES) else url.removeprefix("sqlite://")


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[BaseCheckpointSaver]:  # type: ignore[type-arg]
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError as exc:
        raise UserError(
            ErrorCode.BAD_CONFIG,
            "checkpoint_url is a Postgres URL but the Postgres checkpointer is not installed; "
            "pip install 'moa[postgres]' (or unset MOA_CHECKPOINT_URL to use SQLite)",
        ) from exc
    import psycopg

    try:
        async with AsyncPostgresSaver.from_conn_string(url, serde=serializer()) as saver:
            await saver.setup()
            yield saver
    except psycopg.OperationalError as exc:
        raise UserError(
            ErrorCode.BAD_CONFIG, f"cannot reach the Postgres checkpoint database ({str(exc).strip()}); start it or fix MOA_CHECKPOINT_URL"
        ) from exc


class LatestCheckpointSaver(AsyncSqliteSaver):
    """LangGraph's SQLite saver, keeping only the latest checkpoint of each run (and its writes).

    A new checkpoint of a run is committed first, then the run's older checkpoints and their
    writes are deleted, so a kill at any moment leaves the latest checkpoint on disk. A write that
    arrives late for a replaced checkpoint is already part of the newer one; the next checkpoint
    removes it."""

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        where = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id != ?"
        key = (str(saved["configurable"]["thread_id"]), saved["configurable"]["checkpoint_ns"], checkpoint["id"])
        async with self.lock, self.conn.cursor() as cursor:
            await cursor.execute(f"DELETE FROM writes WHERE {where}", key)
            await cursor.execute(f"DELETE FROM checkpoints WHERE {where}", key)
            await self.conn.commit()
        return saved

    async def athreads(self) -> set[str]:
        """The run ids that have checkpoints here."""
        async with self.conn.execute("SELECT DISTINCT thread_id FROM checkpoints UNION SELECT DISTINCT thread_id FROM writes") as cursor:
            return {row[0] for row in await cursor.fetchall()}


async def _connect(path: Path, settings: Settings, *, write: bool) -> aiosqlite.Connection:
    """A connection to the SQLite checkpoint file ``path``: read-only when only reading and the
    file cannot be written, an empty in-memory store when only reading and nothing is saved yet."""
    if write or (path.exists() and not read_only(path)):
        return await connect(path, settings)
    if path.exists():
        conn = await connect_read_only(path, settings)
        try:
            if {"checkpoints", "writes"} <= await tables(conn):
                return conn
        except sqlite3.Error as exc:
            await conn.close()
            raise state_error(exc, path, settings) from exc
        await conn.close()
    return await aiosqlite.connect(":memory:")


@asynccontextmanager
async def open_checkpointer(settings: Settings, *, write: bool = True) -> AsyncIterator[BaseCheckpointSaver]:  # type: ignore[type-arg]
    """The checkpointer ``settings`` select, set up and ready; closed on exit.

    ``write=False`` (reading a run's state): a SQLite file this process cannot write is opened
    read-only, and a missing one reads as holding no checkpoints (nothing is created)."""
    location = checkpoint_location(settings)
    if location.startswith(_POSTGRES):
        async with _postgres(location) as saver:
            yield saver
        return
    path = Path(location)
    conn = await _connect(path, settings, write=write)
    try:
        saver = LatestCheckpointSaver(conn, serde=serializer())
        try:
            await saver.setup()  # on a read-only file the tables exist: it only reads (and notes an old layout)
        except sqlite3.Error as exc:
            raise state_error(exc, path, settings) from exc
        yield saver
    finally:
        await close_connection(conn)


def translate(exc: BaseException, settings: Settings) -> MoaError | None:
    """The moa error for a storage failure during a run (``None``: not one)."""
    if isinstance(exc, sqlite3.Error):
        return state_error(exc, checkpoint_location(settings), settings)
    return None


class RunSnapshot(BaseModel):
    """What a run's checkpoint holds: its plan and the results of the subtasks that finished."""

    task: str | None = None
    plan: Plan | None = None
    planner: PlannerInfo | None = None
    results: dict[str, SubtaskResult] = Field(default_factory=dict)
    usage: list[Usage] = Field(default_factory=list)
    answer: str | None = None
    synthesizer: str | None = None
    reused: list[str] = Field(default_factory=list)
    items: int | None = None
    """How many input items the run has (``None``: not in the checkpoint yet)."""
    step: int | None = None
    """The LangGraph step of the latest checkpoint."""


async def load_snapshot(saver: BaseCheckpointSaver, run_id: str) -> RunSnapshot | None:  # type: ignore[type-arg]
    """The latest checkpoint of ``run_id`` plus the subtask results saved since (``None``: none)."""
    saved = await saver.aget_tuple({"configurable": {"thread_id": run_id, "checkpoint_ns": ""}})
    if saved is None:
        return None
    values: dict[str, Any] = saved.checkpoint.get("channel_values", {})
    results = dict(values.get("results") or {})
    usage = list(values.get("usage") or [])
    for _task, channel, value in saved.pending_writes or []:
        if channel == RETURN_CHANNEL and isinstance(value, dict) and isinstance(value.get("results"), dict):
            for sid, result in value["results"].items():  # a subtask that went on after approval: its last result wins
                if sid not in results or _status(results[sid]) == "waiting":
                    results[sid] = result
            usage += value.get("usage") or []
    return RunSnapshot(
        task=values.get("task"),
        plan=values.get("plan"),
        planner=values.get("planner"),
        results=results,
        usage=usage,
        answer=values.get("answer"),
        synthesizer=values.get("synthesizer"),
        reused=list(values.get("reused") or []),
        items=len(values["items"]) if isinstance(values.get("items"), list) else None,
        step=(saved.metadata or {}).get("step"),
    )
