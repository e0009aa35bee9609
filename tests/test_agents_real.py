"""Each built-in agent once on the real embedded engine (Gemma 3 270M via llama.cpp).

These check behaviour that must hold for any model (valid types, spans that point into the text,
confidence in range, accounting), not answer quality: a 270M base model is often wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from moa import RunContext, Settings
from moa.agents.extraction import ExtractionInput, extract_into
from moa.agents.extraction import agent as extraction
from moa.agents.filtering import FilterInput
from moa.agents.filtering import agent as filtering
from moa.agents.retrieval import RetrievalInput
from moa.agents.retrieval import agent as retrieval
from moa.agents.sentiment import SentimentInput
from moa.agents.sentiment import agent as sentiment
from moa.models.embedded import EmbeddedBackend
from moa.models.registry import Models

pytestmark = pytest.mark.real


def _ctx(embedded: EmbeddedBackend, tmp_path: Path) -> RunContext:
    settings = Settings(memory_dir=tmp_path / "memory")
    return RunContext.create(settings, models=Models(settings, slm=embedded, llm=embedded))


async def test_sentiment_batch(embedded: EmbeddedBackend, tmp_path: Path) -> None:
    ctx = _ctx(embedded, tmp_path)
    texts = ["I absolutely loved this film, wonderful acting.", "Terrible, boring and far too long."]
    runs = await sentiment.run_batch(ctx, [SentimentInput(text=t, labels=["positive", "negative"]) for t in texts])
    assert all(r.ok for r in runs)
    for r in runs:
        assert r.output.label in ("positive", "negative")  # type: ignore[union-attr]
        assert 0.5 <= r.output.confidence <= 1  # type: ignore[union-attr]  # argmax of two
        assert r.usage and r.usage[0].model == "embedded:" and r.usage[0].completion_tokens > 0


async def test_filtering_with_calibration(embedded: EmbeddedBackend, tmp_path: Path) -> None:
    ctx = _ctx(embedded, tmp_path)
    texts = ["WINNER! Claim your free prize now, call 0800 555 0199", "See you at the station at six."]
    runs = await filtering.run_batch(ctx, [FilterInput(text=t, criterion="spam") for t in texts])
    assert all(r.ok for r in runs)
    for r in runs:
        assert r.output.keep is (not r.output.matches)  # type: ignore[union-attr]
    purposes = [u.purpose for r in runs for u in r.usage]
    assert purposes.count("calibrate") == 3  # the content-free prior is computed once per run


async def test_extraction_spans_point_into_the_text(embedded: EmbeddedBackend, tmp_path: Path) -> None:
    ctx = _ctx(embedded, tmp_path)
    text = "Maria bought a Kindle from Amazon in Berlin last March."
    run = await extraction.run(ctx, ExtractionInput(text=text))
    assert run.ok
    for e in run.output.entities:  # type: ignore[union-attr]
        assert text[e.start : e.end] == e.text
        assert e.type in ExtractionInput(text="x").types


async def test_schema_driven_extraction(embedded: EmbeddedBackend, tmp_path: Path) -> None:
    class Order(BaseModel):
        product: str
        quantity: int

    order = await extract_into(_ctx(embedded, tmp_path), "Please send me 3 boxes of green tea.", Order)
    assert isinstance(order, Order) and isinstance(order.quantity, int)


async def test_retrieval_writes_and_reads_memory(embedded: EmbeddedBackend, tmp_path: Path) -> None:
    ctx = _ctx(embedded, tmp_path)
    data = RetrievalInput(
        query="how long is the warranty?",
        add=["The warranty lasts two years from the date of purchase.", "Our office is closed on Sundays."],
        source="faq.md",
        k=1,
    )
    run = await retrieval.run(ctx, data)
    assert run.ok
    (passage,) = run.output.passages  # type: ignore[union-attr]
    assert "warranty" in passage.text and passage.source == "faq.md"
    assert retrieval.forward("q", run.output) == [passage.text]  # type: ignore[arg-type]


async def test_embedded_timeout_is_a_typed_error() -> None:
    from moa.errors import ErrorCode, RunError
    from moa.models.base import GenerateRequest

    slow = EmbeddedBackend(timeout=0.001)  # loading the model is not timed; decoding 200 tokens is
    with pytest.raises(RunError) as info:
        await slow.agenerate(GenerateRequest(prompt="Count to one hundred: 1, 2, 3,", max_tokens=200))
    assert info.value.code == ErrorCode.MODEL_TIMEOUT and "MOA_TIMEOUT" in info.value.message
    await slow.aclose()
