"""moa.models.embeddings: the shipped MiniLM model, the Ollama/OpenAI clients and the Chroma adapter.

Everything here is real: the int8 ONNX model, the official ``ollama`` client against the
Ollama-compatible fixture server (``tests/support/ollama_server.py``), the official ``openai`` client
against a small OpenAI-compatible ``/v1/embeddings`` server, and chromadb on disk.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest
from support.ollama_server import EMBED_MODEL, running_ollama_server

from moa.errors import ErrorCode, RunError, UserError
from moa.models.base import ModelBackend
from moa.models.embeddings import (
    ChromaEmbeddingFunction,
    Embedder,
    MiniLMEmbedder,
    OllamaEmbedder,
    OpenAIEmbedder,
    make_embedder,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- MiniLM ---------------------------------------------------------------------------------


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_vectors_are_unit_length_384(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(["hello", "a longer sentence about wings and lift", ""])
    assert minilm.name == "minilm" and minilm.dimension == 384
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4)


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_matches_sentence_transformers_similarity(minilm: MiniLMEmbedder) -> None:
    # fp32 all-MiniLM-L6-v2 gives 0.7553 / -0.1050 / 0.2474 for these pairs (sentence-transformers
    # example; reproduced from the safetensors weights with a numpy forward pass).
    a, bread, baby, horse = minilm.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
            "A man is riding a horse.",
        ]
    )
    assert cos(a, bread) == pytest.approx(0.7553, abs=0.02)
    assert cos(a, baby) == pytest.approx(-0.1050, abs=0.02)
    assert cos(a, horse) == pytest.approx(0.2474, abs=0.02)


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_paraphrase_beats_unrelated(minilm: MiniLMEmbedder) -> None:
    q, para, other = minilm.embed(
        [
            "How do I reset my password?",
            "Steps to change a forgotten login password",
            "The stock market fell sharply on Monday",
        ]
    )
    assert cos(q, para) > 0.5 > cos(q, other) + 0.3


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_batching_does_not_change_vectors() -> None:
    texts = ["short", "a " * 300, "medium length sentence here", "x", "another text about aircraft"]
    big = MiniLMEmbedder(batch_size=32).embed(texts)
    small = MiniLMEmbedder(batch_size=2).embed(texts)
    alone = [MiniLMEmbedder().embed([t])[0] for t in texts]
    for b, s, a in zip(big, small, alone, strict=True):
        assert cos(b, s) > 0.9999 and cos(b, a) > 0.9999


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_truncates_at_256_tokens(minilm: MiniLMEmbedder) -> None:
    head = " ".join(f"word{i % 50}" for i in range(400))
    one, two = minilm.embed([head + " aircraft wings", head + " completely different ending"])
    assert cos(one, two) > 0.99999  # the endings lie beyond token 256
    mid = " ".join(["wing", "lift", "flow"] * 60)  # 180 tokens
    three, four = minilm.embed([mid + " aircraft wings", mid + " completely different ending"])
    assert cos(three, four) < 0.999  # tokens 128..256 count (tokenizer.json itself truncates at 128)


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_empty_and_bad_input(minilm: MiniLMEmbedder) -> None:
    assert minilm.embed([]) == []
    with pytest.raises(UserError) as info:
        minilm.embed("not a list")
    assert info.value.code == ErrorCode.INVALID_INPUT


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_aembed_equals_embed(minilm: MiniLMEmbedder) -> None:
    texts = ["one", "two three"]
    assert asyncio.run(minilm.aembed(texts)) == minilm.embed(texts)


def test_minilm_is_lazy_and_import_is_light() -> None:
    assert MiniLMEmbedder()._session is None
    code = (
        "import sys, moa.models.embeddings as e; e.MiniLMEmbedder(); e.make_embedder('ollama:x');"
        "print(sorted(m for m in ('onnxruntime', 'chromadb', 'tokenizers', 'openai', 'ollama') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env(), timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.real  # the MiniLM embedder itself
def test_minilm_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        MiniLMEmbedder(model_file=tmp_path / "absent.onnx").embed(["x"])
    assert info.value.code == ErrorCode.EMBEDDER_UNAVAILABLE
    assert "absent.onnx" in info.value.message


# --- make_embedder --------------------------------------------------------------------------


def test_make_embedder_specs() -> None:
    assert isinstance(make_embedder(), MiniLMEmbedder)
    assert isinstance(make_embedder("minilm"), MiniLMEmbedder)
    ollama = make_embedder("ollama:nomic-embed-text:latest@http://gpu:11434")
    assert isinstance(ollama, OllamaEmbedder)
    assert (ollama.model, ollama.base_url) == ("nomic-embed-text:latest", "http://gpu:11434")
    assert make_embedder(ollama.name).name == ollama.name
    openai = make_embedder("openai:text-embedding-3-small", base_url="http://localhost:8080/v1", api_key="sk-secret")
    assert isinstance(openai, OpenAIEmbedder)
    assert openai.name == "openai:text-embedding-3-small@http://localhost:8080/v1"
    assert "sk-secret" not in json.dumps(ChromaEmbeddingFunction(openai).get_config())
    for bad in ("bert", "ollama:", "openai", "minilm:large"):
        with pytest.raises(UserError) as info:
            make_embedder(bad)
        assert info.value.code == ErrorCode.BAD_MODEL_SPEC


# --- Ollama (official client, fixture server) -----------------------------------------------


@pytest.mark.real
def test_ollama_embedder_against_server(minilm: MiniLMEmbedder) -> None:
    with running_ollama_server(backend=cast(ModelBackend, _NoChat())) as url:
        embedder = OllamaEmbedder(EMBED_MODEL, url, timeout=30, batch_size=2)
        texts = ["alpha", "beta gamma", "delta"]
        vectors = embedder.embed(texts)
        assert embedder.dimension == 384
        for got, want in zip(vectors, minilm.embed(texts), strict=True):
            assert cos(got, want) > 0.9999  # the fixture server embeds with MiniLM
        with pytest.raises(RunError) as info:
            OllamaEmbedder("no-such-model", url).embed(["x"])
        assert info.value.code == ErrorCode.MODEL_ERROR and "ollama pull no-such-model" in info.value.message


def test_ollama_embedder_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RunError) as info:
        OllamaEmbedder("nomic-embed-text", url, timeout=5).embed(["x"])
    assert info.value.code == ErrorCode.MODEL_UNREACHABLE
    assert url in info.value.message and "ollama serve" in info.value.message


class _NoChat:
    """Stand-in chat backend for the fixture server: these tests only call /api/embed."""

    async def aclose(self) -> None:
        return None


# --- OpenAI (official client, OpenAI-compatible server) -------------------------------------


@contextmanager
def openai_compatible_server(embedder: Embedder) -> Iterator[str]:
    """Serve ``POST /v1/embeddings`` (OpenAI's request/response shape) on a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = embedder.embed(texts)
            payload = {
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)][::-1],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.real
def test_openai_embedder_against_server(minilm: MiniLMEmbedder) -> None:
    with openai_compatible_server(minilm) as url:
        embedder = make_embedder(f"openai:all-minilm@{url}", timeout=30)
        texts = ["first text", "second text", "third"]
        vectors = embedder.embed(texts)  # the server answers in reverse order; index decides
        assert embedder.dimension == 384
        for got, want in zip(vectors, minilm.embed(texts), strict=True):
            assert cos(got, want) > 0.9999


def test_openai_embedder_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RunError) as info:
        OpenAIEmbedder("text-embedding-3-small", url, api_key="unused", timeout=5).embed(["x"])
    assert info.value.code == ErrorCode.MODEL_UNREACHABLE and url in info.value.message


def test_openai_embedder_needs_key_for_the_openai_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError) as info:
        OpenAIEmbedder("text-embedding-3-small").embed(["x"])
    assert info.value.code == ErrorCode.BAD_CONFIG and "OPENAI_API_KEY" in info.value.message


# --- Chroma adapter -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.real
def test_chroma_embedding_function_persists_and_reopens(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    import chromadb
    from chromadb.config import Settings

    ChromaEmbeddingFunction.register()
    ef = ChromaEmbeddingFunction(minilm)
    assert ChromaEmbeddingFunction.build_from_config(ef.get_config()).embedder.name == "minilm"
    client = chromadb.PersistentClient(str(tmp_path), settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection("docs", embedding_function=ef)  # type: ignore[arg-type]
    collection.add(ids=["a", "b"], documents=["The cat sleeps on the sofa.", "Interest rates rose again."])
    hits = collection.query(query_texts=["where is the kitten napping"], n_results=1)
    assert hits["ids"] == [["a"]]
    client.close()  # type: ignore[attr-defined]  # on the concrete Client, not on ClientAPI

    # A fresh process that only imports moa can reopen the collection and embed queries with it.
    code = (
        "import chromadb, sys\n"
        "from chromadb.config import Settings\n"
        "from moa.models.embeddings import ChromaEmbeddingFunction\n"
        "ChromaEmbeddingFunction.register()\n"
        "c = chromadb.PersistentClient(sys.argv[1], settings=Settings(anonymized_telemetry=False))\n"
        "col = c.get_collection('docs')\n"
        "print('RESULT', col.configuration['embedding_function'].get_config()['embedder'])\n"
        "print('RESULT', col.query(query_texts=['central bank policy'], n_results=1)['ids'][0][0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    results = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == ["minilm", "b"]


def test_chroma_embedding_function_placeholder_for_custom_embedders() -> None:
    ef = ChromaEmbeddingFunction.build_from_config({"embedder": "my-own-class"})
    assert ef.get_config() == {"embedder": "my-own-class"}
    with pytest.raises(UserError) as info:
        ef(["x"])
    assert info.value.code == ErrorCode.EMBEDDER_UNAVAILABLE and "my-own-class" in info.value.message
