"""Every built-in model agent, the llm planner and the synthesizer on a real *chat* model, through
the three roads users take to one:

* ``embedded``: the embedded engine, with the GGUF's own chat template;
* ``openai``: llama.cpp's own HTTP server (xllamacpp) serving the same file, through the official
  ``openai`` client (chat completions, ``response_format`` JSON schema, ``max_tokens`` honoured);
* ``ollama``: the Ollama-protocol test server passing chat messages to the model's template,
  through the official ``ollama`` client (``format`` JSON schema, ``num_predict`` honoured).

The model is SmolLM2-135M-Instruct (installed in CI by ``.ci/run``), the smallest real instruct
model that shows the behaviour. Its answers are often wrong: these tests check what must hold for
any chat model (every item answered with schema-valid output in the task's own labels, no
``invalid_output`` from a cut answer, every call accounted to the road's spec and tier, a valid
plan, a synthesized answer), not answer quality, which is measured in ``benchmarks/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.llama_server import running_llama_server
from support.ollama_server import running_ollama_server

import moa
from moa.agent.confidence import choice_probs
from moa.agent.structured import output_token_limit
from moa.agents.filtering import _answer
from moa.models.base import GenerateRequest, Generation, Message, ModelBackend
from moa.models.embedded import EmbeddedBackend
from moa.models.registry import create_backend
from moa.models.shipped import SHIPPED, model_file, shipped_status
from moa.workflow.results import RunResult

pytestmark = pytest.mark.real

MODEL = SHIPPED["smollm2-135m-instruct"]
ROADS = ("embedded", "openai", "ollama")
REVIEWS = ["The food was wonderful and the staff were kind.", "Cold soup, rude waiter, never again.", "It is a restaurant on Main Street."]
MIXED = ["WIN A FREE IPHONE!!! Click http://spam.example now", "The delivery came two days late.", "Great support team, thanks!"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    status = shipped_status(MODEL)
    if status.installed < len(MODEL.parts):
        if os.environ.get("CI"):
            pytest.fail(f"{MODEL.spec} is not installed in CI: {status.summary}")
        pytest.skip(f"{MODEL.spec}: {status.summary}")
    return model_file(MODEL)


@pytest.fixture(scope="module", params=ROADS)
def road(request: pytest.FixtureRequest, smollm2: Path) -> Iterator[str]:
    """The spec of the chat model on one road (a server, when the road has one, runs for the module)."""
    if request.param == "embedded":
        yield MODEL.spec
    elif request.param == "openai":
        with running_llama_server(model_path=smollm2, n_parallel=2) as base_url:
            yield f"openai:smollm2@{base_url}"
    else:
        backend = EmbeddedBackend(MODEL.spec, shipped=MODEL)
        with running_ollama_server(backend=backend, chat_model="smollm2:135m") as url:
            yield f"ollama:smollm2:135m@{url}"


def _settings(spec: str, tmp_path: Path, **more: object) -> moa.Settings:
    # the cascade stays on the road's model: one tier, so every call below is a call on this road
    return moa.load_settings(
        slm=spec, llm=spec, cascade=["slm"], cache=False, memory_dir=tmp_path / "memory", state_dir=tmp_path / "state", **more
    )


def _only_subtask(result: RunResult, agent: str) -> moa.SubtaskResult:
    (sub,) = result.results.values()
    assert sub.agent == agent
    return sub


def _all_answered(sub: moa.SubtaskResult) -> None:
    """No item failed: in particular none was cut short into ``invalid_output``."""
    errors = [(i.item, i.error.code) for i in sub.items if i.error is not None]
    assert not errors, errors
    assert all(i.output is not None for i in sub.items)


def _accounted(result: RunResult, spec: str) -> None:
    assert result.usage, "no model call was accounted"
    assert all(u.model == spec and u.prompt_tokens > 0 and u.completion_tokens > 0 for u in result.usage)


async def test_sentiment_on_a_chat_model(road: str, tmp_path: Path) -> None:
    settings = _settings(road, tmp_path, planner="router")
    result = await moa.arun("Is each review positive, negative or neutral?", input=REVIEWS, settings=settings)
    sub = _only_subtask(result, "sentiment")
    _all_answered(sub)
    assert {i.output.label for i in sub.items} <= {"positive", "negative", "neutral"}  # type: ignore[union-attr]
    _accounted(result, road)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[GenerateRequest]:
    """Every request a backend of the run is asked to generate (recorded, then sent as usual)."""
    seen: list[GenerateRequest] = []
    original = ModelBackend.agenerate

    async def recording(self: ModelBackend, request: GenerateRequest) -> Generation:
        seen.append(request)
        return await original(self, request)

    monkeypatch.setattr(ModelBackend, "agenerate", recording)
    return seen


async def test_filtering_on_a_chat_model_is_never_cut_short(road: str, tmp_path: Path, requests: list[GenerateRequest]) -> None:
    """The finding: a one-sentence reason then the label, asked with ``max_tokens: 16``, was cut on
    every item by a server that honours the limit (``invalid_output`` on 10 of 10). The limit now
    comes from the answer's schema, the reason's own length limit included."""
    settings = _settings(road, tmp_path, planner="router")
    result = await moa.arun("Filter out the spam messages.", input=MIXED, settings=settings)
    sub = _only_subtask(result, "filtering")
    _all_answered(sub)
    assert all(i.output.matches in (True, False) and i.output.keep == (not i.output.matches) and i.output.reason for i in sub.items)  # type: ignore[union-attr]
    asked = [r for r in requests if r.json_schema is not None and r.json_schema.get("title") == "FilterAnswer"]
    assert len(asked) >= len(MIXED)
    for request in asked:
        # every road gives logprobs, so the answer is the label alone (its token's probability is the confidence)
        assert list(request.json_schema["properties"]) == ["label"]  # type: ignore[index]
        assert request.max_tokens >= output_token_limit(_answer(("spam", "ham"), True, True))
    reason_first = _answer(("spam", "ham"), False, True)  # a chat model without logprobs: a reason, the label, a score
    assert list(reason_first.model_fields) == ["reason", "label", "confidence"] and output_token_limit(reason_first) > 16
    _accounted(result, road)


async def test_chat_confidence_is_the_label_tokens_probability(road: str, tmp_path: Path) -> None:
    """The finding: llama.cpp's chat endpoint can generate a ```` ```json ```` fence and return the
    message without it, so the label's position in the text was not its position in the tokens;
    no label token was found and every chat answer of a classifier got the 0.5 fallback (filtering
    and sentiment on Qwen2.5-Coder 1.5B: confidence 0.5 on 20 of 20 tweets). Now each confidence
    is the probability the model gave its label, so it is not the fallback and varies."""
    settings = _settings(road, tmp_path, planner="router")
    texts = [*MIXED, *REVIEWS, "you are a stupid idiot and everyone hates you", "See you at the meeting tomorrow."]
    result = await moa.arun("Drop the messages that contain offensive language.", input=texts, settings=settings)
    sub = _only_subtask(result, "filtering")
    _all_answered(sub)
    confidences = [i.output.confidence for i in sub.items]  # type: ignore[union-attr]
    assert all(0.5 <= c <= 1 for c in confidences)  # the probability of the more probable of two labels
    assert 0.5 not in confidences and len(set(confidences)) >= 2, confidences  # a sure model gives 1.0 to many, not to all


async def test_extraction_on_a_chat_model(road: str, tmp_path: Path) -> None:
    settings = _settings(road, tmp_path, planner="router")
    text = ["Maria Lopez joined Acme Corp in Berlin last May."]
    result = await moa.arun("Extract the people, organizations and places.", input=text, settings=settings)
    sub = _only_subtask(result, "extraction")
    _all_answered(sub)
    for entity in sub.items[0].output.entities:  # type: ignore[union-attr]
        assert text[0][entity.start : entity.end] == entity.text  # spans point into the item
    _accounted(result, road)


async def test_the_synthesizer_on_a_chat_model(road: str, tmp_path: Path) -> None:
    settings = _settings(road, tmp_path, planner="router")
    result = await moa.arun("Is each review positive, negative or neutral? Summarize.", input=REVIEWS[:2], settings=settings)
    assert result.status == "ok"
    assert result.synthesizer == road and result.answer  # written by the chat model, not the fallback report
    synthesis = [u for u in result.usage if u.purpose == "synthesize"]
    assert len(synthesis) == 1 and synthesis[0].model == road


async def test_the_llm_planner_on_a_chat_model(road: str, tmp_path: Path) -> None:
    settings = _settings(road, tmp_path, planner="llm")
    result = await moa.arun("Filter out spam, then give the sentiment of the rest.", input=MIXED, settings=settings)
    assert result.planner is not None and result.planner.name == "llm"
    assert result.plan is not None and result.plan.subtasks
    assert {s.agent for s in result.plan.subtasks} <= {"filtering", "sentiment", "extraction", "retrieval"}
    plan_calls = [u for u in result.usage if u.purpose == "plan"]
    assert plan_calls and all(u.model == road for u in plan_calls)


async def test_chat_answers_carry_logprobs_for_confidence(road: str, tmp_path: Path) -> None:
    """Every road gives token logprobs with a schema-constrained chat answer, so a label's
    confidence comes from the model's probabilities (not its self-reported score)."""
    backend = create_backend(road, _settings(road, tmp_path))
    try:
        assert (await backend.acapabilities()).logprobs
        label = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}, "required": ["label"]}
        messages = [Message(role="system", content="Classify the sentiment. Answer with JSON."), Message(role="user", content="I loved it.")]
        gen = await backend.agenerate(GenerateRequest(messages=messages, json_schema=label, max_tokens=16, top_logprobs=3))
    finally:
        await backend.aclose()
    assert gen.logprobs and "".join(t.token for t in gen.logprobs) == gen.text
    chosen = json.loads(gen.text)["label"]
    probs = choice_probs(gen, ["positive", "negative"], chosen)
    assert probs is not None and abs(sum(probs.values()) - 1) < 1e-6
