"""moa.testing beyond the fake model: the memory double and the guard that blocks real models."""

from __future__ import annotations

from pathlib import Path

import chromadb
import pytest
from pydantic import BaseModel

import moa
from moa.memory.chroma import ChromaMemory
from moa.models.base import GenerateRequest
from moa.models.embedded import EmbeddedBackend
from moa.models.embeddings import MiniLMEmbedder
from moa.models.registry import create_backend
from moa.testing import FakeEmbedder, FakeMemory, RealModelBlocked, block_real_models

HINT = "use the fakes in moa.testing"


@pytest.mark.parametrize("spec", ["embedded:", "ollama:llama3.2:1b", "openai:gpt-4o-mini@http://127.0.0.1:9/v1"])
async def test_real_backends_refuse_to_generate(spec: str) -> None:
    backend = create_backend(spec, moa.load_settings())
    with block_real_models(), pytest.raises(RealModelBlocked) as info:
        await backend.generate(GenerateRequest(prompt="hi"))
    assert HINT in str(info.value) and "@pytest.mark.real" in str(info.value)


async def test_the_minilm_embedder_refuses_to_embed_or_load() -> None:
    embedder = MiniLMEmbedder()
    with block_real_models():
        with pytest.raises(RealModelBlocked, match="MiniLMEmbedder was asked to embed 1 texts"):
            embedder.embed(["a"])
        with pytest.raises(RealModelBlocked, match=HINT):
            await embedder.aembed(["a"])
        with pytest.raises(RealModelBlocked, match="MiniLMEmbedder was loaded"):
            embedder._load()


async def test_chroma_clients_refuse_to_open(tmp_path: Path) -> None:
    with block_real_models():
        with pytest.raises(RealModelBlocked, match="chromadb.PersistentClient"):
            chromadb.PersistentClient(path=str(tmp_path))
        with pytest.raises(RealModelBlocked, match=r"chromadb.HttpClient\(host='127.0.0.1'"):
            await ChromaMemory(url="http://127.0.0.1:9", embedder=FakeEmbedder()).aquery("x")


class Query(BaseModel):
    text: str


class Embed(moa.FunctionAgent[Query, Query]):
    name = "embed"
    description = "Embeds its text with MiniLM."
    input_type = Query
    output_type = Query


async def test_no_except_exception_turns_the_refusal_into_a_failed_subtask() -> None:
    """A function agent records its function's exceptions as a failed subtask; not this one."""

    async def embed(ctx: moa.RunContext, data: Query) -> Query:
        await MiniLMEmbedder().aembed([data.text])
        return data

    with block_real_models(), pytest.raises(RealModelBlocked):
        await Embed(embed).run(moa.RunContext.create(), Query(text="x"))


def _methods() -> tuple[object, ...]:
    return (EmbeddedBackend.__dict__["generate"], MiniLMEmbedder.__dict__["embed"], MiniLMEmbedder.__dict__.get("aembed"), chromadb.PersistentClient)


def test_blocks_nest() -> None:
    """This unit test already runs inside the conftest's block; leaving a second one keeps the first."""
    before = _methods()
    with block_real_models():
        pass
    assert _methods() == before and before[0].__module__ == "moa.testing"


@pytest.mark.real  # outside the conftest's block: the real methods are there before and after (nothing real runs)
def test_leaving_the_block_restores_the_real_methods() -> None:
    before = _methods()
    with block_real_models():
        assert all(a is not b for a, b in zip(_methods(), before, strict=True))
    assert _methods() == before and before[2] is None  # aembed is inherited from Embedder, as before


async def test_fake_memory_finds_by_meaning_keeps_sources_and_upserts() -> None:
    memory = FakeMemory()
    ids = await memory.aadd(["paris is the capital of france", "bananas are yellow"], sources=["geo.md", None], metadatas=[{"n": 1}, None])
    assert memory.count() == 2
    best, other = await memory.aquery("the capital of france", k=2)
    assert best.id == ids[0] and best.source == "geo.md" and best.metadata == {"n": 1} and best.score > other.score
    assert await memory.aadd(["paris is the capital of france"], sources=["geo.md"]) == [ids[0]]  # same id: updated, not added
    assert memory.count() == 2 and len(await memory.aquery("x", k=1)) == 1
    with pytest.raises(moa.UserError):
        await memory.aquery("x", k=0)
