"""A full run over the Ollama protocol with tool calls, on the real model behind the fixture server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest
from support.ollama_server import CHAT_MODEL, running_ollama_server

import moa
from moa.models.ollama import OllamaBackend
from moa.testing import FakeModel
from moa.workflow.catalog import builtin_agents

pytestmark = pytest.mark.real
# The argument is an enum: the 270M base model, forced into the tool schema, fills free-form
# numbers or strings until the token limit (a model-quality limit, not a moa one).
looked_up: list[str] = []


@moa.tool
def order_status(order_id: Literal["A-17", "B-42"]) -> str:
    """Shipping status of an order."""
    looked_up.append(order_id)
    return "shipped"


@pytest.fixture(scope="module")
def ollama_url() -> Iterator[str]:
    with running_ollama_server() as url:
        yield url


async def test_run_over_ollama_with_tool_calls(ollama_url: str) -> None:
    backend = OllamaBackend(f"ollama:{CHAT_MODEL}@{ollama_url}", model=CHAT_MODEL, host=ollama_url, timeout=600)
    agent = builtin_agents()["sentiment"].with_tools(order_status)
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    result = await moa.arun(
        "how does the customer feel?",
        input=["Order B-42 arrived quickly and I love it."],
        plan=plan,
        agents=[agent],
        slm=backend,
        llm=FakeModel(),  # no synthesis: this test is about the agent's tool calls
    )
    sub = result.results["s1"]
    assert sub.status == "ok", result.errors
    assert sub.tool_calls and all(c.name == "order_status" and c.allowed for c in sub.tool_calls)
    assert len(looked_up) == sum(1 for c in sub.tool_calls if c.error is None) >= 1
    assert sub.items[0].output.label in ("positive", "negative", "neutral")  # type: ignore[union-attr]
    assert {u.purpose for u in result.usage} >= {"tool", "agent"}
    assert all(u.model.startswith("ollama:") and u.prompt_tokens > 0 for u in result.usage)
