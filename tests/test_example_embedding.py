"""examples/embedding_asyncio.py with fake models: the FastAPI routes (plain and streaming) and
the bot loop. (tests/test_examples.py runs the other examples on the embedded model.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake  # noqa: E402


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedding_asyncio", ROOT / "examples" / "embedding_asyncio.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_fastapi_routes_run_moa_in_the_apps_event_loop() -> None:
    model = fake()
    app = _example().make_app(slm=model, llm=model)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
        plain = (await http.post("/classify", json={"texts": ["great", "lovely"]})).json()
        streamed = [json.loads(line) for line in (await http.post("/classify/stream", json={"texts": ["nice"]})).text.splitlines()]
    assert plain["status"] == "ok" and plain["labels"] == ["positive", "positive"]
    assert streamed[-1]["result"]["status"] == "ok" and {"event": "item_done", "subtask": "s1"} in streamed[:-1]


async def test_the_bot_loop_answers_each_message() -> None:
    model = fake()
    replies = await _example().amain(["I love it", "meh"], slm=model, llm=model)
    assert replies == ["'I love it': Every item is positive. (1 item(s))", "'meh': Every item is positive. (1 item(s))"]
