"""The OpenAI-compatible face: ``POST /v1/chat/completions`` and ``GET /v1/models``, so a bot
written against the OpenAI API uses a moa graph by changing only its ``base_url`` and key.

* Each graph is a model: ``moa/plan_execute``, ``moa/triage``... (``GET /v1/models``).
* The task is the last ``user`` message. Items to work on: the request's extra field ``input``
  (a list of texts; ``extra_body={"input": [...]}`` in the openai client), or, in the message
  itself, the lines after a line holding only ``---`` (one item per non-empty line).
* The answer is the run's synthesized answer, or its Markdown report when the graph writes none;
  a run waiting for approvals answers with what it waits for and how to answer.
* ``usage`` is the run's real prompt and completion tokens (every model call of the run); the run
  id comes back in the ``x-moa-run-id`` header and in the body's ``moa`` field.
* ``stream=true``: Server-Sent Events in OpenAI's chunk format, ending with ``data: [DONE]``;
  comment lines keep the connection alive while the run works. Other OpenAI parameters
  (``temperature``, ``max_tokens``...) are accepted and ignored: the graph decides its calls.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.server import errors, sse
from moa.server.routes import Manager
from moa.server.runs import ServedRun
from moa.server.schemas import RunOptionsRequest, RunRequest
from moa.workflow.catalog import builtin_graphs
from moa.workflow.report import to_markdown

router = APIRouter(prefix="/v1")
PREFIX = "moa/"
SEPARATOR = re.compile(r"\n-{3}[ \t]*\n")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields moa reads; OpenAI's others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    input: list[str] | None = None
    """moa's own field: the items to work on."""


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "\n".join(str(part.get("text", "")) for part in message.content or [] if part.get("type") == "text")


def task_of(request: ChatRequest) -> tuple[str, list[str] | None]:
    """The task (last user message) and the items, if any (see the module docstring)."""
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise UserError(ErrorCode.EMPTY_TASK, "the messages have no user message; the last user message is the task")
    text = _text(users[-1])
    if request.input is not None:
        return text, list(request.input)
    parts = SEPARATOR.split(text, maxsplit=1)
    if len(parts) == 2:
        return parts[0], [line.strip() for line in parts[1].splitlines() if line.strip()]
    return text, None


def graph_of(model: str) -> str:
    name = model.removeprefix(PREFIX)
    if name not in builtin_graphs():
        raise UserError(ErrorCode.UNKNOWN_GRAPH, f"no model {model!r} here; GET /v1/models lists them (moa/<graph>)")
    return name


def _outcome(run: ServedRun) -> tuple[str, dict[str, int]] | MoaError:
    """The answer and usage of a settled run, or the error to answer with."""
    if run.status == "error" and run.error is not None:
        return run.error.error()
    result = run.result
    if result is None:
        return RunError(ErrorCode.INTERNAL_ERROR, f"run {run.run_id} ended ({run.status}) without a result; GET /v1/runs/{run.run_id} shows it")
    if result.status == "failed":
        first = result.errors[0] if result.errors else None
        why = f"[{first.code}] {first.message}" if first else "no subtask succeeded"
        return RunError(first.code if first else ErrorCode.SUBTASK_FAILED, f"run {run.run_id} failed: {why}")
    s = result.summary
    usage = {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "total_tokens": s.prompt_tokens + s.completion_tokens}
    if result.status == "waiting":
        waits = "; ".join(f"{a.id}: {a.reason}" for a in result.pending)
        text = (
            f"Run {run.run_id} is waiting for a person's approval ({waits}). Answer with POST /v1/runs/{run.run_id}/approvals "
            '{"approve": [ids]} or {"deny": [ids]}, then read the result with GET /v1/runs/' + run.run_id
        )
        return text, usage
    return (result.answer or to_markdown(result)), usage


def _base(run: ServedRun, model: str, created: int, kind: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{run.run_id}", "object": kind, "created": created, "model": model, "system_fingerprint": None}


def _pieces(text: str, words: int = 16) -> list[str]:
    """``text`` cut after every ``words`` words (joined they give ``text`` back)."""
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, runs: Manager, request: Request) -> Response:
    """Run a graph on the last user message, the OpenAI way (see the module docstring)."""
    graph = graph_of(body.model)
    task, items = task_of(body)
    run = runs.start(RunRequest.model_construct(task=task, input=items, graph=graph, options=RunOptionsRequest()), request.state.key)
    headers = {"x-moa-run-id": run.run_id}
    created = int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stream = _stream(run, body.model, created, include_usage, runs.config.keepalive_seconds)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**headers, **sse.HEADERS})
    await run.settled.wait()
    outcome = _outcome(run)
    if isinstance(outcome, MoaError):
        return errors.response(outcome, headers)
    text, usage = outcome
    completion = {
        **_base(run, body.model, created, "chat.completion"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
        "moa": {"run_id": run.run_id, "status": run.status},
    }
    return JSONResponse(completion, headers=headers)


async def _stream(run: ServedRun, model: str, created: int, include_usage: bool, keepalive: float) -> AsyncIterator[bytes]:
    base = _base(run, model, created, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    yield chunk({"role": "assistant", "content": ""})
    while not run.settled.is_set():
        try:
            await asyncio.wait_for(run.settled.wait(), keepalive)
        except TimeoutError:
            yield sse.KEEPALIVE
    outcome = _outcome(run)
    if isinstance(outcome, MoaError):  # the status line is sent already: OpenAI clients raise on an error chunk
        yield sse.event(errors.body(outcome.code, outcome.message, type(outcome).__name__))
        return
    text, usage = outcome
    for piece in _pieces(text):
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage:
        yield sse.event({**base, "choices": [], "usage": usage, "moa": {"run_id": run.run_id, "status": run.status}})
    yield sse.event("[DONE]")


@router.get("/models")
async def models() -> dict[str, Any]:
    """Each graph as an OpenAI model."""
    return {"object": "list", "data": [{"id": f"{PREFIX}{name}", "object": "model", "created": 0, "owned_by": "moa"} for name in sorted(builtin_graphs())]}
