"""`GET /readyz` against real model servers (the OpenAI and Ollama protocols of
:mod:`support.fault_server`, and a port nobody listens on): each tier's backend is checked; a
healthy one is ``ok``, a faulty or absent one makes the answer 503 with its error code, and
``/healthz`` stays 200."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.fault_server import FaultServer, Protocol, fault_server

from moa.server import ServerConfig, create_app
from moa.settings import load_settings


@pytest.fixture(scope="module")
def models() -> Iterator[FaultServer]:
    with fault_server() as running:
        yield running


def nobody_listens(protocol: Protocol) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"openai:fake@http://127.0.0.1:{port}/v1" if protocol == "openai" else f"ollama:fake@http://127.0.0.1:{port}"


async def readiness(slm: str, llm: str) -> tuple[httpx.Response, httpx.Response]:
    app = create_app(load_settings(slm=slm, llm=llm, timeout=1), config=ServerConfig(auth=False))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moa") as http:
            return await http.get("/readyz"), await http.get("/healthz")
    finally:
        await app.state.manager.aclose()


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
async def test_ready_when_every_backend_answers(models: FaultServer, protocol: Protocol) -> None:
    ready, _ = await readiness(models.spec(protocol), models.spec(protocol))
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert all(tier["ok"] and "fake" in tier["model"] for tier in ready.json()["tiers"].values())


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize(
    ("fault", "code"),
    [("down", "model_unreachable"), ("close_before_answer", "model_unreachable"), ("http_500", "model_error"), ("html", "model_error"), ("hang", "model_timeout")],
)
async def test_a_faulty_or_absent_backend_makes_the_server_unready(models: FaultServer, protocol: Protocol, fault: str, code: str) -> None:
    llm = nobody_listens(protocol) if fault == "down" else models.spec(protocol, fault)
    ready, health = await readiness(models.spec(protocol), llm)
    body: dict[str, Any] = ready.json()
    assert ready.status_code == 503 and body["status"] == "unavailable"
    assert body["tiers"]["slm"]["ok"] is True
    assert body["tiers"]["llm"]["ok"] is False and body["tiers"]["llm"]["code"] == code and body["tiers"]["llm"]["message"]
    assert health.status_code == 200
