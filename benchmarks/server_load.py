"""Load on `moa serve`: N runs from C concurrent clients against a real uvicorn server on
127.0.0.1 with a fast fake model; every run must reach a final status (none lost, none
duplicated). Reports runs/s end to end and the latency of the API itself (POST /v1/runs and
GET /v1/runs/{id}: p50/p95), never asserted.

    python benchmarks/server_load.py --runs 200 --clients 20 --workers 4

Each client starts a run, then polls it until it ends, then starts the next. The fake model
answers the planner, the sentiment agent and the synthesizer (`handler`); `--delay` adds seconds
per model call.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from benchmarks._common import finish, load, machine, parser, report, table  # noqa: E402
from moa.models.base import GenerateRequest  # noqa: E402
from moa.testing import FakeModel  # noqa: E402

FINAL = {"ok", "partial", "failed", "stopped", "interrupted", "needs_human", "error"}


def handler(request: GenerateRequest) -> str:
    """A plan of one sentiment subtask, a positive label, a one-line answer: whatever is asked."""
    props = (request.json_schema or {}).get("properties", {})
    if "plan" in props:  # the llm planner's compact format
        return json.dumps({"plan": ["sentiment <- input"]})
    if "subtasks" in props:
        return json.dumps({"subtasks": [{"id": "s1", "agent": "sentiment"}]})
    if "label" in props:
        return '{"label":"positive","confidence":0.9}'
    return "Every item is positive."


def fake(delay: float = 0.0) -> FakeModel:
    return FakeModel(handler, chat=True, delay=delay)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="moa-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


async def drive(base_url: str, key: str | None, runs: int, clients: int, poll: float = 0.02) -> dict[str, Any]:
    """Start ``runs`` runs from ``clients`` concurrent clients and follow each to its end."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started: list[str] = []
    statuses: dict[str, str] = {}
    api: list[float] = []
    errors: list[str] = []
    todo = iter(range(runs))

    async def client(http: httpx.AsyncClient) -> None:
        for n in todo:
            t = time.perf_counter()
            r = await http.post("/v1/runs", json={"task": "classify the sentiment", "input": [f"item {n} is great"]})
            api.append(time.perf_counter() - t)
            if r.status_code != 202:
                errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            run_id = r.json()["run_id"]
            started.append(run_id)
            while True:
                t = time.perf_counter()
                got = await http.get(f"/v1/runs/{run_id}")
                api.append(time.perf_counter() - t)
                status = got.json()["status"]
                if status in FINAL:
                    statuses[run_id] = status
                    break
                await asyncio.sleep(poll)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - t0
    by_status: dict[str, int] = {}
    for status in statuses.values():
        by_status[status] = by_status.get(status, 0) + 1
    ms = sorted(x * 1000 for x in api)
    return {
        "runs": runs,
        "clients": clients,
        "accepted": len(started),
        "finished": len(statuses),
        "lost": len(set(started) - set(statuses)),
        "duplicated": len(started) - len(set(started)),
        "rejected": errors,
        "by_status": by_status,
        "seconds": round(seconds, 3),
        "runs_per_s": round(len(statuses) / seconds, 2) if seconds else None,
        "api_requests": len(ms),
        "api_p50_ms": round(statistics.median(ms), 2) if ms else None,
        "api_p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2) if ms else None,
    }


def render(results: dict[str, Any]) -> str:
    r = results["load"]
    header = ["runs", "clients", "workers", "finished", "lost", "duplicated", "runs/s", "API p50 ms", "API p95 ms", "API requests", "load 1m"]
    row = [r["runs"], r["clients"], results["workers"], r["finished"], r["lost"], r["duplicated"], r["runs_per_s"], r["api_p50_ms"], r["api_p95_ms"]]
    row += [r["api_requests"], results["machine"]["load"][0]]
    return f"machine: {results['machine']['cores']} cores, load {results['machine']['load']}\n\n" + table(header, [row])


def app_for(state_dir: Path, workers: int, delay: float) -> tuple[Any, str]:
    """A server over a fresh state folder with one API key, the fake model on both tiers."""
    from moa.server import ServerConfig, create_app
    from moa.server.keys import ApiKey, Keyring, hash_key
    from moa.settings import load_settings

    key = "moa-bench-key"
    model = fake(delay)
    settings = load_settings(state_dir=state_dir, memory_dir=state_dir / "memory")
    app = create_app(settings, config=ServerConfig(max_runs=workers), keys=Keyring([ApiKey(name="bench", sha256=hash_key(key))]), slm=model, llm=model)
    return app, key


async def main() -> None:
    p = parser(__doc__, "server_load")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--workers", type=int, default=4, help="the server's max_runs")
    p.add_argument("--delay", type=float, default=0.0, help="seconds per model call")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    with tempfile.TemporaryDirectory() as tmp:
        app, key = app_for(Path(tmp), args.workers, args.delay)
        results: dict[str, Any] = {"machine": machine("fastapi", "uvicorn", "httpx"), "workers": args.workers, "delay": args.delay}
        with serving(app) as url:
            results["load"] = await drive(url, key, args.runs, args.clients)
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
