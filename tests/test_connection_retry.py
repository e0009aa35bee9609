"""Sending a request again when its connection broke before the server answered.

- Unit tests drive :func:`moa.models.transport.send` with fake attempts that raise the real
  httpx / httpx2 errors, and check settings, registry, cache and accounting.
- Tests marked ``real`` run the real ``openai`` and ``ollama`` clients against
  :func:`support.flaky_server.flaky_server`, a raw HTTP/1.1 server on 127.0.0.1 that closes or resets
  connections on purpose; and against a port with nothing listening and one that never answers.
  No model runs: the server sends canned JSON.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import httpx2
import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs
from support.flaky_server import Action, FlakyServer, flaky_server

from moa.agent.context import RunContext
from moa.agent.structured import generate_structured
from moa.errors import ErrorCode, RunError, UserError
from moa.models import transport
from moa.models.base import GenerateRequest, Generation, Message
from moa.models.cache import CachedBackend, CallCache
from moa.models.ollama import OllamaBackend
from moa.models.openai import OpenAIBackend
from moa.models.registry import Models, create_backend
from moa.settings import Settings, load_settings
from moa.testing import FakeModel
from moa.usage import summarize

CHAT = "/v1/chat/completions"
HI = GenerateRequest(messages=[Message(role="user", content="hi")], max_tokens=5)


def resent_warnings(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "model_request_resent" and e["log_level"] == "warning"]


# -- transport.send with fakes -------------------------------------------------------------------


def broken(kind: type[httpx.TransportError] = httpx.RemoteProtocolError, *, answered: bool = False) -> Exception:
    """A transport error as httpx raises it, with its request (marked answered or not)."""
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    if answered:
        request.extensions[transport.ANSWERED] = True
    return kind("Server disconnected without sending a response.", request=request)


class Script:
    """An attempt function: raises the scripted errors in turn, then answers; records timeouts."""

    def __init__(self, *errors: Exception, delay: float = 0.0) -> None:
        self.errors = list(errors)
        self.delay = delay
        self.timeouts: list[float] = []

    async def __call__(self, timeout: float) -> str:
        self.timeouts.append(timeout)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


@pytest.mark.parametrize(
    "error",
    [
        broken(httpx.RemoteProtocolError),
        broken(httpx.ReadError),
        broken(httpx.WriteError),
        httpx2.ReadError("reset", request=httpx2.Request("POST", "http://127.0.0.1:1/")),
    ],
    ids=["remote-protocol", "read", "write", "httpx2-read"],
)
async def test_a_connection_broken_before_the_answer_is_sent_again(error: Exception) -> None:
    attempt, attempts = Script(error), transport.Attempts()
    with capture_logs() as logs:
        result = await transport.send(attempt, retries=1, timeout=30.0, attempts=attempts, spec="s")
    assert result == "answer" and attempts.retries == 1
    assert attempt.timeouts[0] == 30.0 and 29.0 < attempt.timeouts[1] < 30.0  # what is left
    (warning,) = resent_warnings(logs)
    assert warning["spec"] == "s" and warning["retry"] == 1 and type(error).__name__ in warning["error"]


async def test_the_cause_is_found_behind_the_client_error() -> None:
    class ClientError(Exception):
        pass

    wrapped = ClientError("Connection error.")
    wrapped.__cause__ = broken(httpx.ReadError)
    attempts = transport.Attempts()
    assert await transport.send(Script(wrapped), retries=1, timeout=5, attempts=attempts) == "answer"
    assert attempts.retries == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        ConnectionError("Failed to connect to Ollama"),
        httpx.ReadTimeout("timed out"),
        broken(httpx.ReadError, answered=True),
        ValueError("not JSON"),
    ],
    ids=["refused", "ollama-refused", "timeout", "answer-had-begun", "other"],
)
async def test_other_failures_are_not_sent_again(error: Exception) -> None:
    attempt, attempts = Script(error), transport.Attempts()
    with capture_logs() as logs, pytest.raises(type(error)):
        await transport.send(attempt, retries=3, timeout=5, attempts=attempts)
    assert len(attempt.timeouts) == 1 and attempts.retries == 0 and not resent_warnings(logs)


async def test_retries_are_bounded() -> None:
    attempt, attempts = Script(*(broken() for _ in range(5))), transport.Attempts()
    with pytest.raises(httpx.RemoteProtocolError):
        await transport.send(attempt, retries=2, timeout=5, attempts=attempts)
    assert len(attempt.timeouts) == 3 and attempts.retries == 2
    never = Script(broken())
    with pytest.raises(httpx.RemoteProtocolError):
        await transport.send(never, retries=0, timeout=5, attempts=transport.Attempts())
    assert len(never.timeouts) == 1


async def test_no_resend_once_the_timeout_is_spent() -> None:
    attempt = Script(broken(), delay=0.06)
    with pytest.raises(httpx.RemoteProtocolError):
        await transport.send(attempt, retries=1, timeout=0.05, attempts=transport.Attempts())
    assert len(attempt.timeouts) == 1


def test_root_cause_names_the_innermost_error() -> None:
    outer = RuntimeError("Connection error.")
    outer.__cause__ = httpx.ReadError("")
    outer.__cause__.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert transport.root_cause(outer) == "[Errno 104] Connection reset by peer"
    assert transport.root_cause(httpx.ReadError("")) == "ReadError"


# -- settings, registry, cache, accounting -------------------------------------------------------


def test_setting_reaches_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().connection_retries == 1
    monkeypatch.setenv("MOA_CONNECTION_RETRIES", "0")
    settings = load_settings()
    openai_backend = create_backend("openai:m@http://127.0.0.1:1/v1", settings)
    ollama_backend = create_backend("ollama:m@http://127.0.0.1:1", settings)
    assert isinstance(openai_backend, OpenAIBackend) and isinstance(ollama_backend, OllamaBackend)
    assert openai_backend.connection_retries == ollama_backend.connection_retries == 0
    with pytest.raises(UserError) as caught:
        load_settings(connection_retries=-1)
    assert caught.value.code == ErrorCode.BAD_CONFIG
    with pytest.raises(UserError):
        OllamaBackend("ollama:m", model="m", connection_retries=-1)


async def test_a_cache_hit_made_no_retry(tmp_path: Any) -> None:
    model = FakeModel(lambda request: Generation(text="x", retries=1))
    with CallCache(tmp_path / "cache.sqlite", ttl=60) as cache:
        cached = CachedBackend(model, cache)
        first = await cached.generate(GenerateRequest(prompt="p"))
        second = await cached.generate(GenerateRequest(prompt="p"))
    assert (first.retries, second.retries, second.cached) == (1, 0, True)


class Label(BaseModel):
    label: str


async def test_retries_are_accounted() -> None:
    model = FakeModel(lambda request: Generation(text='{"label": "a"}', retries=1))
    ctx = RunContext.create(models=Models(Settings(), slm=model, llm=model))
    with ctx.scope() as scope:
        await generate_structured(ctx, "slm", GenerateRequest(prompt="p"), Label)
    (usage,) = scope.usage
    assert usage.retries == 1
    summary = summarize([usage, usage.model_copy(update={"tier": "llm", "retries": 0})])
    assert summary.retries == 1 and summary.per_tier["slm"].retries == 1 and summary.per_tier["llm"].retries == 0


def test_the_cli_accounting_line_shows_retries() -> None:
    from moa.cli.main import _accounting
    from moa.usage import Usage
    from moa.workflow.results import RunResult

    def line(retries: int) -> str:
        usage = [Usage(model="openai:m", tier="slm", retries=retries)]
        return _accounting(RunResult(run_id="r", task="t", graph="g", status="ok", usage=usage, summary=summarize(usage)))

    assert "sent again after a broken connection 2" in line(2)
    assert "sent again" not in line(0)


# -- the real openai client against a flaky server -----------------------------------------------


def openai_respond(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if path == "/v1/models":
        return 200, {"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "x"}]}
    return 200, {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": '{"label": "ok"}'}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@contextmanager
def openai_server(*actions: Action, then: Action = "answer") -> Iterator[FlakyServer]:
    """A flaky server whose n-th chat request gets ``actions[n]`` (then ``then``)."""

    def plan(path: str, n: int) -> Action:
        if path != CHAT:
            return "answer"
        return actions[n] if n < len(actions) else then

    with flaky_server(openai_respond, plan) as server:
        yield server


@asynccontextmanager
async def openai_backend(url: str, **options: Any) -> AsyncIterator[OpenAIBackend]:
    options.setdefault("timeout", 10.0)
    backend = OpenAIBackend(f"openai:stub@{url}", model="stub", base_url=url, **options)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.mark.real
@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_openai_first_connection_dropped_then_answered(drop: Action) -> None:
    with openai_server(drop) as server:
        async with openai_backend(server.url + "/v1") as model:
            with capture_logs() as logs:
                generation = await model.generate(HI)
    assert generation.text == '{"label": "ok"}' and generation.retries == 1
    assert [(r.connection, r.action) for r in server.received] == [(1, drop), (2, "answer")]
    (warning,) = resent_warnings(logs)
    assert warning["base_url"] == server.url + "/v1"
    expected = "RemoteProtocolError: Server disconnected" if drop == "close" else "ReadError: [Errno 104]"
    assert warning["error"].startswith(expected)


@pytest.mark.real
async def test_openai_reused_keep_alive_connection_closed_by_the_server() -> None:
    """The benchmark's failure: the server closes an idle connection just as the client reuses it."""
    with openai_server("answer", "reset") as server:
        async with openai_backend(server.url + "/v1") as model:
            first = await model.generate(HI)
            second = await model.generate(HI)
    assert (first.retries, second.retries) == (0, 1)
    # request 2 went on the kept-alive connection 1 and was dropped; the retry opened connection 2
    assert [(r.connection, r.action) for r in server.received] == [(1, "answer"), (1, "reset"), (2, "answer")]


@pytest.mark.real
async def test_openai_server_that_always_drops_is_unreachable_after_one_retry() -> None:
    with openai_server(then="close") as server:
        async with openai_backend(server.url + "/v1") as model:
            with pytest.raises(RunError) as caught:
                await model.generate(HI)
    error = caught.value
    assert error.code == ErrorCode.MODEL_UNREACHABLE and error.details["retries"] == 1
    assert server.url in error.message and "closed the connection before answering" in error.message
    assert "sent again" in error.message and "check the server's log" in error.message
    assert len(server.received) == 2  # the request and one retry, then the error


@pytest.mark.real
async def test_openai_retry_can_be_turned_off() -> None:
    with openai_server("reset") as server:
        async with openai_backend(server.url + "/v1", connection_retries=0) as model:
            with pytest.raises(RunError) as caught:
                await model.generate(HI)
    assert caught.value.code == ErrorCode.MODEL_UNREACHABLE and "sent again" not in caught.value.message
    assert len(server.received) == 1


@pytest.mark.real
async def test_openai_answer_cut_off_midway_is_not_sent_again() -> None:
    with openai_server("cut") as server:
        async with openai_backend(server.url + "/v1") as model:
            with pytest.raises(RunError) as caught:
                await model.generate(HI)
    assert caught.value.code == ErrorCode.MODEL_UNREACHABLE
    assert "while its answer was arriving" in caught.value.message
    assert server.actions(CHAT) == ["cut"]


@pytest.mark.real
@pytest.mark.parametrize("status", [429, 503])
async def test_openai_rate_limit_and_overload_are_not_sent_again(status: int) -> None:
    def respond(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return status, {"error": {"message": "slow down", "type": "rate_limit_error"}}

    with flaky_server(respond, lambda path, n: "answer") as server:
        async with openai_backend(server.url + "/v1") as model:
            with pytest.raises(RunError) as caught:
                await model.generate(HI)
    assert caught.value.code == ErrorCode.MODEL_ERROR and caught.value.details["status"] == status
    assert len(server.received) == 1


@pytest.mark.real
async def test_openai_retry_is_counted_in_usage() -> None:
    with openai_server("close") as server:
        async with openai_backend(server.url + "/v1") as model:
            ctx = RunContext.create(models=Models(Settings(), slm=model, llm=model))
            with ctx.scope() as scope:
                structured = await generate_structured(ctx, "llm", HI, Label)
    assert structured.value == Label(label="ok")
    assert [u.retries for u in scope.usage] == [1]
    assert summarize(scope.usage).retries == 1


@pytest.mark.real
async def test_openai_check_is_retried_too() -> None:
    def plan(path: str, n: int) -> Action:
        return "close" if (path, n) == ("/v1/models", 0) else "answer"

    with flaky_server(openai_respond, plan) as server:
        async with openai_backend(server.url + "/v1") as model:
            assert "1 model(s)" in await model.check()
    assert server.actions("/v1/models") == ["close", "answer"]


@pytest.mark.real
async def test_openai_down_server_fails_fast_without_retry(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/v1"
    async with openai_backend(url, timeout=30.0) as model:
        with capture_logs() as logs, pytest.raises(RunError) as caught:
            await model.generate(HI)
    # refused at once: unreachable, not a timeout after 30 s, and not sent again
    assert caught.value.code == ErrorCode.MODEL_UNREACHABLE and "llama-server" in caught.value.message
    assert not resent_warnings(logs)


@contextmanager
def silent_listener() -> Iterator[str]:
    """A port where the kernel accepts connections and nothing ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


@pytest.mark.real
async def test_openai_slow_server_times_out_once() -> None:
    with silent_listener() as url:
        async with openai_backend(url + "/v1", timeout=0.5) as model:
            with capture_logs() as logs, pytest.raises(RunError) as caught:
                await model.generate(HI)
    assert caught.value.code == ErrorCode.MODEL_TIMEOUT and not resent_warnings(logs)  # a timeout is not sent again


# -- the real ollama client against a flaky server -----------------------------------------------


def ollama_respond(method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if path == "/api/show":
        return 200, {"template": "{{ .Prompt }}", "capabilities": ["completion"], "model_info": {}, "modified_at": "2025-01-01T00:00:00Z"}
    if path == "/api/version":
        return 200, {"version": "0.13.0"}
    return 200, {
        "model": "m",
        "created_at": "2025-01-01T00:00:00Z",
        "response": "ok",
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 1,
    }


@contextmanager
def ollama_server(*actions: Action, then: Action = "answer") -> Iterator[FlakyServer]:
    def plan(path: str, n: int) -> Action:
        if path != "/api/generate":
            return "answer"
        return actions[n] if n < len(actions) else then

    with flaky_server(ollama_respond, plan) as server:
        yield server


@pytest.mark.real
@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_ollama_dropped_request_is_sent_again(drop: Action) -> None:
    with ollama_server(drop) as server:
        backend = OllamaBackend("ollama:m", model="m", host=server.url, timeout=10)
        with capture_logs() as logs:
            generation = await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
        await backend.aclose()
    assert generation.text == "ok" and generation.retries == 1
    assert server.actions("/api/generate") == [drop, "answer"]
    (warning,) = resent_warnings(logs)
    assert warning["host"] == server.url


@pytest.mark.real
async def test_ollama_server_that_always_drops_is_unreachable_after_one_retry() -> None:
    with ollama_server(then="reset") as server:
        backend = OllamaBackend("ollama:m", model="m", host=server.url, timeout=10)
        with pytest.raises(RunError) as caught:
            await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
        await backend.aclose()
    error = caught.value
    assert error.code == ErrorCode.MODEL_UNREACHABLE and error.details["retries"] == 1
    assert "closed the connection before answering" in error.message and "ollama serve" not in error.message
    assert server.actions("/api/generate") == ["reset", "reset"]


@pytest.mark.real
async def test_ollama_down_server_fails_fast_without_retry(free_port: int) -> None:
    backend = OllamaBackend("ollama:m", model="m", host=f"http://127.0.0.1:{free_port}", timeout=30)
    with capture_logs() as logs, pytest.raises(RunError) as caught:
        await backend.generate(GenerateRequest(prompt="hi", max_tokens=1))
    # refused at once: unreachable, not a timeout after 30 s, and not sent again
    assert caught.value.code == ErrorCode.MODEL_UNREACHABLE and "ollama serve" in caught.value.message
    assert not resent_warnings(logs)
