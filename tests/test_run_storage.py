"""What a run leaves in ``runs.sqlite`` (its input once, only its latest checkpoint), and removing
runs: `moa runs rm` and `moa runs prune`. Fake models, real SQLite state."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.testing import FakeModel
from moa.workflow.durable import serializer
from moa.workflow.index import open_index, state_path
from moa.workflow.prune import parse_age, prune_runs, remove_runs

GOOD = '{"label":"positive","confidence":0.9}'
CHAIN = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "b", "agent": "sentiment", "depends_on": ["a"]}, {"id": "c", "agent": "sentiment", "depends_on": ["b"]}]}
runner = CliRunner()


def _db() -> sqlite3.Connection:
    return sqlite3.connect(state_path(moa.load_settings()))


def _checkpoint_rows(run_id: str) -> tuple[int, int]:
    with _db() as conn:
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (run_id,)).fetchone()[0]
        writes = conn.execute("SELECT count(*) FROM writes WHERE thread_id = ?", (run_id,)).fetchone()[0]
    return checkpoints, writes


async def _set_row(run_id: str, **columns: Any) -> None:
    async with open_index(moa.load_settings()) as index:
        sets = ", ".join(f"{k} = ?" for k in columns)
        await index.conn.execute(f"UPDATE moa_runs SET {sets} WHERE run_id = ?", (*columns.values(), run_id))
        await index.conn.commit()


def _run(run_id: str) -> moa.RunResult:
    model = FakeModel([GOOD])
    return moa.run("rate", input=["lovely", "rude"], plan={"subtasks": [{"id": "s", "agent": "sentiment"}]}, slm=model, llm=model, run_id=run_id)


async def _arun(run_id: str) -> moa.RunResult:
    model = FakeModel([GOOD])
    return await moa.arun("rate", input=["lovely", "rude"], plan={"subtasks": [{"id": "s", "agent": "sentiment"}]}, slm=model, llm=model, run_id=run_id)


# --- what a run stores --------------------------------------------------------------------


def test_a_run_keeps_its_input_once_and_only_its_latest_checkpoint(tmp_path: Path) -> None:
    item = "word " * 40_000  # one 200 kB line
    path = tmp_path / "big.txt"
    path.write_text(item + "\n")
    model = FakeModel([GOOD])
    result = moa.run("rate", input=path, plan=CHAIN, slm=model, llm=model, settings=moa.load_settings(cache=False), run_id="big")
    assert result.status == "ok"

    assert _checkpoint_rows("big") == (1, 0)
    with _db() as conn:
        (kind, blob), = conn.execute("SELECT type, checkpoint FROM checkpoints WHERE thread_id = 'big'").fetchall()
    values = serializer().loads_typed((kind, blob))["channel_values"]
    assert values["items"] == [item.strip()]
    # the state once: the input, and each subtask's result of it (the item and what it passes on)
    assert len(blob) < (1 + 2 * len(CHAIN["subtasks"])) * len(item) * 1.05


def test_a_stored_run_still_resumes_after_its_older_checkpoints_are_gone() -> None:
    armed = {"on": True}

    def answer(request: moa.GenerateRequest) -> str:
        if armed["on"] and "calm, urgent" in moa.testing.prompt_of(request):
            raise RuntimeError("simulated crash")
        return '{"label":"calm","confidence":0.9}' if "calm, urgent" in moa.testing.prompt_of(request) else GOOD

    model = FakeModel(answer)
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "c", "agent": "sentiment", "options": {"labels": ["calm", "urgent"]}, "depends_on": ["a"]}]}
    with pytest.raises(RuntimeError):
        moa.run("rate", input=["x", "y"], plan=plan, slm=model, llm=model, run_id="r")
    assert _checkpoint_rows("r")[0] == 1
    armed["on"] = False
    result = moa.resume("r", slm=model, llm=model)
    assert result.status == "ok" and result.reused == ["a"] and _checkpoint_rows("r") == (1, 0)


# --- moa runs rm ------------------------------------------------------------------------------


def test_rm_removes_the_row_and_the_checkpoints() -> None:
    _run("one"), _run("two")
    result = runner.invoke(app, ["runs", "rm", "one", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"] == ["one"]
    assert _checkpoint_rows("one") == (0, 0) and _checkpoint_rows("two")[0] == 1
    assert [r["run_id"] for r in json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)] == ["two"]
    gone = runner.invoke(app, ["resume", "one"])
    assert gone.exit_code == 2 and "unknown_run" in gone.stderr


def test_rm_with_an_unknown_or_running_run_removes_nothing() -> None:
    _run("one"), _run("busy")
    unknown = runner.invoke(app, ["runs", "rm", "one", "nope"])
    assert unknown.exit_code == 2 and "unknown_run" in unknown.stderr
    import asyncio

    asyncio.run(_set_row("busy", status="running", pid=os.getpid()))
    busy = runner.invoke(app, ["runs", "rm", "one", "busy"])
    assert busy.exit_code == 2 and "run_active" in busy.stderr and "nothing was removed" in busy.stderr
    assert _checkpoint_rows("one")[0] == 1 and len(json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)) == 2


async def test_a_run_resumed_meanwhile_is_not_removed() -> None:
    await _arun("r")
    async with open_index(moa.load_settings()) as index:
        record = await index.get("r")
        assert record is not None
        await index.claim(record)  # another process resumed it after the row was read
        assert await index.remove(record) is False
    assert _checkpoint_rows("r")[0] == 1


# --- moa runs prune -------------------------------------------------------------------------


async def test_prune_removes_old_runs_of_the_given_statuses() -> None:
    day = 86_400
    now = time.time()
    for run_id, status, age in [("old-ok", "ok", 10), ("old-failed", "failed", 10), ("old-waiting", "waiting", 10), ("old-error", "error", 10), ("new-ok", "ok", 1)]:
        await _arun(run_id)
        await _set_row(run_id, status=status, started=now - age * day)
    settings = moa.load_settings()

    dry = await prune_runs(settings, older_than=7 * day, dry_run=True)
    assert sorted(dry.runs) == ["old-failed", "old-ok"] and _checkpoint_rows("old-ok")[0] == 1

    done = await prune_runs(settings, older_than=7 * day)
    assert sorted(done.runs) == ["old-failed", "old-ok"]
    assert _checkpoint_rows("old-ok") == (0, 0) and _checkpoint_rows("old-waiting")[0] == 1  # resumable runs are kept by default

    more = await prune_runs(settings, older_than=7 * day, statuses=["error", "waiting"])
    assert sorted(more.runs) == ["old-error", "old-waiting"]
    async with open_index(settings) as index:
        assert [r.run_id for r in await index.list()] == ["new-ok"]


async def test_prune_never_removes_a_running_run_and_removes_orphaned_checkpoints() -> None:
    await _arun("busy"), await _arun("orphan")
    await _set_row("busy", status="running", pid=os.getpid(), started=0)
    with _db() as conn:
        conn.execute("DELETE FROM moa_runs WHERE run_id = 'orphan'")  # as if a removal was killed half-way
    done = await prune_runs(moa.load_settings(), older_than=0, statuses=["ok", "interrupted", "error"])
    assert done.runs == [] and done.orphans == 1
    assert _checkpoint_rows("orphan") == (0, 0) and _checkpoint_rows("busy")[0] == 1


def test_prune_with_vacuum_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 100_000 + "\n")
    model = FakeModel([GOOD])
    moa.run("rate", input=path, plan=CHAIN, slm=model, llm=model, settings=moa.load_settings(cache=False), run_id="big")
    db = state_path(moa.load_settings())
    with _db() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.stat().st_size
    result = runner.invoke(app, ["runs", "prune", "--older-than", "0s", "--vacuum"])
    assert result.exit_code == 0, result.output
    assert "removed 1 run(s): big" in result.stdout and "VACUUM" in result.stdout
    with _db() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size < before / 10


@pytest.mark.parametrize(("args", "needle"), [(["--older-than", "7 days"], "cannot read the age"), (["--older-than", "7d", "--status", "done"], "unknown run status")])
def test_prune_arguments_are_checked(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["runs", "prune", *args])
    assert result.exit_code == 2 and needle in result.stderr


def test_ages() -> None:
    assert [parse_age(a) for a in ("90s", "30m", "12h", "7d", "2w", "1.5h")] == [90, 1800, 43200, 604800, 1209600, 5400]
    with pytest.raises(UserError) as info:
        parse_age("-1d")
    assert info.value.code == ErrorCode.INVALID_INPUT


async def test_remove_runs_of_an_unknown_id() -> None:
    with pytest.raises(UserError) as info:
        await remove_runs(moa.load_settings(), ["nope"])
    assert info.value.code == ErrorCode.UNKNOWN_RUN
