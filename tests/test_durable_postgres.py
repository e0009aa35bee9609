"""Durable runs with checkpoints in a real PostgreSQL server (started for the test, on loopback).

Needs PostgreSQL's `initdb`/`pg_ctl` on PATH (Debian's `postgresql` package) and the `postgres`
extra (`pip install 'moa[postgres]'`); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_durable import ITEMS, PLAN, Crashing

import moa
from moa.testing import FakeModel

pytestmark = pytest.mark.real


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres_url(free_port: int) -> Iterator[str]:
    pytest.importorskip("langgraph.checkpoint.postgres")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    data = Path(tempfile.mkdtemp(prefix="moa-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "moa"]), check=True, capture_output=True)
    options = f"-p {free_port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://moa@127.0.0.1:{free_port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


async def test_a_crashed_run_resumes_from_postgres_checkpoints(postgres_url: str) -> None:
    settings = moa.load_settings(checkpoint_url=postgres_url)
    handler = Crashing()
    model = FakeModel(handler)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.arun("rate the reviews", input=ITEMS, plan=PLAN, slm=model, llm=model, run_id="pg1", settings=settings)
    before = len(model.requests)
    handler.armed = False
    result = await moa.aresume("pg1", slm=model, llm=model, settings=settings)
    assert result.status == "ok" and sorted(result.reused) == ["a", "b"]
    assert len(model.requests) - before == 2  # only c's two items ran again
    with sqlite3.connect(settings.state_dir / "runs.sqlite") as local:  # the index stays local, the checkpoints do not
        tables = {row[0] for row in local.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "moa_runs" in tables and "checkpoints" not in tables
