"""Removing recorded runs: their index rows, their checkpoints and what their ledger kept (saved
items, side-effect tool calls: :mod:`moa.workflow.ledger`) (``moa runs rm`` / ``moa runs prune``).

A run whose process is still working on it is never removed. Each row is deleted only if no
resume claimed the run since it was read (:meth:`RunIndex.remove`), then the run's checkpoints are
deleted; checkpoints left without a row (a removal killed half-way) are removed by the next prune.
SQLite keeps the freed space for later runs; ``vacuum=True`` gives it back to the file system
(it rewrites the whole file, and waits for other moa processes to stop writing).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from moa.errors import ErrorCode, UserError
from moa.settings import Settings
from moa.workflow.durable import LatestCheckpointSaver, open_checkpointer
from moa.workflow.index import FINISHED, RecordStatus, RunIndex, RunRecord, open_index, state_error, unknown_run
from moa.workflow.ledger import forget_orphans, forget_runs

STATUSES: tuple[RecordStatus, ...] = ("ok", "partial", "failed", "needs_human", "stopped", "error", "interrupted", "waiting")
"""Every status a run that no process works on can have."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Removed(BaseModel):
    """What a removal did."""

    runs: list[str] = Field(default_factory=list)
    """The runs removed (or, with ``dry_run``, that would be)."""
    skipped: list[str] = Field(default_factory=list)
    """Runs left alone: a process was working on them, or resumed them meanwhile."""
    orphans: int = 0
    """Runs whose checkpoints had no index row any more (removed too)."""
    vacuumed: bool = False


def parse_age(text: str) -> float:
    """Seconds in an age such as ``90s``, ``30m``, ``12h``, ``7d``, ``2w``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise UserError(ErrorCode.INVALID_INPUT, f"cannot read the age {text!r}; give a number and a unit: 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_statuses(text: str | Iterable[str]) -> tuple[RecordStatus, ...]:
    """Statuses from ``ok,failed`` (or a list); ``all``: every status a finished or stopped run can have."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if names == ["all"]:
        return STATUSES
    bad = [n for n in names if n not in STATUSES]
    if bad or not names:
        raise UserError(ErrorCode.INVALID_INPUT, f"unknown run status {', '.join(bad) or '(none)'}; use some of {', '.join(STATUSES)}, or all")
    return tuple(n for n in STATUSES if n in names)


async def _remove(index: RunIndex, settings: Settings, records: Sequence[RunRecord], *, dry_run: bool, vacuum: bool) -> Removed:
    done = Removed()
    for record in records:
        if record.status == "running":
            done.skipped.append(record.run_id)
        elif dry_run or await index.remove(record):
            done.runs.append(record.run_id)
        else:
            done.skipped.append(record.run_id)
    if dry_run:
        return done
    try:  # the removed runs' saved items and side-effect calls (in the index's database), and any left by a half-done removal
        await forget_runs(index.conn, done.runs)
        await forget_orphans(index.conn)
    except sqlite3.Error as exc:
        raise state_error(exc, index.path, settings) from exc
    async with open_checkpointer(settings) as saver:
        for run_id in done.runs:
            await saver.adelete_thread(run_id)
        if isinstance(saver, LatestCheckpointSaver) and settings.checkpoint_url is None:  # same file as the index: its rows are every run
            threads = await saver.athreads()  # before the rows: a run's row is written before its first checkpoint
            orphans = threads - {r.run_id for r in await index.list(limit=None)}
            for run_id in orphans:
                await saver.adelete_thread(run_id)
            done.orphans = len(orphans)
    if vacuum:
        try:
            await index.conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise state_error(exc, index.path, settings) from exc
        done.vacuumed = True
    return done


async def remove_runs(settings: Settings, run_ids: Sequence[str], *, dry_run: bool = False, vacuum: bool = False) -> Removed:
    """Remove the runs ``run_ids``. Unknown ids and runs a process is working on are refused
    before anything is removed (``unknown_run`` / ``run_active``)."""
    async with open_index(settings) as index:
        records = []
        for run_id in dict.fromkeys(run_ids):
            record = await index.get(run_id)
            if record is None:
                raise unknown_run(run_id, settings)
            if record.status == "running":
                raise UserError(
                    ErrorCode.RUN_ACTIVE, f"run {run_id} is still running in process {record.pid}; wait for it, or stop that process first (nothing was removed)"
                )
            records.append(record)
        return await _remove(index, settings, records, dry_run=dry_run, vacuum=vacuum)


async def prune_runs(
    settings: Settings, *, older_than: float, statuses: Sequence[RecordStatus] = FINISHED, dry_run: bool = False, vacuum: bool = False, now: float | None = None
) -> Removed:
    """Remove the runs started more than ``older_than`` seconds ago whose status is one of
    ``statuses`` (default: finished runs, which cannot be resumed)."""
    cutoff = (time.time() if now is None else now) - older_than
    async with open_index(settings) as index:
        records = [r for r in await index.list(limit=None) if r.started < cutoff and r.status in statuses]
        return await _remove(index, settings, records, dry_run=dry_run, vacuum=vacuum)
