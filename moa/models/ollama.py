"""The Ollama backend: a model served by a running Ollama (``ollama serve``), through the official
``ollama`` client.

Chat requests go to ``/api/chat`` (messages, tools, ``format`` = JSON schema for constrained
decoding); completion requests go to ``/api/generate`` with ``raw=True`` so that Ollama applies no
chat template (few-shot prompts for base models). What the model can do is read once from
``/api/show`` (its ``capabilities`` list and chat ``template``) and cached; until that first probe
:attr:`OllamaBackend.capabilities` returns a conservative default.

A request whose connection broke before Ollama answered (e.g. a proxy in front of it closing an
idle keep-alive connection as it is reused) is sent again, ``connection_retries`` times at most,
within ``timeout`` (:mod:`moa.models.transport`). A refused connection fails at once.

Failures are turned into typed :class:`~moa.errors.RunError` codes in one place,
:meth:`OllamaBackend._errors`. The body of every successful answer to ``/api/chat``,
``/api/generate``, ``/api/show`` and ``/api/tags`` is checked against the client's own response
type by an httpx response hook before the client reads it (:data:`_REPLIES`): a body that is not
JSON, or JSON that is not that reply, is ``model_error`` (:class:`~moa.errors.ModelFailed`), never a
``JSONDecodeError`` or a ``TypeError`` from inside the client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import ollama
from pydantic import BaseModel

from moa.errors import ErrorCode, RunError, UserError
from moa.logs import get_logger
from moa.models import transport
from moa.models.base import (
    Capabilities,
    GenerateRequest,
    Generation,
    Message,
    ModelBackend,
    TokenLogprob,
    ToolCall,
    ToolSpec,
)
from moa.models.credentials import dropping_headers

log = get_logger(__name__)

_T = TypeVar("_T")

DEFAULT_CAPABILITIES = Capabilities(chat=True, completion=True, json_schema=True, logprobs=False, tools=False)
"""What :attr:`OllamaBackend.capabilities` reports before the model was probed."""

LOGPROBS_SINCE = (0, 12, 11)
"""The first Ollama release that returns token logprobs."""

_PLAIN_TEMPLATES = {"", "{{ .Prompt }}", "{{.Prompt}}"}
"""Templates that pass the prompt through unchanged: the model has no chat format (a base model)."""

_REPLIES: dict[str, tuple[type[BaseModel], str]] = {
    "/api/chat": (ollama.ChatResponse, "an Ollama chat response"),
    "/api/generate": (ollama.GenerateResponse, "an Ollama generate response"),
    "/api/show": (ollama.ShowResponse, "an Ollama show response"),
    "/api/tags": (ollama.ListResponse, "an Ollama model list"),
}
"""Endpoint (the end of the URL path) → the client's response type, checked by :func:`_check_reply`."""


async def _check_reply(response: httpx.Response) -> None:
    """httpx response hook: a successful answer's body must be the reply its endpoint promises
    (raises :class:`moa.models.transport.UnusableBody`, which :meth:`OllamaBackend._errors` translates)."""
    if not response.is_success:
        return  # the client turns it into a ResponseError
    path = response.request.url.path
    expected = next((reply for endpoint, reply in _REPLIES.items() if path.endswith(endpoint)), None)
    if expected is None:
        return
    await response.aread()
    transport.read_body(response, *expected)


class OllamaBackend(ModelBackend):
    """A model served by Ollama.

    Args:
        spec: the spec string that built this backend (``ollama:llama3.2:1b``).
        model: the Ollama model name (``llama3.2:1b``).
        host: Ollama's base URL.
        timeout: seconds allowed for connecting and for each read (a non-streamed answer
            arrives in one read, so this bounds a whole generation).
        max_concurrency: requests in flight at once from this backend.
        keep_alive: how long Ollama keeps the model loaded after a request (``"5m"``, ``"-1"``).
        connection_retries: how many times a request is sent again when its connection broke
            before Ollama answered (see :mod:`moa.models.transport`); 0 turns this off.
        api_key: a bearer token sent to ``host`` (Ollama's cloud). Without one no
            ``Authorization`` header is sent, even when ``OLLAMA_API_KEY`` is set: the official
            client would send that key to any host (the registry passes it for ``ollama_host``
            only, :mod:`moa.models.credentials`).
    """

    def __init__(
        self,
        spec: str,
        *,
        model: str,
        host: str = "http://127.0.0.1:11434",
        timeout: float = 60.0,
        max_concurrency: int = 2,
        keep_alive: str | None = None,
        connection_retries: int = 1,
        api_key: str | None = None,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        if connection_retries < 0:
            raise UserError(ErrorCode.BAD_CONFIG, f"{spec}: connection_retries must be 0 or more, not {connection_retries}")
        self._api_key = api_key
        self.model = model
        self.host = host
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.connection_retries = connection_retries
        self._capabilities: Capabilities | None = None
        self._bound: tuple[asyncio.AbstractEventLoop, ollama.AsyncClient] | None = None

    @property
    def capabilities(self) -> Capabilities:
        """The probed capabilities, or :data:`DEFAULT_CAPABILITIES` before the first request."""
        return self._capabilities or DEFAULT_CAPABILITIES

    def _client(self) -> ollama.AsyncClient:
        """The client for the running event loop (httpx connections must not cross loops)."""
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound[0] is not loop:
            # A client of an earlier loop is dropped: its connections died with that loop.
            hooks: dict[str, list[Any]] = {"response": [transport.mark_answered, _check_reply]}
            if self._api_key:
                headers = {"authorization": f"Bearer {self._api_key}"}
            else:  # the client adds OLLAMA_API_KEY to every request, to whatever host
                headers, hooks["request"] = {}, [dropping_headers(("authorization",))]
            client = ollama.AsyncClient(host=self.host, timeout=self.timeout, headers=headers, event_hooks=hooks)
            self._bound = (loop, client)
        return self._bound[1]

    async def _send(self, call: Callable[[], Awaitable[_T]], attempts: transport.Attempts) -> _T:
        """Await ``call()``, sent again if its connection broke before an answer; errors → RunError."""

        async def attempt(left: float) -> _T:
            if left >= self.timeout:  # the first attempt: the client's own timeout applies
                return await call()
            async with asyncio.timeout(left):  # a request sent again gets what is left
                return await call()

        before = attempts.retries
        with self._errors(attempts, before):
            return await transport.send(
                attempt,
                retries=self.connection_retries,
                timeout=self.timeout,
                attempts=attempts,
                spec=self.spec,
                host=self.host,
            )

    @contextmanager
    def _errors(self, attempts: transport.Attempts, before: int) -> Iterator[None]:
        """Turn client and transport failures into :class:`RunError` messages that say what to do."""
        try:
            yield
        except transport.UnusableBody as exc:
            hint = (
                "Check that the host is Ollama's root URL (e.g. http://127.0.0.1:11434, no /v1; an "
                "OpenAI-compatible server is 'openai:MODEL@http://HOST/v1'), not a web page or a proxy's login page."
                if exc.problems is None
                else "The server does not speak Ollama's API as moa uses it; check the spec's host and the server's log."
            )
            raise RunError(
                ErrorCode.MODEL_ERROR,
                f"Ollama at {self.host} answered {exc.summary} (model {self.model!r}). {hint}",
                details={"host": self.host, "model": self.model, **exc.details()},
            ) from exc
        except ollama.ResponseError as exc:
            if exc.status_code == 404 and "not found" in str(exc.error).lower():
                raise RunError(
                    ErrorCode.MODEL_ERROR,
                    f"model {self.model!r} is not available on Ollama at {self.host}: "
                    f"run `ollama pull {self.model}` (or pick a model listed by `ollama list`)",
                    details={"host": self.host, "model": self.model, "status": exc.status_code},
                ) from exc
            raise RunError(
                ErrorCode.MODEL_ERROR,
                f"Ollama at {self.host} failed for model {self.model!r}: {exc.error} (HTTP {exc.status_code})",
                details={"host": self.host, "model": self.model, "status": exc.status_code},
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise RunError(
                ErrorCode.MODEL_TIMEOUT,
                f"Ollama at {self.host} did not answer within {self.timeout:g} s (model {self.model!r}); "
                "raise the limit with MOA_TIMEOUT, lower max_tokens, or use a smaller model",
                details={"host": self.host, "model": self.model, "timeout_s": self.timeout},
            ) from exc
        except (ConnectionError, httpx.TransportError) as exc:  # ollama turns ConnectError into ConnectionError
            if transport.broken_cause(exc) is not None:
                raise self._broken_error(exc, attempts.retries - before) from exc
            raise RunError(
                ErrorCode.MODEL_UNREACHABLE,
                f"cannot reach Ollama at {self.host}: start it with `ollama serve` "
                f"(and `ollama pull {self.model}`), or set OLLAMA_HOST / MOA_SLM",
                details={"host": self.host, "model": self.model},
            ) from exc

    def _broken_error(self, exc: BaseException, resent: int) -> RunError:
        """Ollama (or a proxy in front of it) accepted the connection, then closed it without a (complete) answer."""
        if transport.broke_before_answer(exc):
            when = "before answering" + (f", also when the request was sent again ({resent}x)" if resent else "")
        else:
            when = "while its answer was arriving (not sent again: Ollama had already answered)"
        return RunError(
            ErrorCode.MODEL_UNREACHABLE,
            f"Ollama at {self.host} closed the connection {when}: {transport.root_cause(exc)}. Something "
            "accepts connections there but drops them: check Ollama's log (it may be crashing or "
            "restarting) or the proxy in front of it.",
            details={"host": self.host, "model": self.model, "retries": resent},
        )

    async def acapabilities(self) -> Capabilities:
        return await self._probe(transport.Attempts())

    async def _probe(self, attempts: transport.Attempts) -> Capabilities:
        """Read the model's capabilities from ``/api/show`` (once; cached)."""
        if self._capabilities is not None:
            return self._capabilities
        client = self._client()
        shown = await self._send(lambda: client.show(self.model), attempts)
        version = await self._version()
        names = set(shown.capabilities or ["completion"])  # Ollama < 0.6.4 lists none
        template = (shown.template or "").strip()
        self._capabilities = Capabilities(
            chat=template not in _PLAIN_TEMPLATES if shown.template is not None else True,
            completion="completion" in names,
            json_schema="completion" in names,
            logprobs=version is not None and version >= LOGPROBS_SINCE,
            tools="tools" in names,
            embeddings="embedding" in names,
        )
        log.info("ollama_model_probed", host=self.host, model=self.model, version=version,
                 capabilities=sorted(names), chat=self._capabilities.chat)
        return self._capabilities

    async def _version(self) -> tuple[int, ...] | None:
        """Ollama's version from ``/api/version``; ``None`` if it cannot be read."""
        try:
            # The ollama client (0.6) has no version(); its httpx client knows the parsed host.
            http: httpx.AsyncClient = self._client()._client
            response = await http.get("/api/version")
            raw = str(response.json().get("version", ""))
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        parts = [p for p in raw.split("-")[0].split(".") if p.isdigit()]
        return tuple(int(p) for p in parts) or None

    async def check(self) -> str:
        """Verify Ollama answers and has the model; return a one-line description."""
        client = self._client()
        listed = await self._send(client.list, transport.Attempts())
        caps = await self._probe(transport.Attempts())
        available = ", ".join(m.model or "?" for m in listed.models[:5])
        features = [name for name in ("chat", "completion", "tools", "logprobs", "embeddings") if getattr(caps, name)]
        log.debug("ollama_check", host=self.host, models=available)
        return f"{self.spec}: Ollama at {self.host}, model {self.model} ({', '.join(features)})"

    async def generate(self, request: GenerateRequest) -> Generation:
        """Run one chat (``/api/chat``) or raw completion (``/api/generate``) request."""
        attempts = transport.Attempts()
        caps = await self._probe(attempts)
        if request.prompt is None and not caps.chat:
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"Ollama model {self.model!r} has no chat template (a base model); use completion "
                "prompts with it, or point the tier at an instruction-tuned model",
            )
        options: dict[str, Any] = {"temperature": request.temperature, "num_predict": request.max_tokens}
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = request.stop
        extra: dict[str, Any] = {}
        if request.top_logprobs:
            extra = {"logprobs": True, "top_logprobs": request.top_logprobs}
        if self.keep_alive is not None:
            extra["keep_alive"] = self.keep_alive
        client = self._client()
        started = time.perf_counter()
        response: ollama.ChatResponse | ollama.GenerateResponse
        raw_calls: Sequence[ollama.Message.ToolCall]
        if request.prompt is not None:
            prompt = request.prompt
            generated = await self._send(
                lambda: client.generate(self.model, prompt, raw=True, format=request.json_schema, options=options, **extra),
                attempts,
            )
            text, raw_calls, response = generated.response or "", (), generated
        else:
            messages = _messages(request.messages or [])
            tools = [_tool(t) for t in request.tools or []] or None
            chatted = await self._send(
                lambda: client.chat(self.model, messages, tools=tools, format=request.json_schema, options=options, **extra),
                attempts,
            )
            text, raw_calls, response = chatted.message.content or "", chatted.message.tool_calls or (), chatted
        latency = time.perf_counter() - started
        return Generation(
            text=text,
            prompt_tokens=response.prompt_eval_count or 0,
            completion_tokens=response.eval_count or 0,
            latency_s=latency,
            finish_reason=response.done_reason,
            logprobs=_logprobs(response.logprobs),
            tool_calls=[_tool_call(i, call) for i, call in enumerate(raw_calls)],
            retries=attempts.retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP client (if it belongs to the running loop) and forget it."""
        bound, self._bound = self._bound, None
        if bound is not None and bound[0] is asyncio.get_running_loop():
            await bound[1].close()  # type: ignore[no-untyped-call]


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """moa messages → Ollama messages (tool results name their tool through ``tool_name``)."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
            names.update((c.id, c.name) for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id in names:
            item["tool_name"] = names[m.tool_call_id]
        out.append(item)
    return out


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters}}


def _tool_call(index: int, call: Any) -> ToolCall:
    """One Ollama tool call → :class:`ToolCall` (Ollama gives no ids: ``call_0``, ``call_1``...)."""
    arguments: Any = call.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {"_raw": arguments}
    call_id = getattr(call, "id", None) or f"call_{index}"
    return ToolCall(id=str(call_id), name=call.function.name,
                    arguments=dict(arguments) if isinstance(arguments, Mapping) else {"_raw": arguments})


def _logprobs(items: Sequence[Any] | None) -> list[TokenLogprob] | None:
    if not items:
        return None
    return [
        TokenLogprob(token=item.token, logprob=item.logprob,
                     top={alt.token: alt.logprob for alt in item.top_logprobs or []})
        for item in items
    ]
