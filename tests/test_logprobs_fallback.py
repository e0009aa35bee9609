"""A server that ignores a request for logprobs (some OpenAI-compatible proxies and servers do):
moa must not keep answers with no confidence (0.5, which escalates everything). The backend
notices on the first answer, says so once, and from then on confidence comes from elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.recording_server import recording_server

import moa
from moa.models.registry import create_backend

pytestmark = pytest.mark.real  # a real HTTP server on 127.0.0.1 and the official openai client


async def test_a_server_without_logprobs_is_noticed_and_confidence_comes_from_the_answer(tmp_path: Path) -> None:
    with recording_server() as server:  # answers {"label": "positive", "confidence": 0.95}, no logprobs
        spec = f"openai:m@{server.v1}"
        settings = moa.load_settings(slm=spec, llm=spec, cascade=["slm"], planner="router", cache=False, state_dir=tmp_path / "state", memory_dir=tmp_path / "memory")
        backend = create_backend(spec, settings)
        assert (await backend.acapabilities()).logprobs  # optimistic until the server shows otherwise
        with capture_logs() as logs:
            result = await moa.arun("Is each review positive or negative?", input=["Great.", "Lovely.", "Fine food."], settings=settings)
        await backend.aclose()
    (sub,) = result.results.values()
    assert [i.output.confidence for i in sub.items] == [0.95, 0.95, 0.95]  # type: ignore[union-attr]
    asked = [bool(r.body and r.body.get("logprobs")) for r in server.requests if r.body and "response_format" in r.body]  # the agent's, not the synthesizer's
    # items in flight together were each asked for logprobs once (at most 3), then each answered
    # without: one more request per such item, never a third
    assert asked[0] is True and asked.count(True) <= 3 and asked.count(False) == 3
    without = sorted(r.body["messages"][-1]["content"] for r in server.requests if r.body and "response_format" in r.body and not r.body.get("logprobs"))
    assert without == ["Fine food.", "Great.", "Lovely."]  # each item answered once without: never a third request
    assert [e["spec"] for e in logs if e["event"] == "server_gives_no_logprobs"] == [spec]  # said once
