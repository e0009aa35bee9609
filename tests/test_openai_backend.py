"""Tests of :class:`moa.models.openai.OpenAIBackend`.

- ``real`` tests run the official ``openai`` client against a REAL llama.cpp HTTP server
  (:func:`support.llama_server.running_llama_server`, Gemma 3 270M base model, in-process, 127.0.0.1).
  They check plumbing (schema-constrained JSON, token counts, logprobs, tool calls), never answer
  quality.
- Fault and mapping tests are fast and need no model: a port with nothing listening, a socket
  server that accepts and never answers, and a small ``http.server`` stub speaking the OpenAI
  wire format for answers llama.cpp does not give (HTTP errors, rejected ``json_schema``, broken
  tool arguments). All servers bind 127.0.0.1. These tests are marked ``real`` too: they run the
  real client against a real HTTP server (and conftest refuses ``generate`` in unmarked tests).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support.llama_server import free_port, running_llama_server

from moa.errors import ErrorCode, RunError, UserError
from moa.models.base import GenerateRequest, Message, ToolCall, ToolSpec
from moa.models.openai import OpenAIBackend

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["label"],
}
FEW_SHOT = (
    'Text: I loved it.\nOutput: {"label": "positive"}\n\n'
    'Text: Awful.\nOutput: {"label": "negative"}\n\n'
    "Text: Great fun!\nOutput: "
)
WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Get the current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)

Responder = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    """Base URL (``.../v1``) of a real llama.cpp server shared by this module's real tests."""
    with running_llama_server() as url:
        yield url


@contextmanager
def stub_openai_server(respond: Responder) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on 127.0.0.1 answering POSTs with ``respond(path, body)``.

    Yields the base URL and the list of received request bodies (``{"path": ..., **body}``).
    """
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            received.append({"path": self.path, **body})
            status, payload = respond(self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def silent_server() -> Iterator[str]:
    """A raw socket server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept_and_hold() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@asynccontextmanager
async def backend(base_url: str, **options: Any) -> AsyncIterator[OpenAIBackend]:
    """An :class:`OpenAIBackend` for ``base_url``, closed afterwards."""
    options.setdefault("model", "gemma-3-270m")
    options.setdefault("timeout", 600.0)  # real model on shared cores: slow is not broken
    instance = OpenAIBackend(f"openai:{options['model']}@{base_url}", base_url=base_url, **options)
    try:
        yield instance
    finally:
        await instance.aclose()


def chat_completion(content: str | None = None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A canned OpenAI chat completion body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop", "message": message}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def weather_history() -> list[Message]:
    """A few-shot chat where the assistant answers weather questions with a tool call."""
    messages: list[Message] = [Message(role="system", content="Answer weather questions with the get_weather tool.")]
    for index, (city, weather) in enumerate([("London", "rainy"), ("Berlin", "cloudy"), ("Rome", "sunny")]):
        call = ToolCall(id=f"call_{index}", name="get_weather", arguments={"city": city})
        messages += [
            Message(role="user", content=f"What's the weather in {city}?"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", tool_call_id=call.id, content=weather),
            Message(role="assistant", content=f"It is {weather} in {city}."),
        ]
    messages.append(Message(role="user", content="What's the weather in Paris?"))
    return messages


# -- real llama.cpp server -------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.asyncio
async def test_completion_with_json_schema_and_logprobs(llama_url: str) -> None:
    async with backend(llama_url, chat=False, completion=True) as model:
        assert model.capabilities.completion and not model.capabilities.chat
        result = await model.generate(
            GenerateRequest(prompt=FEW_SHOT, json_schema=LABEL_SCHEMA, max_tokens=20, top_logprobs=3)
        )
    assert json.loads(result.text)["label"] in {"positive", "negative"}
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.latency_s > 0
    assert result.logprobs, "llama.cpp returns completion logprobs when asked"
    assert "".join(entry.token for entry in result.logprobs) == result.text
    for entry in result.logprobs:
        assert entry.logprob <= 0 and entry.token in entry.top
        assert len(entry.top) >= 3


@pytest.mark.real
@pytest.mark.asyncio
async def test_completion_without_logprobs_has_none(llama_url: str) -> None:
    async with backend(llama_url, chat=False, completion=True) as model:
        result = await model.generate(GenerateRequest(prompt=FEW_SHOT, max_tokens=8, stop=["\n"]))
    assert result.logprobs is None
    assert result.completion_tokens > 0


@pytest.mark.real
@pytest.mark.asyncio
async def test_chat_with_json_schema_and_logprobs(llama_url: str) -> None:
    async with backend(llama_url) as model:
        result = await model.generate(
            GenerateRequest(
                messages=[
                    Message(role="system", content="Classify the sentiment of the user's text as JSON."),
                    Message(role="user", content="Great fun!"),
                ],
                json_schema=LABEL_SCHEMA,
                max_tokens=40,
                top_logprobs=2,
            )
        )
        # llama.cpp's own server accepts response_format json_schema: no fallback happened.
        assert model.schema_format == "json_schema"
    assert json.loads(result.text)["label"] in {"positive", "negative"}
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.logprobs and all(entry.token in entry.top for entry in result.logprobs)
    assert result.tool_calls == []


@pytest.mark.real
@pytest.mark.asyncio
async def test_chat_tool_call_round_trip(llama_url: str) -> None:
    """History with assistant tool calls + tool results goes in; a parsed ToolCall comes out.

    The base model needs the few-shot history to open a ``<tool_call>``; from there llama.cpp's
    grammar (derived from the fixture's chat template) constrains name and arguments.
    """
    async with backend(llama_url) as model:
        result = await model.generate(GenerateRequest(messages=weather_history(), tools=[WEATHER_TOOL], max_tokens=40))
    assert result.tool_calls, f"expected a tool call, got text {result.text!r}"
    call = result.tool_calls[0]
    assert call.name == "get_weather"
    assert isinstance(call.arguments.get("city"), str)
    assert call.id


@pytest.mark.real
@pytest.mark.asyncio
async def test_check_lists_models(llama_url: str) -> None:
    async with backend(llama_url) as model:
        description = await model.check()
    assert llama_url in description
    assert "1 model(s)" in description


# -- request / response mapping against a stub -------------------------------------------------------


@pytest.mark.real
@pytest.mark.asyncio
async def test_chat_request_mapping() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = {"id": "c9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        return 200, chat_completion(None, [call])

    with stub_openai_server(respond) as (url, received):
        async with backend(url, model="stub-model") as model:
            result = await model.generate(
                GenerateRequest(messages=weather_history()[:4], tools=[WEATHER_TOOL], max_tokens=17, stop=["\n\n"])
            )
    assert result.tool_calls == [ToolCall(id="c9", name="get_weather", arguments={"city": "Oslo"})]
    assert result.text == "" and result.finish_reason == "tool_calls"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 7)
    (sent,) = received
    assert sent["path"] == "/v1/chat/completions"
    assert sent["model"] == "stub-model" and sent["max_tokens"] == 17 and sent["stop"] == ["\n\n"]
    assert "max_completion_tokens" not in sent and "logprobs" not in sent and "response_format" not in sent
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER_TOOL.description,
                "parameters": WEATHER_TOOL.parameters,
            },
        }
    ]
    assistant, tool = sent["messages"][2], sent["messages"][3]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}
        ],
    }
    assert tool == {"role": "tool", "tool_call_id": "call_0", "content": "rainy"}


@pytest.mark.real
@pytest.mark.asyncio
async def test_json_schema_rejected_falls_back_to_json_object_and_remembers() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("response_format", {}).get("type") == "json_schema":
            return 400, {"error": {"message": "response_format type json_schema is not supported", "code": 400}}
        return 200, chat_completion('{"label": "positive"}')

    request = GenerateRequest(messages=[Message(role="user", content="Great fun!")], json_schema=LABEL_SCHEMA)
    with stub_openai_server(respond) as (url, received):
        async with backend(url) as model:
            first = await model.generate(request)
            second = await model.generate(request)
            assert model.schema_format == "json_object"
    assert json.loads(first.text) == json.loads(second.text) == {"label": "positive"}
    assert [r["response_format"]["type"] for r in received] == ["json_schema", "json_object", "json_object"]
    assert received[0]["response_format"]["json_schema"] == {"name": "output", "schema": LABEL_SCHEMA, "strict": False}
    assert received[1]["response_format"]["schema"] == LABEL_SCHEMA


@pytest.mark.real
@pytest.mark.asyncio
async def test_json_schema_rejected_without_auto_is_a_model_error() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"error": {"message": "response_format type json_schema is not supported"}}

    request = GenerateRequest(messages=[Message(role="user", content="x")], json_schema=LABEL_SCHEMA)
    with stub_openai_server(respond) as (url, received):
        async with backend(url, schema_mode="json_schema") as model:
            with pytest.raises(RunError) as caught:
                await model.generate(request)
    assert caught.value.code == ErrorCode.MODEL_ERROR
    assert "400" in caught.value.message and "json_schema is not supported" in caught.value.message
    assert len(received) == 1


@pytest.mark.real
@pytest.mark.asyncio
async def test_completion_schema_goes_in_extra_body_and_legacy_logprobs_parse() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "id": "cmpl-stub",
            "object": "text_completion",
            "created": 0,
            "model": "stub",
            "choices": [
                {
                    "index": 0,
                    "text": "ok!",
                    "finish_reason": "stop",
                    "logprobs": {
                        "tokens": ["ok", "!"],
                        "token_logprobs": [-0.1, -0.5],
                        "top_logprobs": [{"ok": -0.1, "no": -2.5}, {"?": -0.4}],
                        "text_offset": [0, 2],
                    },
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    with stub_openai_server(respond) as (url, received):
        async with backend(url, chat=False, completion=True) as model:
            result = await model.generate(
                GenerateRequest(prompt="Say ok", json_schema=LABEL_SCHEMA, top_logprobs=2, max_tokens=5)
            )
    (sent,) = received
    assert sent["path"] == "/v1/completions"
    assert sent["json_schema"] == LABEL_SCHEMA and sent["logprobs"] == 2 and sent["max_tokens"] == 5
    assert result.text == "ok!"
    assert result.logprobs is not None
    assert [(e.token, e.logprob) for e in result.logprobs] == [("ok", -0.1), ("!", -0.5)]
    assert result.logprobs[0].top == {"ok": -0.1, "no": -2.5}
    assert result.logprobs[1].top == {"?": -0.4, "!": -0.5}  # the chosen token is always included


# -- faults --------------------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.asyncio
async def test_invalid_tool_arguments_are_a_model_error() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}
        return 200, chat_completion(None, [call])

    with stub_openai_server(respond) as (url, _):
        async with backend(url) as model:
            with pytest.raises(RunError) as caught:
                await model.generate(
                    GenerateRequest(messages=[Message(role="user", content="Weather?")], tools=[WEATHER_TOOL])
                )
    assert caught.value.code == ErrorCode.MODEL_ERROR
    assert "get_weather" in caught.value.message and "not valid JSON" in caught.value.message


@pytest.mark.real
@pytest.mark.asyncio
async def test_http_error_is_a_model_error_with_status_and_server_message() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 401, {"error": {"message": "Invalid API key provided", "type": "invalid_request_error"}}

    with stub_openai_server(respond) as (url, _):
        async with backend(url, api_key="sk-wrong") as model:
            with pytest.raises(RunError) as caught:
                await model.generate(GenerateRequest(messages=[Message(role="user", content="hi")]))
    message = caught.value.message
    assert caught.value.code == ErrorCode.MODEL_ERROR
    assert "401" in message and "Invalid API key provided" in message and "OPENAI_API_KEY" in message
    assert caught.value.details["status"] == 401


@pytest.mark.real
@pytest.mark.asyncio
async def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with backend(url) as model:
        with pytest.raises(RunError) as caught:
            await model.generate(GenerateRequest(messages=[Message(role="user", content="hi")]))
        with pytest.raises(RunError) as caught_check:
            await model.check()
    assert caught.value.code == caught_check.value.code == ErrorCode.MODEL_UNREACHABLE
    assert url in caught.value.message and "llama-server" in caught.value.message
    assert "MOA_SLM" in caught.value.message


@pytest.mark.real
@pytest.mark.asyncio
async def test_server_that_never_answers_times_out() -> None:
    with silent_server() as url:
        async with backend(url, timeout=0.5, chat=False, completion=True) as model:
            with pytest.raises(RunError) as caught:
                await model.generate(GenerateRequest(prompt="hi"))
    assert caught.value.code == ErrorCode.MODEL_TIMEOUT
    assert url in caught.value.message and "0.5 s" in caught.value.message and "MOA_TIMEOUT" in caught.value.message


@pytest.mark.real
@pytest.mark.asyncio
async def test_request_style_must_match_the_model() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # never contacted
    async with backend(url, chat=True, completion=False) as chat_only:
        with pytest.raises(UserError) as caught:
            await chat_only.generate(GenerateRequest(prompt="hi"))
    assert caught.value.code == ErrorCode.BAD_MODEL_SPEC and "chat-only" in caught.value.message
    async with backend(url, chat=False, completion=True) as base_only:
        with pytest.raises(UserError) as caught:
            await base_only.generate(GenerateRequest(messages=[Message(role="user", content="hi")]))
    assert caught.value.code == ErrorCode.BAD_MODEL_SPEC and "completion-only" in caught.value.message


@pytest.mark.asyncio
async def test_api_key_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    async with backend("http://127.0.0.1:1/v1") as local:  # a local server needs no key
        assert local.base_url == "http://127.0.0.1:1/v1"
    with pytest.raises(UserError) as caught:
        OpenAIBackend("openai:gpt-4o-mini", model="gpt-4o-mini")
    assert caught.value.code == ErrorCode.BAD_CONFIG and "OPENAI_API_KEY" in caught.value.message
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    hosted = OpenAIBackend("openai:gpt-4o-mini", model="gpt-4o-mini", price_per_1k=(0.15, 0.6))
    try:
        assert hosted.base_url == "https://api.openai.com/v1"
        assert hosted.price_per_1k == (0.15, 0.6) and hosted.capabilities.tools
    finally:
        await hosted.aclose()
