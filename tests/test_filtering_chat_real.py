"""The filtering agent on a real chat model: its reason-first JSON answer is never cut by
``max_tokens``.

The report: the filtering agent asked a chat model for a one-sentence reason, then the label,
with ``max_tokens: 16``; a server that honours the limit cut every answer (``invalid_output`` on
10 of 10 items). The limit now comes from the answer's schema (``output_token_limit``, the
reason's ``max_length`` included). Checked on the shipped SmolLM2-135M-Instruct (a) through the
embedded engine and (b) through llama.cpp's own OpenAI-compatible server (``xllamacpp``, which
honours ``max_tokens``) with the official ``openai`` client. The model is 135M: its labels may be
wrong; every item must parse into a valid decision.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import moa
from moa.agent.structured import output_token_limit
from moa.agents.filtering import FilterDecision, _answer
from moa.models.base import GenerateRequest, Generation, ModelBackend
from moa.models.shipped import SHIPPED, model_file, shipped_status

pytestmark = pytest.mark.real

NAME = "smollm2-135m-instruct"
PLAN = {"subtasks": [{"id": "f", "agent": "filtering", "options": {"criterion": "spam", "mode": "drop"}}]}
ITEMS = [
    "WINNER!! Claim your free £1000 prize now, call 09061701461",
    "Are we still on for lunch tomorrow?",
    "URGENT: your bank account is locked, verify at http://bit.ly/x",
    "Thanks for the notes from today's meeting.",
    "Free ringtones! Text GO to 80080 to get yours",
    "Can you pick up some milk on the way home?",
]


def _require() -> None:
    status = shipped_status(SHIPPED[NAME])
    if status.installed != len(SHIPPED[NAME].parts):
        if os.environ.get("CI"):
            pytest.fail(f"{SHIPPED[NAME].spec} is not installed in CI: {status.summary}")
        pytest.skip(f"{SHIPPED[NAME].spec}: {status.summary}")


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[GenerateRequest]:
    """Every request a backend is asked to generate (recorded, then sent as usual)."""
    seen: list[GenerateRequest] = []
    original = ModelBackend.agenerate

    async def recording(self: ModelBackend, request: GenerateRequest) -> Generation:
        seen.append(request)
        return await original(self, request)

    monkeypatch.setattr(ModelBackend, "agenerate", recording)
    return seen


def _check(result: moa.RunResult, requests: list[GenerateRequest]) -> None:
    items = result.results["f"].items
    assert len(items) == len(ITEMS)
    problems = [(i.item, i.error.code, i.error.message[:200]) for i in items if i.error is not None]  # type: ignore[union-attr]
    assert problems == []  # no invalid_output: every answer parsed
    assert all(isinstance(i.output, FilterDecision) for i in items)
    assert all(i.output.matches in (True, False) and i.output.keep == (not i.output.matches) for i in items)  # type: ignore[union-attr]
    agent_requests = [r for r in requests if r.json_schema is not None and r.json_schema.get("title") == "FilterAnswer"]
    assert len(agent_requests) >= len(ITEMS)
    for request in agent_requests:
        assert "reason" in request.json_schema["properties"]  # type: ignore[index]  # the chat (reason-first) answer
        limit = output_token_limit(_answer(("spam", "ham"), "confidence" not in request.json_schema["properties"], True))  # type: ignore[index]
        assert request.max_tokens >= limit > 16


def _settings(spec: str, tmp_path: Path, **extra: Any) -> moa.Settings:
    return moa.load_settings(
        slm=spec, llm=spec, cascade=["slm"], cache=False, store_examples=False, planner="router",
        state_dir=tmp_path / "state", memory_dir=tmp_path / "memory", **extra,
    )  # fmt: skip


async def test_filtering_on_the_embedded_chat_model_parses_every_item(tmp_path: Path, requests: list[GenerateRequest]) -> None:
    _require()
    result = await moa.arun("filter out spam", input=ITEMS, plan=PLAN, settings=_settings(SHIPPED[NAME].spec, tmp_path))
    _check(result, requests)


@pytest.fixture(scope="module")
def smollm2_server() -> Iterator[str]:
    _require()
    from support.llama_server import running_llama_server

    with running_llama_server(model_path=str(model_file(SHIPPED[NAME])), chat_template=None, n_ctx=4096, n_parallel=2) as base_url:
        yield base_url


async def test_filtering_through_a_server_that_honours_max_tokens_parses_every_item(
    smollm2_server: str, tmp_path: Path, requests: list[GenerateRequest]
) -> None:
    spec = f"openai:smollm2@{smollm2_server}"
    result = await moa.arun("filter out spam", input=ITEMS, plan=PLAN, settings=_settings(spec, tmp_path, timeout=120.0))
    _check(result, requests)
    assert all(u.model == spec and u.completion_tokens > 0 for u in result.usage)
