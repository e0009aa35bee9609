"""A tiny OpenAI-compatible HTTP server with injected latency, for the parallelism benchmark.

Not a model: every ``/v1/completions`` or ``/v1/chat/completions`` request waits a latency
(``asyncio.sleep``, so any number of requests wait at once), then answers the smallest JSON value
that satisfies the request's JSON schema (``json_schema`` in the body, as llama.cpp's server takes
it, or ``response_format``): the first value of each enum, required fields only. The built-in
agents' schemas are answered validly (sentiment: ``{"label": "<first label>"}``).

The latency is ``--latency`` seconds, unless the prompt names its own as ``latency-<seconds>s``
(the parallelism benchmark puts it in a subtask's label set, so each subtask has its own).
``GET /stats`` says how many requests were served and the most in flight at once (``?reset=1``
starts counting again). Run it alone::

    python benchmarks/latency_server.py --port 8099 --latency 0.5

or from Python with :func:`serve` (a subprocess on a free port of 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

_LATENCY = re.compile(r"latency-(\d+(?:\.\d+)?)s")


def latency_of(prompt: str, default: float) -> float:
    """The latency a prompt asks for (``latency-0.25s``), else ``default``."""
    found = _LATENCY.search(prompt)
    return float(found.group(1)) if found else default


def marker(seconds: float) -> str:
    """The label that asks the server for ``seconds`` of latency."""
    return f"latency-{seconds:g}s"


def instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The smallest value valid for ``schema`` (enough of JSON Schema for pydantic's output)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance(schema[key][0], defs)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(props[k], defs) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return [instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("number", "integer"):
        return schema.get("maximum", schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return None


def create_app(latency: float) -> FastAPI:
    app = FastAPI()
    stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0}

    async def answer(body: dict[str, Any], prompt: str) -> str:
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(latency_of(prompt, latency))
        finally:
            stats["in_flight"] -= 1
        fmt = body.get("response_format") or {}
        schema = body.get("json_schema") or fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        return json.dumps(instance(schema), separators=(",", ":")) if schema else "ok"

    def usage(prompt: str, text: str) -> dict[str, int]:
        p, c = len(prompt.split()), len(text.split())
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        prompt = body["prompt"] if isinstance(body["prompt"], str) else "".join(body["prompt"])
        text = await answer(body, prompt)
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return {"id": "cmpl-0", "object": "text_completion", "created": int(time.time()), "model": body.get("model", "bench"), "choices": [choice], "usage": usage(prompt, text)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        prompt = "\n".join(str(m.get("content") or "") for m in body["messages"])
        text = await answer(body, prompt)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        return {"id": "chat-0", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "bench"), "choices": [choice], "usage": usage(prompt, text)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "bench", "object": "model", "owned_by": "moa-benchmarks"}]}

    @app.get("/stats")
    async def get_stats(reset: bool = False) -> dict[str, int]:
        seen = dict(stats)
        if reset:
            stats.update(requests=0, max_in_flight=stats["in_flight"])
        return seen

    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(latency: float, *, startup_s: float = 30.0) -> Iterator[str]:
    """Run the server in a subprocess on 127.0.0.1; yield its ``/v1`` base URL; stop it on exit."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--latency", str(latency)])
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                if httpx.get(f"{root}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the latency server did not start on {root} (exit code {proc.poll()})")
            time.sleep(0.05)
        yield f"{root}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--latency", type=float, default=0.5, help="seconds each request waits (default %(default)s)")
    args = p.parse_args()
    # Idle keep-alive connections stay open for 120 s (uvicorn's default is 5 s): a client that
    # reuses a connection just as the server closes it gets a ReadError. moa sends such a request
    # again (connection_retries), but a benchmark should not time the retries.
    uvicorn.run(create_app(args.latency), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, timeout_keep_alive=120)


if __name__ == "__main__":
    main()
