"""TEST FIXTURE: a small Ollama-compatible HTTP server over a real local model.

No real Ollama can be installed on the test machines, so this FastAPI app speaks the subset of
Ollama's documented REST API that moa and the official clients (``ollama``, ``langchain-ollama``)
use: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/show``, ``/api/tags``, ``/api/version``.
It is not a product and not an Ollama replacement: over the default embedded model (the *base*
Gemma 3 270M) chat is rendered with a Gemma-style template into a completion prompt, tool calls are
forced by constraining the output to ``{"name": <tool>, "arguments": <its schema>}``, streaming
sends the finished answer as NDJSON pieces, durations are wall-clock (the prompt/eval split is not
measured), and embeddings come from moa's MiniLM embedder whatever embedding model is named.

Over an instruct model (``chat_model="smollm2:135m"`` with a chat-capable backend such as
``embedded:smollm2-135m-instruct``), ``/api/chat`` passes the messages to the backend, which
applies the model's own chat template, as Ollama does with a model's ``TEMPLATE``; ``format``
constrains the answer to its JSON schema. That is the Ollama road for chat models.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from moa.errors import MoaError
from moa.models.base import GenerateRequest, Generation, Message, ModelBackend
from moa.models.embedded import engine_schema

CHAT_MODEL = "gemma3:270m"
EMBED_MODEL = "all-minilm:latest"
TEMPLATE = (
    "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
)
_DETAILS = {"format": "gguf", "family": "gemma3", "families": ["gemma3"], "parameter_size": "268M",
            "quantization_level": "Q4_K_M"}


def _split(text: str) -> list[str]:
    """Stream pieces: words with their surrounding whitespace."""
    return re.findall(r"\s*\S+\s*", text)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _model(name: str, models: dict[str, list[str]]) -> str | None:
    """Resolve ``name`` like Ollama does (a missing tag means ``:latest``); ``None`` if unknown."""
    full = name if ":" in name else f"{name}:latest"
    return full if full in models else None


def _render(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """Apply :data:`TEMPLATE` to chat messages; tool results and offered tools become user text."""
    turns = []
    if tools:
        listing = "\n".join(f"- {t['function']['name']}: {t['function'].get('description', '')}" for t in tools)
        turns.append(("user", f"Answer by calling one of these tools:\n{listing}"))
    for m in messages:
        role = "model" if m.get("role") == "assistant" else "user"
        content = m.get("content") or ""
        if m.get("tool_calls"):
            content += json.dumps([c["function"] for c in m["tool_calls"]])
        if m.get("role") == "tool":
            content = f"Result of {m.get('tool_name', 'tool')}: {content}"
        turns.append((role, content))
    return "".join(f"<start_of_turn>{r}\n{c}<end_of_turn>\n" for r, c in turns) + "<start_of_turn>model\n"


def _tool_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema accepting exactly one call of one offered tool."""
    branches = [
        {"type": "object", "required": ["name", "arguments"],
         "properties": {"name": {"enum": [t["function"]["name"]]},
                        "arguments": t["function"].get("parameters") or {"type": "object"}}}
        for t in tools
    ]
    return {"anyOf": branches}


def _constraint(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema sent to the engine: closed objects, compact JSON (see ``engine_schema``)."""
    return None if schema is None else engine_schema(schema)


def _format_schema(fmt: Any) -> dict[str, Any] | None:
    if fmt == "json":
        return {"type": "object"}
    return fmt if isinstance(fmt, dict) else None


def create_app(backend: ModelBackend, *, chat_model: str | None = None) -> FastAPI:
    """Build the Ollama-compatible app over ``backend``: completion prompts in a Gemma template,
    or, with ``chat_model`` (the name it serves the backend under), chat messages passed through."""
    app = FastAPI(title="ollama test fixture")
    name_of_chat = chat_model or CHAT_MODEL
    models: dict[str, list[str]] = {name_of_chat: ["completion"] if chat_model else ["completion", "tools"], EMBED_MODEL: ["embedding"]}

    @app.exception_handler(MoaError)
    async def model_failed(request: Request, exc: MoaError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=500)  # Ollama's error body
    embedders: list[Any] = []  # moa's MiniLM embedder, created on the first /api/embed

    async def run(body: dict[str, Any], prompt: str | list[dict[str, Any]], schema: dict[str, Any] | None,
                  stop: list[str]) -> tuple[Generation, dict[str, Any]]:
        opts = body.get("options") or {}
        top = int(body.get("top_logprobs") or 0)
        temperature = opts.get("temperature")
        num_predict = int(opts.get("num_predict") or 0)
        messages = None if isinstance(prompt, str) else [Message(role=m["role"], content=m.get("content") or "") for m in prompt]
        request = GenerateRequest(prompt=prompt if isinstance(prompt, str) else None, messages=messages, json_schema=_constraint(schema),
                                  temperature=0.8 if temperature is None else float(temperature),  # Ollama's defaults
                                  max_tokens=num_predict if num_predict > 0 else 256,
                                  stop=[*(opts.get("stop") or []), *stop] or None,
                                  top_logprobs=max(top, 1) if body.get("logprobs") else 0)
        started = time.perf_counter_ns()
        gen = await backend.generate(request)
        total = time.perf_counter_ns() - started
        stats: dict[str, Any] = {"model": body["model"], "created_at": _now(), "done": True,
                                 "done_reason": "length" if gen.finish_reason == "length" else "stop",
                                 "total_duration": total, "load_duration": 0, "prompt_eval_count": gen.prompt_tokens,
                                 "prompt_eval_duration": 0, "eval_count": gen.completion_tokens, "eval_duration": total}
        if body.get("logprobs") and gen.logprobs:
            stats["logprobs"] = [{"token": t.token, "logprob": t.logprob, "top_logprobs": [
                {"token": k, "logprob": v} for k, v in list(t.top.items())[:top]]} for t in gen.logprobs]
        return gen, stats

    def reply(body: dict[str, Any], final: dict[str, Any], key: str, whole: Any, pieces: list[Any]) -> Any:
        """``final`` with ``key: whole``; or, streamed, NDJSON chunks ``key: piece`` then ``final``."""
        if body.get("stream", True) is False:
            return JSONResponse({**final, key: whole})
        empty = {"role": "assistant", "content": ""} if key == "message" else ""

        async def lines() -> AsyncIterator[bytes]:
            for piece in pieces:
                chunk = {"model": body["model"], "created_at": _now(), "done": False, key: piece}
                yield (json.dumps(chunk) + "\n").encode()
            yield (json.dumps({**final, key: empty}) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def checked(request: Request, capability: str) -> dict[str, Any] | JSONResponse:
        body: dict[str, Any] = await request.json()
        name = _model(str(body.get("model", "")), models)
        if name is None:
            return JSONResponse({"error": f"model '{body.get('model')}' not found"}, status_code=404)
        if capability not in models[name]:
            return JSONResponse({"error": f'"{name}" does not support {capability}'}, status_code=400)
        return body

    @app.post("/api/chat")
    async def chat(request: Request) -> Any:
        body = await checked(request, "completion")
        if isinstance(body, JSONResponse):
            return body
        tools = body.get("tools") or []
        if chat_model and tools:
            return JSONResponse({"error": f'"{chat_model}" does not support tools'}, status_code=400)
        calling = bool(tools) and not body.get("format")
        schema = _tool_schema(tools) if calling else _format_schema(body.get("format"))
        if chat_model:  # the backend applies the model's own chat template
            gen, final = await run(body, list(body.get("messages") or []), schema, [])
        else:
            gen, final = await run(body, _render(body.get("messages") or [], tools), schema, ["<end_of_turn>"])
        message: dict[str, Any] = {"role": "assistant", "content": gen.text}
        if calling:
            with suppress(json.JSONDecodeError):  # if cut off by num_predict, Ollama returns the text
                message = {"role": "assistant", "content": "", "tool_calls": [{"function": json.loads(gen.text)}]}
        pieces = [{"role": "assistant", "content": p} for p in _split(message["content"])]
        if "tool_calls" in message:
            pieces.append(message)
        return reply(body, final, "message", message, pieces)

    @app.post("/api/generate")
    async def generate(request: Request) -> Any:
        body = await checked(request, "completion")
        if isinstance(body, JSONResponse):
            return body
        prompt, raw = str(body.get("prompt", "")), bool(body.get("raw"))
        if not raw and chat_model:
            system = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            gen, final = await run(body, [*system, {"role": "user", "content": prompt}], _format_schema(body.get("format")), [])
            return reply(body, final, "response", gen.text, _split(gen.text))
        if not raw:
            system = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            prompt = _render([*system, {"role": "user", "content": prompt}], [])
        gen, final = await run(body, prompt, _format_schema(body.get("format")), [] if raw else ["<end_of_turn>"])
        return reply(body, final, "response", gen.text, _split(gen.text))

    @app.post("/api/embed")
    async def embed(request: Request) -> Any:
        body = await checked(request, "embedding")
        if isinstance(body, JSONResponse):
            return body
        if not embedders:
            from moa.models.embeddings import MiniLMEmbedder

            embedders.append(MiniLMEmbedder())
        texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        started = time.perf_counter_ns()
        vectors = await asyncio.to_thread(embedders[0].embed, texts)
        return {"model": body["model"], "embeddings": [[float(x) for x in v] for v in vectors],
                "total_duration": time.perf_counter_ns() - started, "load_duration": 0,
                "prompt_eval_count": sum(len(t.split()) for t in texts)}

    @app.post("/api/show")
    async def show(request: Request) -> Any:
        body = await request.json()
        name = _model(str(body.get("model") or body.get("name") or ""), models)
        if name is None:
            return JSONResponse({"error": f"model '{body.get('model')}' not found"}, status_code=404)
        generative = name == name_of_chat
        return {"template": TEMPLATE if generative else "{{ .Prompt }}", "modelfile": f"FROM {name}",
                "parameters": 'stop "<end_of_turn>"' if generative and not chat_model else "", "license": "see the model's card",
                "details": _DETAILS, "model_info": {"general.architecture": "llama" if chat_model and generative else ("gemma3" if generative else "bert")},
                "capabilities": models[name], "modified_at": _now()}

    @app.get("/api/tags")
    async def tags() -> Any:
        return {"models": [{"name": n, "model": n, "modified_at": _now(), "size": 253_000_000,
                            "digest": "0" * 64, "details": _DETAILS} for n in models]}

    @app.get("/api/version")
    async def version() -> Any:
        return {"version": "0.13.0"}

    return app


@contextmanager
def running_ollama_server(*, backend: ModelBackend | None = None, chat_model: str | None = None) -> Iterator[str]:
    """Serve :func:`create_app` on a free 127.0.0.1 port in a background thread; yield its base URL.

    With ``backend=None`` an :class:`moa.models.embedded.EmbeddedBackend` (default model) is
    created, loaded on the first request and closed on exit. ``chat_model``: serve ``backend``
    (an instruct model) under that name, chat messages passed through (see the module notes).
    """
    owned = backend is None
    if backend is None:
        from moa.models.embedded import EmbeddedBackend

        backend = EmbeddedBackend()
    model: ModelBackend = backend
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, chat_model=chat_model), log_level="warning", lifespan="off"))

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            if owned:
                asyncio.run(model.aclose())

    thread = threading.Thread(target=serve, name="ollama-test-server", daemon=True)
    thread.start()
    waiter = threading.Event()
    for _ in range(400):  # up to ~20 s
        if server.started or not thread.is_alive():
            break
        waiter.wait(0.05)
    try:
        if not server.started:
            raise RuntimeError("the Ollama test server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
