"""A run's event subscribers have bounded buffers: a subscriber that does not read while the run
publishes keeps at most ``subscriber_buffer`` waiting events, misses the oldest, is told so by a
``gap`` event (without an SSE id), and still gets the final ``finished`` event last."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.server.runs import ServedRun  # noqa: E402
from moa.server.subscribers import Gap, ServedEvent, Subscriber  # noqa: E402
from moa.settings import load_settings  # noqa: E402

KEY = "moa-subscribers-test-key"


async def test_a_slow_subscriber_misses_the_oldest_events_is_told_and_gets_the_end() -> None:
    run = ServedRun("r1", "plan_execute", None, buffer=3)
    run.publish("queued")
    stream = run.subscribe()
    first = await anext(stream)  # subscribed; now it stops reading while the run goes on
    assert isinstance(first, ServedEvent) and first.kind == "queued"
    for n in range(10):
        run.publish("item_done", {"n": n})  # ids 2..11
    run.settle("ok")  # id 12
    rest = [e async for e in stream]
    assert rest[0] == Gap(first=2, last=9)
    assert rest[0].data()["missed"] == 8
    assert [(e.id, e.kind) for e in rest[1:] if isinstance(e, ServedEvent)] == [(10, "item_done"), (11, "item_done"), (12, "finished")]
    assert len(rest) == 4
    assert not run._listeners  # the subscription is gone once the stream ended


async def test_a_subscriber_that_keeps_up_gets_every_event_and_no_gap() -> None:
    run = ServedRun("r2", "plan_execute", None, buffer=2)
    stream = run.subscribe()
    run.publish("queued")
    seen: list[Any] = []
    for n in range(5):
        run.publish("item_done", {"n": n})
        seen.append(await anext(stream))
    run.settle("ok")
    seen += [e async for e in stream]
    assert [e.kind for e in seen] == ["queued", "item_done", "item_done", "item_done", "item_done", "item_done", "finished"]


def test_a_full_buffer_drops_its_oldest_and_the_end_is_never_dropped() -> None:
    subscriber = Subscriber(limit=2)
    for i in range(1, 6):
        subscriber.push(ServedEvent(i, "x", {}))
    subscriber.end()
    assert [e.id for e in subscriber.waiting] == [4, 5] and subscriber.dropped == 3 and subscriber.ended


async def test_events_no_longer_kept_are_a_gap_on_the_event_stream() -> None:
    model = fake()
    app = create_app(load_settings(), config=ServerConfig(event_history=3), keys=Keyring([ApiKey(name="t", sha256=hash_key(KEY))]), slm=model, llm=model)
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moa", headers=auth) as http:
        run_id = (await http.post("/v1/runs", json={"task": "classify the sentiment", "input": ["great"]})).json()["run_id"]
        await (await app.state.manager.get(run_id)).settled.wait()
        text = (await http.get(f"/v1/runs/{run_id}/events")).text
    await app.state.manager.aclose()
    blocks = [dict(line.split(": ", 1) for line in block.splitlines()) for block in text.strip().split("\n\n")]
    assert blocks[0]["event"] == "gap" and "id" not in blocks[0]  # Last-Event-ID stays at the last event received
    kept = [int(b["id"]) for b in blocks[1:]]
    assert len(kept) == 3 and blocks[-1]["event"] == "finished"
    assert '"first":1' in blocks[0]["data"] and f'"last":{kept[0] - 1}' in blocks[0]["data"]
