"""Reading runs from a state folder this process cannot write: `moa runs list/show/export` and
`moa.apending` open SQLite read-only (``mode=ro``), and change nothing.

Root ignores permission bits, so "cannot write" is simulated with ``os.access`` for the choice of
the read-only path, and made real with ``chattr +i`` (immutable: even root cannot write) when the
file system and privileges allow it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.immutable import chattr, immutable  # noqa: F401  (immutable is a fixture)

import moa
from moa.cli.main import app
from moa.testing import FakeModel
from moa.workflow import index as run_index
from moa.workflow.index import state_path

GOOD = '{"label":"positive","confidence":0.9}'
runner = CliRunner()


def _finished_and_waiting() -> tuple[str, str]:
    model = FakeModel([GOOD])
    done = moa.run("rate", input=["lovely"], plan={"subtasks": [{"id": "s", "agent": "sentiment"}]}, slm=model, llm=model, run_id="done")
    waiting = moa.run("rate", input=["lovely"], plan={"subtasks": [{"id": "w", "agent": "sentiment", "approve": True}]}, slm=model, llm=model, run_id="wait")
    return done.run_id, waiting.run_id


def _reads_work(done: str, waiting: str) -> None:
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)} == {done: "ok", waiting: "waiting"}
    shown = runner.invoke(app, ["runs", "show", done, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["subtasks"][0]["status"] == "ok"
    exported = runner.invoke(app, ["runs", "export", done])
    assert exported.exit_code == 0 and json.loads(exported.stdout)["results"]["s"]["items"][0]["item"] == "lovely"
    assert [a.id for a in moa.pending(waiting)] == ["w"]


def test_a_state_folder_that_is_not_writable_is_read_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    done, waiting = _finished_and_waiting()
    db = state_path(moa.load_settings())
    opened: list[str] = []
    connect = run_index.aiosqlite.connect

    def recording(database: str | Path, *args: object, **kwargs: object) -> object:
        opened.append(str(database))
        return connect(database, *args, **kwargs)  # type: ignore[arg-type]

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) in (db, db.parent) else real_access(path, mode, **kw))
    monkeypatch.setattr(run_index.aiosqlite, "connect", recording)

    _reads_work(done, waiting)

    assert opened and all(name.startswith("file:") and "mode=ro" in name for name in opened if name != ":memory:")


def test_reading_a_state_folder_that_does_not_exist_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_STATE_DIR", str(tmp_path / "nowhere"))
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    shown = runner.invoke(app, ["runs", "show", "x"])
    assert shown.exit_code == 2 and "unknown_run" in shown.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_really_read_only_state_folder_can_be_read(immutable: list[Path]) -> None:
    done, waiting = _finished_and_waiting()
    db = state_path(moa.load_settings())
    before = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()}
    assert not any(name.endswith("-wal") for name in before)  # closed cleanly: no -wal or -shm to read through
    for path in [*(p for p in db.parent.iterdir() if p.is_file()), db.parent]:
        chattr(path, immutable)
    assert not os.access(db.parent, os.W_OK)

    _reads_work(done, waiting)
    resumed = runner.invoke(app, ["resume", waiting, "--approve", "w"])
    assert resumed.exit_code == 2 and "state_unavailable" in resumed.stderr and "writable" in resumed.stderr

    assert {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()} == before


def test_a_read_only_state_file_in_a_writable_folder_can_be_read(immutable: list[Path]) -> None:
    done, waiting = _finished_and_waiting()
    db = state_path(moa.load_settings())
    chattr(db, immutable)
    _reads_work(done, waiting)
    assert asyncio.run(moa.apending(waiting)) != []
