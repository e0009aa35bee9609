"""Killing `moa serve` during runs: every accepted run ends after a restart on the same state
directory, none disappears.

The server (`support/serve_fake.py`: the real application, 2 workers, a fake model that takes a
little while per call) accepts a batch of runs; once a few have finished it is SIGKILLed with
runs running and queued. A new server on the same state directory resumes them at start-up: from
their checkpoint, or from the start when they never reached one (docs/server.md, "Restarts").
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import handler  # noqa: E402
from moa.models.base import GenerateRequest  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.server.runs import MAX_RECOVERIES  # noqa: E402
from moa.server.spool import Accepted, Spool  # noqa: E402
from moa.settings import load_settings  # noqa: E402
from moa.testing import FakeModel  # noqa: E402
from support.chroma_server import free_port  # noqa: E402
from support.moa_process import moa_env  # noqa: E402

KEY = "moa-restart-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FINAL = {"ok", "partial", "failed", "stopped", "interrupted", "needs_human", "error"}
SERVER = Path(__file__).parent / "support" / "serve_fake.py"
RUNS = 16


@contextmanager
def server(tmp_path: Path, log: Path, delay: float) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**moa_env(tmp_path), "MOA_API_KEYS": f"tests:{hash_key(KEY)}"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, str(SERVER), str(port), str(delay)], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60) as http:
            for _ in range(1200):  # until it answers (at most ~60 s), or it exited
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited: {log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.05)
            yield http, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def statuses(http: httpx.Client, ids: list[str]) -> dict[str, str]:
    found = {}
    for run_id in ids:
        got = http.get(f"/v1/runs/{run_id}")
        assert got.status_code == 200, got.text  # never unknown_run: no accepted run disappears
        found[run_id] = got.json()["status"]
    return found


@pytest.mark.slow  # two server processes
def test_a_killed_server_resumes_every_accepted_run_at_its_next_start(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    items = {n: [f"item {n}-{i} is great" for i in range(3)] for n in range(RUNS)}
    with server(tmp_path, log, delay=0.05) as (http, proc):
        ids = []
        for n in range(RUNS):
            r = http.post("/v1/runs", json={"task": "classify the sentiment", "input": items[n]})
            assert r.status_code == 202, r.text
            ids.append(r.json()["run_id"])
        for _ in range(6000):  # until two runs finished (the others run or wait in the queue)
            before = statuses(http, ids)
            if sum(s in FINAL for s in before.values()) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    unfinished = [run_id for run_id, status in before.items() if status not in FINAL]
    assert unfinished, "the server finished every run before it was killed; nothing was tested"
    accepted = tmp_path / "state" / "server" / "accepted"
    assert {p.stem for p in accepted.glob("*.json")} >= set(unfinished)  # what was accepted and not settled is on disk

    with server(tmp_path, log, delay=0.0) as (http, _):
        for _ in range(6000):
            after = statuses(http, ids)
            if all(s in FINAL for s in after.values()):
                break
            time.sleep(0.02)
        recovered = {}
        for run_id in unfinished:
            events = http.get(f"/v1/runs/{run_id}/events", timeout=60).text
            recovered[run_id] = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ") and '"attempt"' in line]
        results = {run_id: http.get(f"/v1/runs/{run_id}").json()["result"] for run_id in ids}

    origin = [events[0]["from"] for events in recovered.values() if events]
    figures = {
        "accepted": RUNS, "unfinished_at_kill": len(unfinished), "resumed_from_checkpoint": origin.count("checkpoint"),
        "started_again": origin.count("start"), "finished": sum(s == "ok" for s in after.values()), "lost": RUNS - len(after),
    }  # fmt: skip
    print(f"kill/restart: {figures}")
    assert after == {run_id: "ok" for run_id in ids}, after  # every run ends, none lost
    assert all(recovered[run_id] for run_id in unfinished)  # each published `recovered` at the new server's start
    for n, run_id in enumerate(ids):
        assert [i["item"] for i in results[run_id]["results"]["s1"]["items"]] == items[n]  # not duplicated, not mixed up
    assert not list(accepted.glob("*.json"))  # all settled: the journal is empty


# --- in one process: a client's cancel is final, a server's stop is resumed ----------------------


def make_app(model: FakeModel) -> Any:
    return create_app(load_settings(), config=ServerConfig(max_runs=1), keys=Keyring([ApiKey(name="t", sha256=hash_key(KEY))]), slm=model, llm=model)


async def wait_for(http: httpx.AsyncClient, run_id: str, until: set[str]) -> dict[str, Any]:
    for _ in range(3000):
        state = (await http.get(f"/v1/runs/{run_id}")).json()
        if state["status"] in until:
            return dict(state)
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} stayed {state['status']}")


async def test_a_cancelled_run_stays_interrupted_but_a_stopped_server_resumes_its_runs() -> None:
    hold = asyncio.Event()

    def slow(request: GenerateRequest) -> float:  # every call waits until the second server
        return 0.0 if hold.is_set() else 30.0

    first = make_app(FakeModel(handler, chat=True, delay=slow))
    spool = first.state.manager.spool
    transport = httpx.ASGITransport(app=first)
    async with httpx.AsyncClient(transport=transport, base_url="http://moa", headers=AUTH) as http:
        cancelled = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["a"]})).json()["run_id"]
        await wait_for(http, cancelled, {"running"})
        assert (await http.post(f"/v1/runs/{cancelled}/cancel")).json()["status"] == "interrupted"
        stopped = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["b", "c"]})).json()["run_id"]
        queued = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["d"]})).json()["run_id"]
        await wait_for(http, stopped, {"running"})
    await first.state.manager.aclose()  # the server stops: what it worked on is interrupted, not forgotten
    assert {e.run_id for e in spool.orphans()} == {stopped, queued}

    hold.set()
    second = make_app(FakeModel(handler, chat=True))
    assert sorted(await second.state.manager.recover()) == sorted([stopped, queued])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://moa", headers=AUTH) as http:
        done = {run_id: await wait_for(http, run_id, FINAL) for run_id in (stopped, queued)}
        gone = await http.get(f"/v1/runs/{cancelled}")
        assert gone.json().get("status") == "interrupted", gone.text  # a client's cancel is final
    await second.state.manager.aclose()
    assert {run_id: state["status"] for run_id, state in done.items()} == {stopped: "ok", queued: "ok"}
    assert [i["item"] for i in done[stopped]["result"]["results"]["s1"]["items"]] == ["b", "c"]
    assert spool.orphans() == []


async def test_a_run_that_keeps_killing_servers_is_not_resumed_forever() -> None:
    settings = load_settings()
    spool = Spool(settings)
    spool.put(Accepted(run_id="crashy", graph="plan_execute", task="classify the sentiment", items=["a"], recoveries=MAX_RECOVERIES))
    app = make_app(FakeModel(handler, chat=True))
    assert await app.state.manager.recover() == []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moa", headers=AUTH) as http:
        state = (await http.get("/v1/runs/crashy")).json()
    await app.state.manager.aclose()
    assert state["status"] == "error" and state["error"]["code"] == "run_not_resumable"
    assert "moa resume crashy" in state["error"]["message"] and spool.orphans() == []
