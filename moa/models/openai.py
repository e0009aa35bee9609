"""OpenAI-compatible backend: OpenAI, vLLM, llama.cpp server, LM Studio, Gemini / Anthropic compat.

One :class:`OpenAIBackend` talks to one model behind an OpenAI-style HTTP API through the official
``openai`` client (:class:`openai.AsyncOpenAI`):

- chat requests (``GenerateRequest.messages``) go to ``/chat/completions``, with tools, tool
  calls / tool results, JSON-schema constrained output and per-token logprobs;
- completion requests (``GenerateRequest.prompt``, for base models without a chat template) go to
  ``/completions``, only when the backend was built with ``completion=True``.

Structured output on chat uses ``response_format={"type": "json_schema", ...}``. Some servers
reject that type (llama-cpp-python's server accepts only ``{"type": "json_object", "schema": ...}``);
with ``schema_mode="auto"`` the first 400 answer to a schema request is retried once in the
``json_object`` form and that choice is remembered for the backend's later calls. On the
completions endpoint the schema is sent as ``extra_body={"json_schema": schema}`` (llama.cpp
server convention).

The output length is sent as ``max_tokens``: some servers (llama.cpp) ignore
``max_completion_tokens``. The client's own retries are off (``max_retries=0``: they would also
retry refused connections, timeouts, 429 and 5xx). moa sends a request again only when its
connection broke before the server answered (a server closing an idle keep-alive connection just
as it is reused), ``connection_retries`` times at most, within ``timeout``; see
:mod:`moa.models.transport`. A refused connection fails at once with ``model_unreachable``.

Every client call goes through one translation point, :meth:`OpenAIBackend._call` (httpx's
``map_httpcore_exceptions`` idea): it turns the client's exceptions into typed
:class:`~moa.errors.RunError` codes, and it reads the answer's body itself (the client's raw
response) into the small pydantic models at the end of this module, which hold only the fields
moa uses. A 200 answer whose body is not JSON (a web page, a proxy's login page, a server that
crashed mid-write) or whose JSON is not the expected reply (no ``choices``, ``content`` a number,
a tool call without a function...) is ``model_error`` (:class:`~moa.errors.ModelFailed`), which
escalates like any failed model call; it never reaches the code that reads the reply.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import openai
from pydantic import BaseModel, ConfigDict

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
from moa.models.credentials import OPENAI_ACCOUNT_HEADERS, OPENAI_URL, dropping_headers, same_url

if TYPE_CHECKING:
    import httpx2  # the openai client (3.x) runs on httpx2

__all__ = ["OpenAIBackend", "SchemaMode"]

SchemaMode = Literal["json_schema", "json_object", "auto"]
"""How a JSON schema is sent on chat requests: ``json_schema`` (OpenAI, vLLM, llama.cpp server),
``json_object`` + ``schema`` (llama-cpp-python's server), or ``auto`` (``json_schema`` first, then
``json_object`` once if the server answers 400)."""

_ReplyT = TypeVar("_ReplyT", bound="_Wire")

_log = get_logger(__name__)

_START_HINT = (
    "Start it (e.g. `llama-server -m model.gguf --port 8080`, `vllm serve MODEL`, LM Studio's "
    "server) or point MOA_SLM / MOA_LLM elsewhere."
)


class OpenAIBackend(ModelBackend):
    """A model served behind an OpenAI-compatible HTTP API.

    Args:
        spec: The spec string that built this backend (kept for usage records).
        model: The model name sent with every request (local servers often ignore it).
        base_url: The API root, e.g. ``http://127.0.0.1:8080/v1``; ``None`` means OpenAI itself
            (or ``OPENAI_BASE_URL``).
        api_key: The API key sent to ``base_url``. ``None``: ``OPENAI_API_KEY`` when ``base_url``
            is ``None`` (the client's default URL, the one that key is for); with a ``base_url``
            and no ``api_key`` no key is sent at all (no ``Authorization`` header), so a key
            never reaches a server it was not given for (:mod:`moa.models.credentials`).
        timeout: Seconds allowed for one HTTP request (connect, write, read); a request sent
            again gets what is left of it.
        connection_retries: How many times a request is sent again when its connection broke
            before the server answered (see :mod:`moa.models.transport`); 0 turns this off.
        max_concurrency: In-flight requests allowed through :meth:`agenerate`.
        chat: The model has a chat template (instruction-tuned); enables chat requests.
        completion: Raw text completion (``/completions``) is available, for base models.
        schema_mode: How JSON schemas are sent on chat requests, see :data:`SchemaMode`.
        price_per_1k: (prompt, completion) price in $ per 1k tokens.

    Raises:
        UserError: ``BAD_CONFIG`` when no API key can be found for OpenAI itself.
    """

    def __init__(
        self,
        spec: str,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 4,
        chat: bool = True,
        completion: bool = False,
        schema_mode: SchemaMode = "auto",
        price_per_1k: tuple[float, float] = (0.0, 0.0),
        connection_retries: int = 1,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        if connection_retries < 0:
            raise UserError(ErrorCode.BAD_CONFIG, f"{spec}: connection_retries must be 0 or more, not {connection_retries}")
        if schema_mode not in ("json_schema", "json_object", "auto"):
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"{spec}: schema_mode must be 'json_schema', 'json_object' or 'auto', not {schema_mode!r}",
            )
        key = api_key if api_key is not None or base_url is not None else os.environ.get("OPENAI_API_KEY")
        if not key and same_url(base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL, OPENAI_URL):
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"{spec}: no API key for OpenAI. Set OPENAI_API_KEY, or give a base_url for a local "
                "OpenAI-compatible server (llama.cpp, vLLM, LM Studio), which needs no key.",
            )
        self.model = model
        self.timeout = timeout
        self.connection_retries = connection_retries
        self.price_per_1k = price_per_1k
        self._chat = chat
        self._completion = completion
        self._schema_mode: SchemaMode = schema_mode
        self._use_json_object = schema_mode == "json_object"
        self._gives_logprobs: bool | None = None
        """Whether the server answered a logprobs request with logprobs (``None``: not asked yet)."""
        hooks: dict[str, list[Any]] = {"response": [transport.mark_answered]}
        if not key:  # the client insists on a key: it gets a stand-in that never leaves this process
            hooks["request"] = [dropping_headers(("authorization", *OPENAI_ACCOUNT_HEADERS))]
        elif base_url is not None and not same_url(base_url, os.environ.get("OPENAI_BASE_URL") or OPENAI_URL):
            hooks["request"] = [dropping_headers(OPENAI_ACCOUNT_HEADERS)]  # OPENAI_ORG_ID / _PROJECT_ID are OpenAI's
        self.sends_key = bool(key)
        """Whether requests carry an API key (``Authorization``)."""
        http = openai.DefaultAsyncHttpxClient(event_hooks=hooks)
        self._client = openai.AsyncOpenAI(api_key=key or "no-key", base_url=base_url, timeout=timeout, max_retries=0, http_client=http)
        self.base_url = str(self._client.base_url).rstrip("/")

    @property
    def capabilities(self) -> Capabilities:
        """Chat / completion as configured; JSON schema; tools on chat models; logprobs until the
        server is seen to ignore a request for them (then confidence comes from elsewhere, see
        :meth:`moa.agent.model.ModelAgent._confidence_method`)."""
        return Capabilities(
            chat=self._chat,
            completion=self._completion,
            json_schema=True,
            logprobs=self._gives_logprobs is not False,
            tools=self._chat,
            embeddings=False,
        )

    @property
    def schema_format(self) -> Literal["json_schema", "json_object"]:
        """The ``response_format`` type chat schema requests use now (``auto`` may have fallen back)."""
        return "json_object" if self._use_json_object else "json_schema"

    async def generate(self, request: GenerateRequest) -> Generation:
        """Send one chat or completion request; see the module docstring for the mapping.

        Raises:
            UserError: ``BAD_MODEL_SPEC`` when the request style is not enabled for this model,
                ``INVALID_INPUT`` when the request is malformed.
            RunError: ``MODEL_UNREACHABLE``, ``MODEL_TIMEOUT`` or ``MODEL_ERROR``.
        """
        if (request.prompt is None) == (request.messages is None):
            raise UserError(
                ErrorCode.INVALID_INPUT,
                "a GenerateRequest needs exactly one of `prompt` (completion) or `messages` (chat)",
            )
        started = time.perf_counter()
        attempts = transport.Attempts()
        if request.prompt is not None:
            generation = await self._complete(request, request.prompt, attempts)
        else:
            generation = await self._chat_complete(request, request.messages or [], attempts)
        generation.latency_s = time.perf_counter() - started
        generation.retries = attempts.retries
        if request.top_logprobs > 0 and generation.text:
            self._note_logprobs(generation.logprobs is not None)
        _log.debug(
            "model_call",
            spec=self.spec,
            style="completion" if request.prompt is not None else "chat",
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            latency_s=round(generation.latency_s, 4),
            finish_reason=generation.finish_reason,
            retries=generation.retries,
        )
        return generation

    async def check(self) -> str:
        """List the server's models and describe the endpoint; raise RunError if unreachable."""
        page = await self._call(lambda timeout: self._client.models.with_raw_response.list(timeout=timeout), transport.Attempts(), _ModelList)
        ids = [m.id for m in page.data]
        listed = "listed" if self.model in ids else "not listed; local servers usually serve any name"
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        return f"{self.spec}: {self.base_url} serves {len(ids)} model(s) [{shown}]; model {self.model!r} {listed}"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    # -- chat ---------------------------------------------------------------------------------

    async def _chat_complete(
        self, request: GenerateRequest, messages: Sequence[Message], attempts: transport.Attempts
    ) -> Generation:
        if not self._chat:
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"{self.spec}: {self.model!r} is configured as a completion-only (base) model, so it "
                "cannot take chat messages. Send a `prompt` instead, or enable chat for this model.",
            )
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [_message_to_openai(m) for m in messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = request.stop
        if request.tools:
            kwargs["tools"] = [_tool_to_openai(t) for t in request.tools]
        if request.top_logprobs > 0:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.top_logprobs
        schema = request.json_schema
        if schema is None:
            response = await self._call(lambda timeout: self._create_chat(kwargs, timeout), attempts, _ChatReply)
        else:
            response = await self._chat_with_schema(kwargs, schema, attempts)

        if not response.choices:
            raise RunError(ErrorCode.MODEL_ERROR, f"{self.base_url} returned no choices for {self.model!r}")
        choice = response.choices[0]
        message = choice.message
        return Generation(
            text=message.content or "",
            prompt_tokens=(response.usage.prompt_tokens if response.usage else None) or 0,
            completion_tokens=(response.usage.completion_tokens if response.usage else None) or 0,
            finish_reason=choice.finish_reason,
            logprobs=_chat_logprobs(choice.logprobs) if request.top_logprobs > 0 else None,
            tool_calls=self._parse_tool_calls(message.tool_calls or []),
        )

    async def _chat_with_schema(
        self, kwargs: dict[str, Any], schema: dict[str, Any], attempts: transport.Attempts
    ) -> _ChatReply:
        """Chat with a schema-constrained output, falling back to ``json_object`` once in auto mode."""
        json_object: dict[str, Any] = {"type": "json_object", "schema": schema}
        if self._use_json_object:
            return await self._call(
                lambda timeout: self._create_chat({**kwargs, "response_format": json_object}, timeout), attempts, _ChatReply
            )
        json_schema: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": False},
        }
        try:
            return await self._call(
                lambda timeout: self._create_chat({**kwargs, "response_format": json_schema}, timeout),
                attempts,
                _ChatReply,
                passthrough=(openai.BadRequestError, openai.UnprocessableEntityError),
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if self._schema_mode != "auto":
                raise self._status_error(exc) from exc
            _log.warning(
                "json_schema_rejected",
                spec=self.spec,
                base_url=self.base_url,
                status=exc.status_code,
                server_message=_server_message(exc),
                retry_with="json_object",
            )
        response = await self._call(
            lambda timeout: self._create_chat({**kwargs, "response_format": json_object}, timeout), attempts, _ChatReply
        )
        self._use_json_object = True  # remembered: later calls go straight to json_object
        return response

    async def _create_chat(self, kwargs: dict[str, Any], timeout: float) -> _Raw:
        return await self._client.chat.completions.with_raw_response.create(**kwargs, timeout=timeout)

    def _parse_tool_calls(self, raw_calls: Sequence[_ToolCall]) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for raw in raw_calls:
            function = raw.function
            if function is None:
                raise RunError(
                    ErrorCode.MODEL_ERROR,
                    f"{self.base_url} returned a {raw.type or 'non-function'!r} tool call; "
                    "moa only handles function tools",
                )
            if isinstance(function.arguments, dict):  # some servers send the object itself
                calls.append(ToolCall(id=raw.id or f"call_{len(calls)}", name=function.name, arguments=function.arguments))
                continue
            arguments_text = function.arguments or ""
            try:
                arguments = json.loads(arguments_text) if arguments_text.strip() else {}
            except json.JSONDecodeError as exc:
                raise RunError(
                    ErrorCode.MODEL_ERROR,
                    f"{self.model!r} at {self.base_url} called tool {function.name!r} with arguments that "
                    f"are not valid JSON ({exc.msg}): {arguments_text[:200]!r}. Use a model with reliable "
                    "tool calling, or point this tier at a model that supports tool calls.",
                    details={"tool": function.name, "arguments": arguments_text[:2000]},
                ) from exc
            if not isinstance(arguments, dict):
                raise RunError(
                    ErrorCode.MODEL_ERROR,
                    f"{self.model!r} at {self.base_url} called tool {function.name!r} with JSON arguments "
                    f"that are not an object: {arguments_text[:200]!r}",
                    details={"tool": function.name, "arguments": arguments_text[:2000]},
                )
            calls.append(ToolCall(id=raw.id or f"call_{len(calls)}", name=function.name, arguments=arguments))
        return calls

    # -- completion ---------------------------------------------------------------------------

    async def _complete(self, request: GenerateRequest, prompt: str, attempts: transport.Attempts) -> Generation:
        if not self._completion:
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"{self.spec}: {self.model!r} is configured as chat-only, so it cannot take a raw "
                "completion `prompt`. Send chat `messages` instead, or enable completion for this "
                "model if its server offers /v1/completions (llama.cpp, vLLM).",
            )
        if request.tools:
            raise UserError(
                ErrorCode.INVALID_INPUT,
                "tools need a chat request (`messages`); the completions endpoint cannot call tools",
            )
        kwargs: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = request.stop
        if request.top_logprobs > 0:
            kwargs["logprobs"] = request.top_logprobs
        if request.json_schema is not None:
            kwargs["extra_body"] = {"json_schema": request.json_schema}
        response = await self._call(
            lambda timeout: self._client.completions.with_raw_response.create(**kwargs, timeout=timeout), attempts, _CompletionReply
        )
        if not response.choices:
            raise RunError(ErrorCode.MODEL_ERROR, f"{self.base_url} returned no choices for {self.model!r}")
        choice = response.choices[0]
        return Generation(
            text=choice.text or "",
            prompt_tokens=(response.usage.prompt_tokens if response.usage else None) or 0,
            completion_tokens=(response.usage.completion_tokens if response.usage else None) or 0,
            finish_reason=choice.finish_reason,
            logprobs=_completion_logprobs(choice.logprobs) if request.top_logprobs > 0 else None,
        )

    def _note_logprobs(self, given: bool) -> None:
        """Remember whether the server gives logprobs; say once when it ignores the request."""
        if not given and self._gives_logprobs is None:
            _log.warning(
                "server_gives_no_logprobs",
                spec=self.spec,
                hint="confidence comes from agreement of samples where an answer could escalate, else the model's own score",
            )
        if self._gives_logprobs is None or not given:
            self._gives_logprobs = given

    # -- errors -------------------------------------------------------------------------------

    async def _call(
        self,
        make: Callable[[float], Awaitable[_Raw]],
        attempts: transport.Attempts,
        reply: type[_ReplyT],
        *,
        passthrough: tuple[type[openai.APIStatusError], ...] = (),
    ) -> _ReplyT:
        """The one translation point: await one raw client call (``make(timeout)``), sending it
        again if its connection broke before an answer (:func:`moa.models.transport.send`); turn
        the client's exceptions into :class:`RunError`; read the answer's body as ``reply``
        (:meth:`_read`). Re-sends are added to ``attempts``."""
        before = attempts.retries
        try:
            raw = await transport.send(
                make,
                retries=self.connection_retries,
                timeout=self.timeout,
                attempts=attempts,
                spec=self.spec,
                base_url=self.base_url,
            )
        except openai.APITimeoutError as exc:
            raise RunError(
                ErrorCode.MODEL_TIMEOUT,
                f"the OpenAI-compatible server at {self.base_url} did not answer within "
                f"{self.timeout:g} s (model {self.model!r}). Raise the timeout (setting MOA_TIMEOUT), "
                "lower max_tokens, or use a faster model.",
                details={"base_url": self.base_url, "timeout_s": self.timeout},
            ) from exc
        except openai.APIConnectionError as exc:
            if transport.broken_cause(exc) is not None:
                raise self._broken_error(exc, attempts.retries - before) from exc
            raise RunError(
                ErrorCode.MODEL_UNREACHABLE,
                f"cannot reach the OpenAI-compatible server at {self.base_url}: {transport.root_cause(exc)}. "
                + _START_HINT,
                details={"base_url": self.base_url},
            ) from exc
        except openai.APIStatusError as exc:
            if isinstance(exc, passthrough):
                raise
            raise self._status_error(exc) from exc
        except openai.APIError as exc:  # e.g. a response body that is not what the API promises
            raise RunError(
                ErrorCode.MODEL_ERROR,
                f"the OpenAI-compatible server at {self.base_url} sent an unusable answer: {exc.message}",
                details={"base_url": self.base_url},
            ) from exc
        return self._read(raw.http_response, reply)

    def _read(self, response: httpx2.Response, reply: type[_ReplyT]) -> _ReplyT:
        """The body of a successful answer as ``reply``; ``model_error`` when it is not JSON or
        not that reply (the server answered, but nothing usable: it is not sent again)."""
        try:
            return transport.read_body(response, reply, reply.what)
        except transport.UnusableBody as exc:
            if exc.problems is None:
                hint = (
                    "Check that the URL is the API root of an OpenAI-compatible server (often ending in /v1), "
                    "not a web page or a proxy's login page; a server that fails while answering sends this too."
                )
            else:
                hint = "The server does not speak the OpenAI API as moa uses it; check the spec's URL and the server's log."
            raise RunError(
                ErrorCode.MODEL_ERROR,
                f"the OpenAI-compatible server at {self.base_url} answered {exc.summary} (model {self.model!r}). {hint}",
                details={"base_url": self.base_url, **exc.details()},
            ) from exc

    def _broken_error(self, exc: openai.APIConnectionError, resent: int) -> RunError:
        """The server accepted the connection, then closed it without a (complete) answer."""
        if transport.broke_before_answer(exc):
            when = "before answering" + (f", also when the request was sent again ({resent}x)" if resent else "")
        else:
            when = "while its answer was arriving (not sent again: the server had already answered)"
        return RunError(
            ErrorCode.MODEL_UNREACHABLE,
            f"the OpenAI-compatible server at {self.base_url} closed the connection {when}: "
            f"{transport.root_cause(exc)}. Something accepts connections there but drops them: check the "
            "server's log (it may be crashing or restarting) or the proxy in front of it.",
            details={"base_url": self.base_url, "retries": resent},
        )

    def _status_error(self, exc: openai.APIStatusError) -> RunError:
        status = exc.status_code
        hint = ""
        if status in (401, 403):
            hint = " Check the API key (OPENAI_API_KEY, or the key configured for this model)."
        elif status == 404:
            hint = f" Check the model name ({self.model!r}) and that base_url ends with the API root (often /v1)."
        elif status == 429:
            hint = " The server is rate-limiting; lower MOA_CONCURRENCY (or slm_concurrency / llm_concurrency) or retry later."
        elif status >= 500:
            hint = " The server failed or is overloaded (moa does not send the request again); check its log, or retry later."
        retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
        if retry_after and status in (429, 503):
            wait = f"{retry_after.strip()} s" if retry_after.strip().isdigit() else f"until {retry_after}"
            hint += f" It asks to wait {wait} (Retry-After)."
        details: dict[str, Any] = {"base_url": self.base_url, "status": status}
        if retry_after:
            details["retry_after"] = retry_after
        return RunError(
            ErrorCode.MODEL_ERROR,
            f"the OpenAI-compatible server at {self.base_url} answered HTTP {status} for model "
            f"{self.model!r}: {_server_message(exc)}.{hint}",
            details=details,
        )


def _message_to_openai(message: Message) -> dict[str, Any]:
    """One moa :class:`Message` as an OpenAI chat message dict."""
    if message.role == "tool":
        if not message.tool_call_id:
            raise UserError(
                ErrorCode.INVALID_INPUT,
                "a tool message needs the `tool_call_id` of the call it answers",
            )
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    """One :class:`ToolSpec` as an OpenAI function tool."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _chat_logprobs(logprobs: _ChatLogprobs | None) -> list[TokenLogprob] | None:
    """Chat ``choice.logprobs.content`` → :class:`TokenLogprob` list (None if the server sent none)."""
    if logprobs is None or not logprobs.content:
        return None
    return [_token_logprob(entry) for entry in logprobs.content]


def _completion_logprobs(logprobs: _CompletionLogprobs | None) -> list[TokenLogprob] | None:
    """Completion logprobs → :class:`TokenLogprob` list.

    OpenAI's legacy shape has parallel lists ``tokens`` / ``token_logprobs`` / ``top_logprobs``;
    llama.cpp's server sends the chat shape (``content``: one entry per token) instead.
    """
    if logprobs is None:
        return None
    if logprobs.tokens:
        values = logprobs.token_logprobs or []
        tops = logprobs.top_logprobs or []
        result: list[TokenLogprob] = []
        for index, token in enumerate(logprobs.tokens):
            value = (values[index] if index < len(values) else None) or 0.0
            top: dict[str, float] = dict((tops[index] if index < len(tops) else None) or {})
            top.setdefault(token, value)
            result.append(TokenLogprob(token=token, logprob=value, top=top))
        return result
    if not logprobs.content:
        return None
    return [_token_logprob(entry) for entry in logprobs.content]


def _token_logprob(entry: _TokenLogprob) -> TokenLogprob:
    """One per-token entry → :class:`TokenLogprob` (the chosen token is always among ``top``)."""
    top: dict[str, float] = {}
    for alternative in entry.top_logprobs or []:
        top.setdefault(alternative.token, alternative.logprob)
    top.setdefault(entry.token, entry.logprob)
    return TokenLogprob(token=entry.token, logprob=entry.logprob, top=top)


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message, from the common body shapes, else the client's summary."""
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    text = exc.response.text if exc.response is not None else ""
    return text[:500] if text else exc.message


# -- the wire: what moa reads from an answer ---------------------------------------------------------
#
# Only the fields moa uses, with the types it relies on; everything else in a reply is ignored.
# :meth:`OpenAIBackend._read` validates every successful answer against one of these, so code that
# reads a reply never meets a missing field, a string where a list was promised, or a body that is
# not JSON at all.

_Raw = Any
"""The client's raw response (``openai``'s ``LegacyAPIResponse``: ``.http_response`` is the httpx response)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    what: ClassVar[str] = "the expected reply"
    """The reply in words, for error messages."""


class _Usage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _TopLogprob(_Wire):
    token: str
    logprob: float


class _TokenLogprob(_Wire):
    token: str
    logprob: float
    top_logprobs: list[_TopLogprob] | None = None


class _ChatLogprobs(_Wire):
    content: list[_TokenLogprob] | None = None


class _Function(_Wire):
    name: str
    arguments: str | dict[str, Any] | None = None


class _ToolCall(_Wire):
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _ChatMessage(_Wire):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _ChatChoice(_Wire):
    message: _ChatMessage
    finish_reason: str | None = None
    logprobs: _ChatLogprobs | None = None


class _ChatReply(_Wire):
    """The fields moa reads from an OpenAI chat completion."""

    what = "an OpenAI chat completion"

    choices: list[_ChatChoice]
    usage: _Usage | None = None


class _CompletionLogprobs(_Wire):
    tokens: list[str] | None = None
    """OpenAI's legacy shape: parallel lists ``tokens`` / ``token_logprobs`` / ``top_logprobs``."""
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    content: list[_TokenLogprob] | None = None
    """llama.cpp's server: the chat shape, one entry per token."""


class _CompletionChoice(_Wire):
    text: str | None = None
    finish_reason: str | None = None
    logprobs: _CompletionLogprobs | None = None


class _CompletionReply(_Wire):
    """The fields moa reads from an OpenAI text completion."""

    what = "an OpenAI text completion"

    choices: list[_CompletionChoice]
    usage: _Usage | None = None


class _ModelEntry(_Wire):
    id: str


class _ModelList(_Wire):
    """The fields moa reads from an OpenAI model list."""

    what = "an OpenAI model list"

    data: list[_ModelEntry]
