"""A whole run through spec strings and the official openai client, against llama.cpp's own
server (xllamacpp's HTTP listener) on 127.0.0.1, serving the base Gemma 3 270M."""

from __future__ import annotations

import pytest
from support.llama_server import running_llama_server

import moa

pytestmark = pytest.mark.real


async def test_run_over_an_openai_compatible_server() -> None:
    with running_llama_server() as base_url:
        spec = f"openai+completion:gemma@{base_url}"
        settings = moa.load_settings(slm=spec, llm=spec)
        result = await moa.arun("classify the sentiment of each review", input=["Wonderful food.", "Cold and rude."], settings=settings)
    assert result.planner is not None and result.planner.name == "router"  # a completion-only llm tier
    (sub,) = result.results.values()
    assert sub.agent == "sentiment" and sub.status == "ok"
    assert all(i.output.label in ("positive", "negative", "neutral") for i in sub.items)  # type: ignore[union-attr]
    assert result.usage and all(u.model == spec and u.prompt_tokens > 0 for u in result.usage)
