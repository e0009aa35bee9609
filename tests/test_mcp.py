"""`moa mcp`: agents and graphs as MCP tools, called with the official SDK's own client.

The fast tests connect the SDK's ``Client`` to the server in-process (fake models); the real test
starts ``moa mcp`` as a subprocess on the embedded default model and talks to it over stdio with
``stdio_client`` + ``ClientSession``, as an IDE agent would.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake  # noqa: E402
from moa.agent.context import RunContext  # noqa: E402
from moa.models.registry import Models  # noqa: E402
from moa.server.mcp import McpTools, mcp_server  # noqa: E402
from moa.settings import load_settings  # noqa: E402
from moa.testing import unreachable  # noqa: E402
from moa.workflow.view import load_result  # noqa: E402
from support.moa_process import moa_env  # noqa: E402


@pytest.fixture
async def tools() -> AsyncIterator[McpTools]:
    settings = load_settings()
    model = fake()
    context = RunContext.create(settings, models=Models(settings, slm=model, llm=model))
    yield McpTools(context)
    await context.aclose()


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content)


async def test_every_agent_and_graph_is_a_tool_with_its_input_schema(tools: McpTools) -> None:
    async with Client(mcp_server(tools)) as client:
        listed = (await client.list_tools()).tools
    by_name = {t.name: t for t in listed}
    assert {"agent_sentiment", "agent_extraction", "agent_filtering", "agent_retrieval"} <= set(by_name)
    assert {"graph_plan_execute", "graph_triage", "graph_mixture", "graph_rag"} <= set(by_name)
    assert "text" in by_name["agent_sentiment"].input_schema["properties"]
    assert by_name["graph_triage"].input_schema["required"] == ["task"]


async def test_the_sentiment_agent_and_a_graph_answer_through_the_sdk_client(tools: McpTools) -> None:
    async with Client(mcp_server(tools)) as client:
        sentiment = await client.call_tool("agent_sentiment", {"text": "I love this phone"})
        graph = await client.call_tool("graph_plan_execute", {"task": "classify the sentiment", "input": ["great", "awful"]})
    assert not sentiment.is_error and sentiment.structured_content["label"] == "positive"
    assert json.loads(_text(sentiment))["label"] == "positive"
    assert not graph.is_error and _text(graph) == "Every item is positive."
    run = graph.structured_content
    assert run["status"] == "ok"
    recorded = await load_result(load_settings(), run["run_id"])  # a durable run, like `moa run`
    assert [i.item for i in recorded.results["s1"].items] == ["great", "awful"]


async def test_bad_arguments_unknown_tools_and_model_errors_are_error_results(tools: McpTools) -> None:
    async with Client(mcp_server(tools)) as client:
        missing = await client.call_tool("agent_sentiment", {})
        unknown = await client.call_tool("agent_nope", {"text": "x"})
        empty = await client.call_tool("graph_triage", {"task": "sort", "input": []})
    assert missing.is_error and _text(missing).startswith("[invalid_input] bad arguments for agent_sentiment: text")
    assert unknown.is_error and "no tool 'agent_nope'" in _text(unknown)
    assert empty.is_error and empty.structured_content["error"]["code"] == "invalid_input"

    settings = load_settings()
    down = unreachable()
    context = RunContext.create(settings, models=Models(settings, slm=down, llm=down))
    try:
        async with Client(mcp_server(McpTools(context))) as client:
            failed = await client.call_tool("agent_sentiment", {"text": "fine"})
    finally:
        await context.aclose()
    assert failed.is_error and failed.structured_content["error"]["code"] == "model_unreachable"


@pytest.mark.real  # `moa mcp` in a subprocess on the embedded default model (Gemma 3 270M), over stdio
def test_moa_mcp_over_stdio_on_the_embedded_model(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "moa", "mcp"], env=moa_env(tmp_path), cwd=str(tmp_path))

    async def session() -> tuple[list[str], Any, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            names = [t.name for t in (await client.list_tools()).tools]
            sentiment = await client.call_tool("agent_sentiment", {"text": "I love this phone, it is wonderful"})
            graph = await client.call_tool("graph_triage", {"task": "classify the sentiment", "input": ["I love it"]})
            return names, sentiment, graph

    names, sentiment, graph = asyncio.run(session())
    assert "agent_sentiment" in names and "graph_triage" in names
    assert not sentiment.is_error, _text(sentiment)
    assert sentiment.structured_content["label"] in ("positive", "negative", "neutral")  # a 270M base model: plumbing, not quality
    assert not graph.is_error, _text(graph)
    assert graph.structured_content["status"] in ("ok", "partial", "needs_human") and _text(graph)
