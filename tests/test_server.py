"""`moa serve`'s run API with fake models: start, read, events, approvals, cancel, the worker
pool, health; keys, limits and JSON errors (the fault cases); and a bounded load on a real
uvicorn server (every run ends, none lost or duplicated)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import drive, fake, serving  # noqa: E402
from moa.cli import app as cli_app  # noqa: E402
from moa.errors import ErrorCode, RunError  # noqa: E402
from moa.models.base import ModelBackend  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, create_key, hash_key, keys_path  # noqa: E402
from moa.settings import Settings, load_settings  # noqa: E402
from moa.testing import FakeModel, unreachable  # noqa: E402
from moa.workflow.view import list_runs, load_result  # noqa: E402

KEY = "moa-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
KEYS = Keyring([ApiKey(name="tests", sha256=hash_key(KEY))])
FINAL = {"ok", "partial", "failed", "stopped", "interrupted", "needs_human", "error"}


def make_app(model: ModelBackend | None = None, settings: Settings | None = None, **config: Any) -> Any:
    model = model or fake()
    return create_app(settings or load_settings(), config=ServerConfig(**config), keys=KEYS, slm=model, llm=model)


@pytest.fixture
async def app() -> AsyncIterator[Any]:
    application = make_app()
    yield application
    await application.state.manager.aclose()


def client(application: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://moa", headers=AUTH if headers is None else headers)


async def settled(http: httpx.AsyncClient, run_id: str, until: set[str] = FINAL | {"waiting"}) -> dict[str, Any]:
    for _ in range(2000):
        got = await http.get(f"/v1/runs/{run_id}")
        assert got.status_code == 200, got.text
        if got.json()["status"] in until:
            return dict(got.json())
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} did not settle")


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def test_a_run_is_accepted_then_ends_with_the_export_json(app: Any) -> None:
    async with client(app) as http:
        r = await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great", "fine"]})
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
        run_id = r.json()["run_id"]
        assert r.headers["location"] == f"/v1/runs/{run_id}"
        state = await settled(http, run_id)
    assert state["status"] == "ok"
    result = state["result"]
    assert result["answer"] == "Every item is positive." and result["plan"]["subtasks"][0]["agent"] == "sentiment"
    assert [i["item"] for i in result["results"]["s1"]["items"]] == ["great", "fine"]
    exported = (await load_result(load_settings(), run_id)).model_dump(mode="json")  # what `moa runs export` prints
    assert {k: v for k, v in exported.items() if k != "seconds"} == {k: v for k, v in result.items() if k != "seconds"}


async def test_a_late_subscriber_gets_every_event_and_the_final_state(app: Any) -> None:
    async with client(app) as http:
        run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great"]})).json()["run_id"]
        await settled(http, run_id)
        r = await http.get(f"/v1/runs/{run_id}/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    kinds = [k for k, _ in events_of(r.text) if k != "model_call"]
    assert kinds[:3] == ["queued", "started", "planned"] and kinds[-1] == "finished"
    assert {"subtask_started", "item_done", "subtask_done"} <= set(kinds) and "model_call" in r.text
    final = events_of(r.text)[-1][1]
    assert final["status"] == "ok" and final["result"]["run_id"] == run_id


async def test_events_stream_live_on_a_real_server() -> None:
    application = make_app(fake(delay=0.05))
    with serving(application) as url:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
            run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["a", "b"]})).json()["run_id"]
            async with http.stream("GET", f"/v1/runs/{run_id}/events") as stream:
                text = "".join([chunk async for chunk in stream.aiter_text()])
            seen = events_of(text)
            ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
            again = await http.get(f"/v1/runs/{run_id}/events", headers={**AUTH, "Last-Event-ID": str(ids[-2])})
    assert seen[-1][0] == "finished" and seen[-1][1]["status"] == "ok"
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [k for k, _ in events_of(again.text)] == ["finished"]


async def test_a_run_waits_for_approval_then_resumes(app: Any) -> None:
    async with client(app) as http:
        r = await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great"], "options": {"approve": ["agent:sentiment"]}})
        run_id = r.json()["run_id"]
        state = await settled(http, run_id)
        assert state["status"] == "waiting" and [a["id"] for a in state["pending"]] == ["s1"]
        wrong = await http.post(f"/v1/runs/{run_id}/approvals", json={"approve": ["s9"]})
        assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "not_waiting"
        answered = await http.post(f"/v1/runs/{run_id}/approvals", json={"approve": ["s1"]})
        assert answered.status_code == 202
        state = await settled(http, run_id, FINAL)
        events = [k for k, _ in events_of((await http.get(f"/v1/runs/{run_id}/events")).text)]
    assert state["status"] == "ok" and state["result"]["resumed"] is True
    assert events.index("approval_needed") < events.index("resumed") < events.index("finished")


async def test_cancel_stops_a_running_run() -> None:
    model = fake(delay=60)
    application = make_app(model)
    async with client(application) as http:
        run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great"]})).json()["run_id"]
        while not model.in_flight:  # the run is recorded and planning
            await asyncio.sleep(0.01)
        r = await http.post(f"/v1/runs/{run_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "interrupted"
        again = await http.post(f"/v1/runs/{run_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"
    records = await list_runs(load_settings())
    assert [(r.run_id, r.status) for r in records] == [(run_id, "interrupted")]
    await application.state.manager.aclose()


async def test_the_pool_runs_at_most_max_runs_at_once() -> None:
    model = fake(delay=0.02)
    application = make_app(model, max_runs=1)
    async with client(application) as http:
        ids = [(await http.post("/v1/runs", json={"task": "classify the sentiment", "input": [f"x{n}"]})).json()["run_id"] for n in range(3)]
        statuses = [(await http.get(f"/v1/runs/{i}")).json()["status"] for i in ids]
        assert "queued" in statuses
        finals = [(await settled(http, i, FINAL))["status"] for i in ids]
    assert finals == ["ok", "ok", "ok"] and model.max_in_flight == 1
    await application.state.manager.aclose()


async def test_catalog_health_and_readiness(app: Any) -> None:
    async with client(app, headers={}) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    async with client(app) as http:
        graphs = (await http.get("/v1/graphs")).json()["graphs"]
        agents = (await http.get("/v1/agents")).json()["agents"]
        ready = await http.get("/readyz")
        schema = await http.get("/openapi.json")
    assert {"plan_execute", "triage"} <= {g["name"] for g in graphs} and {"sentiment", "filtering"} <= {a["name"] for a in agents}
    assert ready.status_code == 200 and ready.json()["tiers"]["slm"]["ok"] is True
    assert "/v1/runs" in schema.json()["paths"] and "/v1/chat/completions" in schema.json()["paths"]


class _Down(FakeModel):
    async def check(self) -> str:
        raise RunError(ErrorCode.MODEL_UNREACHABLE, "cannot reach the model server at http://127.0.0.1:9; start it")


async def test_backend_down_fails_the_run_and_the_server_stays_healthy() -> None:
    down = _Down(fail_with=unreachable().fail_with)
    application = make_app(down, load_settings(planner="llm"))  # else the planner falls back to matching embeddings
    async with client(application) as http:
        run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great"]})).json()["run_id"]
        state = await settled(http, run_id, FINAL)
        ready = await http.get("/readyz")
        health = await http.get("/healthz")
    codes = [state["error"]["code"]] if state["error"] else [e["code"] for e in state["result"]["errors"]]
    assert state["status"] in ("error", "failed") and "model_unreachable" in codes
    assert ready.status_code == 503 and ready.json()["tiers"]["llm"]["code"] == "model_unreachable"
    assert health.status_code == 200
    await application.state.manager.aclose()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer "}])
async def test_a_missing_or_invalid_key_is_401(app: Any, headers: dict[str, str]) -> None:
    async with client(app, headers=headers) as http:
        for method, path in [("GET", "/v1/graphs"), ("POST", "/v1/runs"), ("GET", "/readyz"), ("GET", "/v1/models"), ("GET", "/openapi.json")]:
            r = await http.request(method, path, json={"task": "x"})
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "unauthorized" and "Authorization: Bearer" in r.json()["error"]["message"] or "not valid" in r.text
    assert await list_runs(load_settings()) == []


async def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_API_KEYS", f"bot:{hash_key('moa-from-env')}")
    application = create_app(load_settings(), slm=fake(), llm=fake())
    async with client(application, headers={"Authorization": "Bearer moa-from-env"}) as http:
        assert (await http.get("/v1/graphs")).status_code == 200
    monkeypatch.setenv("MOA_API_KEYS", "moa-a-raw-key")
    with pytest.raises(Exception, match="sha256"):
        create_app(load_settings(), slm=fake(), llm=fake())


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["keys", "create", "support-bot"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    path = keys_path(load_settings())
    stored = path.read_text()
    assert key.startswith("moa-") and key not in stored and hash_key(key) in stored
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Keyring.load(load_settings()).find(key) is not None and Keyring.load(load_settings()).find(key + "x") is None
    again = CliRunner().invoke(cli_app, ["keys", "create", "support-bot"])
    assert again.exit_code == 2 and "exists" in again.output
    with pytest.raises(Exception, match="exists"):
        create_key(load_settings(), "support-bot")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 500):
        yield data[i : i + 500]


async def test_an_oversize_body_is_413_and_nothing_is_stored() -> None:
    application = make_app(max_body_bytes=2000)
    big = {"task": "classify the sentiment", "input": ["x" * 100] * 50}
    async with client(application) as http:
        r = await http.post("/v1/runs", json=big)
        chunked = await http.post("/v1/runs", content=_chunks(json.dumps(big).encode()))
    for response in (r, chunked):
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert await list_runs(load_settings()) == []


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        (b'{"task": "x",', 400, "invalid_input", "not valid JSON"),
        (b'["a list"]', 422, "invalid_input", "schema"),
        (b'{"task": 5}', 422, "invalid_input", "task"),
        (b'{"task": "x", "input": "one string"}', 422, "invalid_input", "input"),
        (b'{"task": "x", "shell": "rm -rf /"}', 422, "invalid_input", "shell"),
        (b'{"task": "x", "graph": "nope"}', 404, "unknown_graph", "GET /v1/graphs"),
        (b'{"task": "x", "graph": "/etc/passwd"}', 404, "unknown_graph", "GET /v1/graphs"),
        (b'{"task": "x", "options": {"budget_tokens": -1}}', 422, "invalid_input", "budget_tokens"),
        (b'{"task": "x", "options": {"approve": ["bogus"]}}', 422, "bad_config", "approval rule"),
        (b'{"task": "x", "options": {"cascade": ["openai:evil@http://203.0.113.9/v1"]}}', 422, "invalid_input", "cascade"),  # no widening
        (b'{"task": "x", "options": {"tools": ["delete_everything"]}}', 422, "invalid_input", "tools"),
        (b'{"task": "   "}', 422, "empty_task", "empty"),
        (b'{"task": "' + b"x" * 5000 + b'"}', 422, "task_too_large", "put the data in"),
        (b'{"task": "x", "input": []}', 422, "invalid_input", "empty list"),
    ],
)
async def test_bad_requests_are_4xx_json_and_store_nothing(app: Any, body: bytes, status: int, code: str, says: str) -> None:
    async with client(app) as http:
        r = await http.post("/v1/runs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and says in error["message"]
    assert await list_runs(load_settings()) == []


async def test_unknown_runs_and_routes_are_404(app: Any) -> None:
    async with client(app) as http:
        run = await http.get("/v1/runs/nope")
        route = await http.get("/v2/things")
        method = await http.delete("/v1/runs")
    assert run.status_code == 404 and run.json()["error"]["code"] == "unknown_run"
    assert route.status_code == 404 and route.json()["error"]["code"] == "unknown_route"
    assert method.status_code == 405 and method.json()["error"]["code"] == "unknown_route"


async def test_per_key_concurrency_limit_is_429() -> None:
    application = make_app(fake(delay=60), per_key_runs=1)
    async with client(application) as http:
        first = await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["a"]})
        second = await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["b"]})
    assert first.status_code == 202
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_runs"
    await application.state.manager.aclose()


async def test_prompts_and_keys_stay_out_of_the_server_logs(capsys: pytest.CaptureFixture[str]) -> None:
    from moa.cli.serve import USER_TEXT
    from moa.logs import configure_logging

    configure_logging(json=True, level="debug", redact=USER_TEXT)
    application = make_app()
    async with client(application) as http:
        run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment of SECRET-TASK", "input": ["SECRET-ITEM"]})).json()["run_id"]
        await settled(http, run_id, FINAL)
        await http.get("/v1/graphs", headers={"Authorization": "Bearer SECRET-KEY"})
    logged = capsys.readouterr().err
    assert run_id in logged and "run_started" in logged
    assert "SECRET" not in logged


async def test_load_every_run_ends_none_lost_or_duplicated() -> None:
    application = make_app(fake(), max_runs=4)
    with serving(application) as url:
        stats = await drive(url, KEY, runs=40, clients=8)
    assert stats["accepted"] == 40 and stats["finished"] == 40
    assert stats["lost"] == 0 and stats["duplicated"] == 0 and stats["rejected"] == []
    assert stats["by_status"] == {"ok": 40}
    runs = await list_runs(load_settings(), limit=None)
    assert len(runs) == 40 and {r.status for r in runs} == {"ok"}


def test_serve_refuses_to_start_without_keys() -> None:
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 2 and "moa keys create" in result.output and "--no-auth" in result.output
