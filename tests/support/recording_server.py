"""A real HTTP server on 127.0.0.1 that records every request (method, path, headers, JSON body)
and answers like an OpenAI-compatible server and like Ollama, for tests of what is sent where.

OpenAI: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``. Ollama:
``GET /api/version``, ``POST /api/show`` (a chat model), ``POST /api/chat``, ``POST /api/generate``.
Every answer's text comes from ``answer(body)``; the default answers a sentiment JSON, and a plan
request (the llm planner's prompt) with ``plan`` when one is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SENTIMENT = json.dumps({"label": "positive", "confidence": 0.95})


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: dict[str, Any] | None


@dataclass
class RecordingServer:
    url: str
    """``http://127.0.0.1:<port>``; the OpenAI API root is ``url + "/v1"``."""
    requests: list[Recorded] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every request (``None`` where there was none)."""
        return [r.headers.get("authorization") for r in self.requests]


def _text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return body.get("prompt") or "\n".join(str(m.get("content", "")) for m in messages)


def answer_with(plan: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], str]:
    """Answers: ``plan`` (as JSON) to the llm planner's prompt, a confident sentiment to the rest."""

    def answer(body: dict[str, Any]) -> str:
        if plan is not None and "You turn a task into a plan" in _text(body):
            return json.dumps(plan)
        return SENTIMENT

    return answer


@contextmanager
def recording_server(answer: Callable[[dict[str, Any]], str] | None = None) -> Iterator[RecordingServer]:
    """Serve on a free port of 127.0.0.1 until the block ends."""
    reply = answer or answer_with()
    server_state: list[RecordingServer] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            return

        def _record(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            server_state[0].requests.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body if isinstance(body, dict) else None)
            )
            return body if isinstance(body, dict) else {}

        def _send(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._record()
            if self.path.endswith("/models"):
                self._send({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "test"}]})
            else:
                self._send({"version": "0.12.11"})

        def do_POST(self) -> None:  # noqa: N802
            body = self._record()
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            if self.path.endswith("/chat/completions"):
                message = {"role": "assistant", "content": reply(body)}
                choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                self._send({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice], "usage": usage})
            elif self.path.endswith("/completions"):
                choice = {"index": 0, "text": reply(body), "finish_reason": "stop", "logprobs": None}
                self._send({"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice], "usage": usage})
            elif self.path == "/api/show":
                self._send({"template": "{{ .Messages }}", "capabilities": ["completion"], "details": {}, "model_info": {}})
            elif self.path == "/api/chat":
                message = {"role": "assistant", "content": reply(body)}
                self._send({"model": "m", "created_at": "2026-01-01T00:00:00Z", "message": message, "done": True, "prompt_eval_count": 5, "eval_count": 3})
            else:  # /api/generate
                self._send({"model": "m", "created_at": "2026-01-01T00:00:00Z", "response": reply(body), "done": True, "prompt_eval_count": 5, "eval_count": 3})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.append(RecordingServer(url=f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_state[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
