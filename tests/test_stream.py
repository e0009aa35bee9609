"""``moa.stream``: events as they happen, then the result; a cancelled consumer interrupts the
run, which ``moa.aresume`` finishes (fake models)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moa  # noqa: E402
from benchmarks.server_load import fake, handler  # noqa: E402
from moa.models.base import GenerateRequest  # noqa: E402
from moa.testing import FakeModel  # noqa: E402
from moa.workflow.view import list_runs  # noqa: E402


async def test_events_as_they_happen_then_the_result() -> None:
    model = fake()
    seen: list[str] = []
    got = [e async for e in moa.stream("classify the sentiment", input=["great", "fine"], slm=model, llm=model, on_event=lambda e: seen.append(e.kind))]
    *events, result = got
    assert isinstance(result, moa.RunResult) and result.status == "ok" and result.answer == "Every item is positive."
    kinds = [e.kind for e in events]
    assert all(isinstance(e, moa.Event) for e in events) and kinds == seen  # on_event still gets every event
    assert kinds.index("subtask_started") < kinds.index("item_done") < kinds.index("subtask_done")
    assert kinds.count("item_done") == 2


async def test_a_failing_run_raises_from_the_iterator() -> None:
    with pytest.raises(moa.UserError) as info:
        async for _ in moa.stream("classify", input=[], slm=fake(), llm=fake()):
            pass
    assert info.value.code == "invalid_input"


async def test_cancelling_the_consumer_interrupts_the_run_and_aresume_finishes_it() -> None:
    def slow_items(request: GenerateRequest) -> float:  # the plan comes at once; every item waits
        return 60.0 if "label" in (request.json_schema or {}).get("properties", {}) else 0.0

    slow = FakeModel(handler, chat=True, delay=slow_items)
    started = asyncio.Event()

    async def consume() -> None:
        async for event in moa.stream("classify the sentiment", input=["a", "b"], slm=slow, llm=slow, run_id="streamed"):
            if isinstance(event, moa.Event) and event.kind == "subtask_started":
                started.set()

    consumer = asyncio.create_task(consume())
    await started.wait()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    [record] = [r for r in await list_runs(moa.load_settings()) if r.run_id == "streamed"]
    assert record.status == "interrupted"

    fast = fake()
    resumed = await moa.aresume("streamed", slm=fast, llm=fast)
    assert resumed.status == "ok" and [i.item for i in resumed.results["s1"].items] == ["a", "b"]
