"""A fault-injecting model server on 127.0.0.1 that speaks the OpenAI and the Ollama protocol.

A test fixture, not a model: healthy answers are canned, made from the request (a valid plan for
the planner, a value of the requested JSON schema for an agent, one sentence for the
synthesizer). Built on :func:`support.flaky_server.raw_server`, so a misbehaviour can be anything
from an HTTP status to a connection cut in the middle of a body.

The URL path picks the misbehaviour and which requests it hits::

    http://127.0.0.1:PORT/<mode>/<target>/v1/...     OpenAI-compatible (chat, completions, models)
    http://127.0.0.1:PORT/<mode>/<target>/api/...    Ollama (chat, generate, show, tags, version)

``target`` says which generation requests get the fault; the others get healthy answers, so one
tier can be faulty for the planner only, for instance:

- ``all``: every request, the metadata ones (models, show, tags) too;
- ``plan``: the planner's requests (their JSON schema is titled ``Plan``);
- ``synthesize``: requests without a schema and without tools (the synthesizer's);
- ``agent``: every other generation request (agents, their repairs, tool loops);
- any other word: requests whose JSON schema has that title (e.g. ``SentimentDecision``: one agent).

Modes (:data:`MODES`): ``ok`` and ``weak`` are healthy (``weak`` answers every choice with a low
probability, so answers escalate); the faults are listed in :data:`FAULTS`. ``foreign_cascade``
answers the planner with a plan whose first subtask names a model spec on this server under
``/foreign/all/`` (:attr:`FaultServer.foreign`); :attr:`FaultServer.requests` shows whether
anything went there.

Use :meth:`FaultServer.openai` / :meth:`FaultServer.ollama` to get model specs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from support.flaky_server import Reply, Request, raw_server

Protocol = Literal["openai", "ollama"]

FAULTS: dict[str, str] = {
    "http_500": "HTTP 500 with an error body",
    "not_json": "HTTP 200, content type JSON, body `this is {not json`",
    "html": "HTTP 200 with an HTML page (a proxy's login page)",
    "off_protocol": "HTTP 200 with JSON that is not a reply of the protocol",
    "off_schema": "a valid reply whose content is JSON that does not match the requested schema",
    "truncated": "a valid reply cut at max_tokens: finish reason `length`, the JSON cut in half",
    "hang": "no answer until the client's timeout has passed",
    "close_mid_body": "status line, headers and half the body, then the connection is reset",
    "close_before_answer": "the connection is closed without an answer (every time)",
    "unknown_tool": "a reply that calls a tool nobody offered (`delete_everything`)",
    "foreign_cascade": "a plan whose subtask names a foreign model spec in its `cascade`",
}
"""The misbehaviours, in words (also the docs' table)."""

MODES = ("ok", "weak", *FAULTS)
MODEL = "fake"
HANG_S = 30.0
"""How long ``hang`` holds a request (the server releases it sooner when it stops)."""
NOT_JSON = b"this is {not json"
UNKNOWN_TOOL = "delete_everything"
HEALTHY_ANSWER = "Two reviews are positive and one is negative; Paris and Acme are mentioned."


@dataclass(frozen=True)
class Seen:
    """One request the server read, and what it did."""

    mode: str
    target: str
    protocol: Protocol | None
    endpoint: str
    """The path after ``/<mode>/<target>``, e.g. ``/v1/chat/completions``."""
    purpose: str
    """``plan``, ``synthesize``, ``agent`` or ``meta``."""
    title: str | None
    """The title of the request's JSON schema, if any."""
    faulty: bool
    """Whether the mode's fault was applied (``False``: a healthy answer)."""


@dataclass
class FaultServer:
    url: str
    """``http://127.0.0.1:<port>``."""
    requests: list[Seen] = field(default_factory=list)

    def base(self, mode: str, target: str = "all") -> str:
        if mode not in (*MODES, "foreign"):
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        return f"{self.url}/{mode}/{target}"

    def openai(self, mode: str = "ok", target: str = "all") -> str:
        """The model spec of this server's OpenAI-compatible API in ``mode`` for ``target``."""
        return f"openai:{MODEL}@{self.base(mode, target)}/v1"

    def ollama(self, mode: str = "ok", target: str = "all") -> str:
        """The model spec of this server's Ollama API in ``mode`` for ``target``."""
        return f"ollama:{MODEL}@{self.base(mode, target)}"

    def spec(self, protocol: Protocol, mode: str = "ok", target: str = "all") -> str:
        return self.openai(mode, target) if protocol == "openai" else self.ollama(mode, target)

    @property
    def foreign(self) -> str:
        """The foreign model spec the ``foreign_cascade`` plans name (on this server, recorded)."""
        return f"openai:evil@{self.url}/foreign/all/v1"

    def faulty(self) -> list[Seen]:
        return [r for r in self.requests if r.faulty]

    def to(self, mode: str) -> list[Seen]:
        return [r for r in self.requests if r.mode == mode]


# -- what a request is ------------------------------------------------------------------------------


def _schema(protocol: Protocol, body: Mapping[str, Any]) -> dict[str, Any] | None:
    if protocol == "ollama":
        found = body.get("format")
        return found if isinstance(found, dict) else None
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    if isinstance(fmt.get("schema"), dict):
        return dict(fmt["schema"])
    extra = body.get("json_schema")  # completions: llama.cpp's convention
    return extra if isinstance(extra, dict) else None


def _purpose(schema: dict[str, Any] | None, body: Mapping[str, Any]) -> str:
    if schema is not None and schema.get("title") == "Plan":
        return "plan"
    if schema is None and not body.get("tools"):
        return "synthesize"
    return "agent"


def _item(body: Mapping[str, Any]) -> str:
    """The text the request is about: its last user message, or its prompt."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return str(body.get("prompt", ""))


# -- healthy answers --------------------------------------------------------------------------------


def _plan(foreign: str | None) -> dict[str, Any]:
    """Two independent subtasks over the input: sentiment and extraction."""
    first: dict[str, Any] = {"id": "s1", "agent": "sentiment", "instruction": "the sentiment of each review", "items": "input", "depends_on": []}
    if foreign is not None:
        first["cascade"] = [foreign]
    second = {"id": "s2", "agent": "extraction", "instruction": "the entities of each review", "items": "input", "depends_on": []}
    return {"subtasks": [first, second], "rationale": "fault server: sentiment and entities, in parallel"}


_WORDS = {"positive": ("love", "great", "lovely", "excellent"), "negative": ("terrible", "awful", "bad", "cold")}


def _choose(options: list[Any], item: str) -> Any:
    """An enum value that fits ``item`` (a sentiment label by keyword), else the first."""
    lowered = item.lower()
    for option in options:
        if any(word in lowered for word in _WORDS.get(str(option), ())):
            return option
    return "neutral" if "neutral" in options else options[0]


def instance(schema: Mapping[str, Any], item: str = "", defs: Mapping[str, Any] | None = None) -> Any:
    """A small value valid under ``schema`` (the subset of JSON Schema pydantic emits)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], item, defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"] or schema[key]
            return instance(branches[0], item, defs)
    if "allOf" in schema:
        return instance(schema["allOf"][0], item, defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return _choose(list(schema["enum"]), item)
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance(properties[name], item, defs) for name in schema.get("required", [])}
    if kind == "array":
        return [instance(schema.get("items", {}), item, defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        value = 0.9 if low <= 0.9 <= high else low
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def _choices(schema: Mapping[str, Any] | None) -> list[str]:
    """The allowed values of a one-choice schema's enum (a classification's labels), else []."""
    if schema is None:
        return []
    for prop in (schema.get("properties") or {}).values():
        if isinstance(prop, dict) and "enum" in prop:
            return [str(v) for v in prop["enum"]]
    return []


def _content(purpose: str, schema: dict[str, Any] | None, body: Mapping[str, Any], foreign: str | None) -> str:
    if purpose == "plan":
        compact = schema is not None and "plan" in (schema.get("properties") or {})
        if compact and foreign is None:  # the llm planner's compact format: one line a step
            return json.dumps({"plan": ["sentiment <- input", "extraction <- input"]})
        return json.dumps(_plan(foreign))  # moa's full format (the planner reads it too): only it can name a model
    if schema is None:
        return HEALTHY_ANSWER
    return json.dumps(instance(schema, _item(body)))


def _logprobs(content: str, schema: dict[str, Any] | None, weak: bool) -> list[dict[str, Any]] | None:
    """One "token" holding the whole content, with the other labels as alternatives: the chosen
    label gets 0.95 (``weak``: 0.40) of the mass."""
    labels = _choices(schema)
    chosen = next((label for label in labels if f'"{label}"' in content), None)
    if chosen is None:
        return None
    share = 0.40 if weak else 0.95
    others = [label for label in labels if label != chosen]
    rest = (1 - share) / max(1, len(others))
    top = [{"token": content.replace(f'"{chosen}"', f'"{label}"'), "logprob": math.log(rest)} for label in others]
    return [{"token": content, "logprob": math.log(share), "top_logprobs": [{"token": content, "logprob": math.log(share)}, *top]}]


# -- the two protocols ------------------------------------------------------------------------------


def _openai_reply(content: str | None, *, finish: str = "stop", tool_calls: list[dict[str, Any]] | None = None,
                  logprobs: list[dict[str, Any]] | None = None, completion: bool = False, tokens: int = 7) -> dict[str, Any]:
    usage = {"prompt_tokens": 11, "completion_tokens": tokens, "total_tokens": 11 + tokens}
    if completion:
        choice: dict[str, Any] = {"index": 0, "text": content or "", "finish_reason": finish}
        if logprobs:
            choice["logprobs"] = {"content": logprobs}
        return {"id": "cmpl-fault", "object": "text_completion", "created": 0, "model": MODEL, "choices": [choice], "usage": usage}
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice = {"index": 0, "message": message, "finish_reason": finish}
    if logprobs:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 0, "model": MODEL, "choices": [choice], "usage": usage}


def _ollama_reply(content: str | None, *, generate: bool, finish: str = "stop", tool_calls: list[dict[str, Any]] | None = None,
                  logprobs: list[dict[str, Any]] | None = None, tokens: int = 7) -> dict[str, Any]:
    reply: dict[str, Any] = {"model": MODEL, "created_at": "2025-01-01T00:00:00Z", "done": True, "done_reason": finish,
                             "prompt_eval_count": 11, "eval_count": tokens}
    if generate:
        reply["response"] = content or ""
    else:
        message: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if tool_calls:
            message["tool_calls"] = tool_calls
        reply["message"] = message
    if logprobs:
        reply["logprobs"] = logprobs
    return reply


def _meta(protocol: Protocol, endpoint: str) -> Reply | None:
    """Healthy answers to the metadata endpoints (``None``: not one of them)."""
    if protocol == "openai" and endpoint == "/v1/models":
        return Reply.json({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fault-server"}]})
    if protocol == "ollama" and endpoint == "/api/show":
        return Reply.json({"template": "{{ .Messages }}", "capabilities": ["completion", "tools"], "model_info": {},
                           "details": {"family": "fake", "format": "gguf"}, "modelfile": f"FROM {MODEL}"})
    if protocol == "ollama" and endpoint == "/api/tags":
        return Reply.json({"models": [{"name": MODEL, "model": MODEL, "size": 1}]})
    if protocol == "ollama" and endpoint == "/api/version":
        return Reply.json({"version": "0.13.0"})  # logprobs since 0.12.11
    return None


TRANSPORT_FAULTS = ("http_500", "not_json", "html", "off_protocol", "hang", "close_mid_body", "close_before_answer")
"""Faults of the exchange itself (any endpoint, the metadata ones too); the others are in the content."""


def _broken(protocol: Protocol, mode: str, healthy: Reply) -> Reply:
    """``healthy`` spoiled by one of :data:`TRANSPORT_FAULTS`."""
    if mode == "http_500":
        if protocol == "openai":
            return Reply.json({"error": {"message": "fault server: internal error", "type": "server_error"}}, 500)
        return Reply.json({"error": "fault server: internal error"}, 500)
    if mode == "not_json":
        return Reply(body=NOT_JSON)
    if mode == "html":
        return Reply(body=b"<html><body>Please log in</body></html>", content_type="text/html")
    if mode == "off_protocol":
        return Reply.json({"choices": "none"} if protocol == "openai" else {"message": "none", "done": True})
    if mode == "hang":
        return Reply(action="hang", hang_s=HANG_S)
    if mode == "close_before_answer":
        return Reply(action="close")
    if mode == "close_mid_body":
        return Reply(action="cut", body=healthy.body)
    raise AssertionError(f"{mode!r} is not a transport fault")


def _generation(protocol: Protocol, endpoint: str, body: Mapping[str, Any], mode: str, faulty: bool, foreign: str) -> Reply:
    """The answer to a chat / completion / generate request."""
    schema = _schema(protocol, body)
    purpose = _purpose(schema, body)
    completion, generate = endpoint == "/v1/completions", endpoint == "/api/generate"

    def reply(content: str | None, **kw: Any) -> Reply:
        if protocol == "openai":
            return Reply.json(_openai_reply(content, completion=completion, **kw))
        return Reply.json(_ollama_reply(content, generate=generate, **kw))

    content = _content(purpose, schema, body, foreign if faulty and mode == "foreign_cascade" else None)
    logprobs = _logprobs(content, schema, weak=mode == "weak") if body.get("logprobs") else None
    healthy = reply(content, logprobs=logprobs)
    if not faulty or mode == "foreign_cascade":
        return healthy
    if mode in TRANSPORT_FAULTS:
        return _broken(protocol, mode, healthy)
    if mode == "off_schema":
        return reply(json.dumps({"unexpected": "field", "label": 42}))
    if mode == "truncated":
        limit = int(body.get("max_tokens") or (body.get("options") or {}).get("num_predict") or 16)
        return reply(content[: max(1, len(content) // 2)], finish="length", tokens=limit)
    if mode == "unknown_tool":
        arguments = {"path": "/"}
        if protocol == "openai":
            call: dict[str, Any] = {"id": "call_1", "type": "function", "function": {"name": UNKNOWN_TOOL, "arguments": json.dumps(arguments)}}
        else:
            call = {"function": {"name": UNKNOWN_TOOL, "arguments": arguments}}
        return reply(None, finish="tool_calls", tool_calls=[call])
    raise AssertionError(f"unhandled mode {mode!r}")


def _route(path: str) -> tuple[str, str, Protocol | None, str]:
    """``/<mode>/<target>/<endpoint>`` → mode, target, protocol, endpoint."""
    parts = path.split("?", 1)[0].split("/", 3)
    if len(parts) < 4:
        return "", "", None, path
    _, mode, target, rest = parts
    endpoint = "/" + rest
    protocol: Protocol | None = "openai" if endpoint.startswith("/v1/") else "ollama" if endpoint.startswith("/api/") else None
    return mode, target, protocol, endpoint


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    """Serve on a free port of 127.0.0.1 until the block ends (a hanging request is released then)."""
    server = FaultServer(url="")

    def handle(request: Request) -> Reply:
        mode, target, protocol, endpoint = _route(request.path)
        if protocol is None or mode not in (*MODES, "foreign"):
            return Reply.json({"error": f"fault server: no route {request.path}"}, 404)
        meta = _meta(protocol, endpoint)
        if meta is not None:
            faulty = target == "all" and mode in TRANSPORT_FAULTS
            server.requests.append(Seen(mode, target, protocol, endpoint, "meta", None, faulty))
            return _broken(protocol, mode, meta) if faulty else meta
        try:
            body = request.json()
        except json.JSONDecodeError:
            return Reply.json({"error": "fault server: the request is not JSON"}, 400)
        schema = _schema(protocol, body)
        purpose = _purpose(schema, body)
        title = schema.get("title") if schema else None
        if mode == "foreign_cascade":
            faulty = purpose == "plan"  # the fault is in the plan; everything else is healthy
        else:
            hit = target in ("all", purpose) or (target not in ("plan", "synthesize", "agent") and target == title)
            faulty = hit and mode in FAULTS
        server.requests.append(Seen(mode, target, protocol, endpoint, purpose, title, faulty))
        return _generation(protocol, endpoint, body, mode, faulty, server.foreign)

    with raw_server(handle) as raw:
        server.url = raw.url
        yield server
