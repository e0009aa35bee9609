"""The Ollama backend and the real Ollama clients, end to end against the fixture server.

``tests/support/ollama_server.py`` speaks Ollama's REST API over the embedded model (no real Ollama can be
installed here). Tests marked ``real`` run the model; the fault tests need no model.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema  # type: ignore[import-untyped]  # a dependency of chromadb
import ollama
import pytest
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from pydantic import BaseModel, Field
from support.ollama_server import CHAT_MODEL, EMBED_MODEL, running_ollama_server

from moa.errors import ErrorCode, RunError
from moa.models.base import GenerateRequest, Message, ToolSpec
from moa.models.ollama import DEFAULT_CAPABILITIES, OllamaBackend

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather of a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
        "required": ["city", "unit"],
    },
)
TIME = ToolSpec(
    name="get_time",
    description="Current time in a time zone.",
    parameters={"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]},
)
SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"enum": ["positive", "negative"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["label", "stars"],
}


@pytest.fixture(scope="module")
def ollama_url() -> Iterator[str]:
    """One fixture server per module, so the model loads once."""
    with running_ollama_server() as url:
        yield url


# --- the official `ollama` client --------------------------------------------------------------


@pytest.mark.real
def test_ollama_client_chat(ollama_url: str) -> None:
    client = ollama.Client(host=ollama_url)
    response = client.chat(
        CHAT_MODEL, [{"role": "user", "content": "Say hello."}], options={"temperature": 0, "num_predict": 8}
    )
    assert response.done and response.message.role == "assistant"
    assert response.prompt_eval_count and response.eval_count and response.total_duration
    options = {"temperature": 0, "num_predict": 8}
    chunks = list(client.chat(CHAT_MODEL, [{"role": "user", "content": "Say hello."}], stream=True, options=options))
    assert chunks[-1].done and chunks[-1].eval_count and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content or "" for c in chunks) == response.message.content


@pytest.mark.real
def test_ollama_client_generate_embed_show_list(ollama_url: str) -> None:
    client = ollama.Client(host=ollama_url)
    options = {"temperature": 0, "num_predict": 6}
    generated = client.generate(CHAT_MODEL, "The capital of France is", raw=True, options=options)
    assert generated.done and generated.eval_count and isinstance(generated.response, str)
    embedded = client.embed(EMBED_MODEL, ["a cat sat on the mat", "stock prices fell"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 384
    shown = client.show(CHAT_MODEL)
    assert shown.capabilities is not None and "tools" in shown.capabilities and shown.template
    assert {m.model for m in client.list().models} == {CHAT_MODEL, EMBED_MODEL}
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("no-such-model", [{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


# --- langchain-ollama ----------------------------------------------------------------------------


class Review(BaseModel):
    """A review's sentiment."""

    label: Literal["positive", "negative"]
    stars: int = Field(ge=1, le=5)


@tool
def get_weather(city: str, unit: Literal["C", "F"]) -> str:
    """Current weather of a city."""
    return f"sunny in {city}"


@pytest.mark.real
def test_chat_ollama(ollama_url: str) -> None:
    llm = ChatOllama(model=CHAT_MODEL, base_url=ollama_url, temperature=0, num_predict=24)
    answer = llm.invoke("Say hello.")
    assert isinstance(answer.content, str)
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    review = llm.with_structured_output(Review, method="json_schema").invoke("Review: 'Great phone!'")
    assert isinstance(review, Review)
    called = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"
    get_weather.args_schema.model_validate(called.tool_calls[0]["args"])  # type: ignore[union-attr]


@pytest.mark.real
def test_ollama_embeddings(ollama_url: str) -> None:
    embeddings = OllamaEmbeddings(model=EMBED_MODEL, base_url=ollama_url)
    docs = embeddings.embed_documents(["a cat", "a dog"])
    assert len(docs) == 2 and len(embeddings.embed_query("a cat")) == len(docs[0]) == 384


# --- moa's OllamaBackend -------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.asyncio
async def test_backend_completion_with_schema(ollama_url: str) -> None:
    backend = OllamaBackend(f"ollama:{CHAT_MODEL}", model=CHAT_MODEL, host=ollama_url)
    assert backend.capabilities == DEFAULT_CAPABILITIES
    prompt = "Review: 'I love it.'\nJSON:"
    request = GenerateRequest(prompt=prompt, json_schema=SENTIMENT_SCHEMA, max_tokens=24, top_logprobs=2)
    generation = await backend.generate(request)
    jsonschema.validate(json.loads(generation.text), SENTIMENT_SCHEMA)
    assert generation.prompt_tokens > 0 and generation.completion_tokens > 0 and generation.latency_s > 0
    assert generation.logprobs and len(generation.logprobs[0].top) <= 2
    caps = backend.capabilities
    assert caps.chat and caps.completion and caps.tools and caps.logprobs and not caps.embeddings
    assert CHAT_MODEL in await backend.check()
    await backend.aclose()


@pytest.mark.real
@pytest.mark.asyncio
async def test_backend_chat_with_tools(ollama_url: str) -> None:
    backend = OllamaBackend(f"ollama:{CHAT_MODEL}", model=CHAT_MODEL, host=ollama_url)
    offered = {t.name: t for t in (WEATHER, TIME)}
    generation = await backend.generate(
        GenerateRequest(
            messages=[Message(role="system", content="Use a tool."), Message(role="user", content="Weather in Oslo?")],
            tools=list(offered.values()),
            max_tokens=48,
        )
    )
    assert len(generation.tool_calls) == 1
    call = generation.tool_calls[0]
    assert call.id == "call_0" and call.name in offered
    jsonschema.validate(call.arguments, offered[call.name].parameters)
    assert generation.prompt_tokens > 0 and generation.completion_tokens > 0
    await backend.aclose()


# --- faults (no model needed) --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.real
@pytest.mark.asyncio
async def test_unreachable_names_the_host() -> None:
    host = f"http://127.0.0.1:{_free_port()}"
    backend = OllamaBackend("ollama:m", model="m", host=host, timeout=5)
    with pytest.raises(RunError) as info:
        await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
    assert info.value.code is ErrorCode.MODEL_UNREACHABLE
    assert host in info.value.message and "ollama serve" in info.value.message


@pytest.mark.real
@pytest.mark.asyncio
async def test_silent_server_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the handshake; nothing ever answers
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        backend = OllamaBackend("ollama:m", model="m", host=host, timeout=0.5)
        with pytest.raises(RunError) as info:
            await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
    assert info.value.code is ErrorCode.MODEL_TIMEOUT
    assert "MOA_TIMEOUT" in info.value.message and "0.5" in info.value.message


@pytest.mark.real
@pytest.mark.asyncio
async def test_unknown_model_says_pull(ollama_url: str) -> None:
    backend = OllamaBackend("ollama:nope:1b", model="nope:1b", host=ollama_url)
    with pytest.raises(RunError) as info:
        await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
    assert info.value.code is ErrorCode.MODEL_ERROR and "ollama pull nope:1b" in info.value.message
    with pytest.raises(RunError) as checked:
        await backend.check()
    assert checked.value.code is ErrorCode.MODEL_ERROR


@pytest.mark.real
@pytest.mark.asyncio
async def test_embedding_model_capabilities_and_refusal(ollama_url: str) -> None:
    backend = OllamaBackend(f"ollama:{EMBED_MODEL}", model=EMBED_MODEL, host=ollama_url)
    assert EMBED_MODEL in await backend.check()
    caps = backend.capabilities
    assert caps.embeddings and not caps.chat and not caps.completion and not caps.tools
    with pytest.raises(RunError) as info:  # Ollama answers 400: the model cannot generate
        await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
    assert info.value.code is ErrorCode.MODEL_ERROR and "does not support" in info.value.message
    await backend.aclose()
