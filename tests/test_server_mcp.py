"""MCP over streamable HTTP under `moa serve` (``/mcp``): the official SDK's own streamable-HTTP
client (``streamable_http_client`` + ``ClientSession``) against a real uvicorn server on
127.0.0.1 with fake models — list the tools, call an agent tool and a graph tool; without a valid
key the server refuses (401 JSON, like every other route)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import fake, serving  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.settings import load_settings  # noqa: E402

KEY = "moa-mcp-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def base_url() -> Iterator[str]:
    model = fake()
    app = create_app(load_settings(), config=ServerConfig(), keys=Keyring([ApiKey(name="ide", sha256=hash_key(KEY))]), slm=model, llm=model)
    with serving(app) as url:
        yield url


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content)


async def test_tools_over_streamable_http_with_the_sdk_client(base_url: str) -> None:
    async with (
        create_mcp_http_client(headers=AUTH) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        sentiment = await session.call_tool("agent_sentiment", {"text": "I love this phone"})
        graph = await session.call_tool("graph_plan_execute", {"task": "classify the sentiment", "input": ["great", "awful"]})
        bad = await session.call_tool("graph_triage", {"task": "sort", "input": []})
    assert {"agent_sentiment", "agent_extraction", "graph_plan_execute", "graph_triage"} <= names
    assert not sentiment.is_error and sentiment.structured_content["label"] == "positive"
    assert not graph.is_error and _text(graph) == "Every item is positive."
    assert bad.is_error and bad.structured_content["error"]["code"] == "invalid_input"

    run_id = graph.structured_content["run_id"]  # the graph ran as a server run, on behalf of the calling key
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as http:
        served = (await http.get(f"/v1/runs/{run_id}")).json()
    assert served["status"] == "ok" and served["graph"] == "plan_execute"
    assert [i["item"] for i in served["result"]["results"]["s1"]["items"]] == ["great", "awful"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_mcp_without_a_valid_key_is_refused(base_url: str, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as http:
        refused = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Accept": "application/json, text/event-stream"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["www-authenticate"] == "Bearer"

    with pytest.RaisesGroup(MCPError, flatten_subgroups=True):  # the SDK client cannot even initialize
        async with (
            create_mcp_http_client(headers=headers) as http,
            streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()


async def test_a_foreign_host_header_is_refused_on_a_loopback_server(base_url: str) -> None:
    """The SDK's DNS-rebinding guard: a page on another name that resolves to 127.0.0.1 cannot reach /mcp."""
    async with httpx.AsyncClient(base_url=base_url, headers={**AUTH, "Host": "evil.example"}) as http:
        refused = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Accept": "application/json, text/event-stream"})
    assert refused.status_code == 421
