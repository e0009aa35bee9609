"""Escalation policy, cascades, budgets, confidence by agreement, examples, dedupe — with fakes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import moa
from moa.agent.learn import task_for, train_agent
from moa.errors import ErrorCode, UserError
from moa.learning.calibration import Calibration
from moa.learning.store import calibration_path
from moa.models.base import GenerateRequest
from moa.testing import FakeEmbedder, FakeModel, prompt_of, unreachable
from moa.workflow.catalog import builtin_agents

PLAN = {"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": ["positive", "negative"]}}]}


def sentiment(label: str, confidence: float) -> str:
    return json.dumps({"label": label, "confidence": confidence})


def item_of(request: GenerateRequest) -> str:
    return prompt_of(request).rsplit("Text:", 1)[-1]


def self_report(confidences: dict[str, float], label: str = "positive") -> FakeModel:
    """A base model whose self-reported confidence depends on the item ('weak' items: low)."""
    return FakeModel(lambda r: sentiment(label, next((c for word, c in confidences.items() if word in item_of(r)), 0.95)))


def settings(**kw: object) -> moa.Settings:
    return moa.load_settings(confidence="self", **kw)


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_weak_answers_escalate_and_strong_ones_do_not() -> None:
    slm = self_report({"weak": 0.4})
    llm = FakeModel([sentiment("negative", 0.9)], spec="fake:big")
    result = await moa.arun("t", input=["fine item", "weak item"], plan=PLAN, slm=slm, llm=llm, settings=settings())
    fine, weak = result.results["s"].items
    assert fine.answered_by == "slm" and fine.escalations == [] and fine.output.label == "positive"  # type: ignore[union-attr]
    assert weak.answered_by == "llm" and weak.output.label == "negative"  # type: ignore[union-attr]
    assert [(e.from_step, e.to_step, e.reason) for e in weak.escalations] == [("slm", "llm", "low_confidence")]
    assert [a.step for a in weak.attempts] == ["slm", "llm"]  # both attempts kept, each with its cost
    assert weak.attempts[0].confidence == 0.4 and weak.attempts[0].weak == "low_confidence"
    assert all(a.tokens > 0 for a in weak.attempts)
    assert len(llm.requests) == 1
    assert result.escalations.count == 1 and result.escalations.by_reason == {"low_confidence": 1}
    assert result.summary.per_tier["llm"].calls == 1 and result.summary.per_tier["slm"].calls == 2


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_threshold_comes_from_settings_per_agent_and_code() -> None:
    slm = self_report({"item": 0.6})
    llm = FakeModel([sentiment("negative", 0.9)], spec="fake:big")
    low = await moa.arun("t", input=["item"], plan=PLAN, slm=slm, llm=llm, settings=settings(thresholds={"sentiment": 0.5}))
    assert low.results["s"].items[0].answered_by == "slm"
    high = await moa.arun("t", input=["item"], plan=PLAN, slm=slm, llm=llm, settings=settings(threshold=0.65))
    assert high.results["s"].items[0].answered_by == "llm"
    agent = builtin_agents()["sentiment"].with_policy(threshold=0.5)
    coded = await moa.arun("t", input=["item"], plan=PLAN, slm=slm, llm=llm, agents=[agent], settings=settings(threshold=0.65))
    assert coded.results["s"].items[0].answered_by == "slm"


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_invalid_output_escalates_after_the_repair() -> None:
    slm = FakeModel(["not json"])
    llm = FakeModel([sentiment("positive", 0.9)], spec="fake:big")
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=slm, llm=llm, settings=settings())
    item = result.results["s"].items[0]
    assert result.status == "ok" and item.answered_by == "llm"
    assert item.escalations[0].reason == "invalid_output"
    assert item.attempts[0].error is not None and item.attempts[0].error.code == ErrorCode.INVALID_OUTPUT
    assert len(slm.requests) == 2  # the answer and one repair, then the llm


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_cascade_of_three_climbs_until_confident() -> None:
    small = FakeModel([sentiment("positive", 0.3)], spec="fake:small")
    mid = FakeModel([sentiment("negative", 0.5)], spec="fake:mid")
    big = FakeModel([sentiment("negative", 0.97)], spec="fake:big")
    agent = builtin_agents()["sentiment"].with_policy(cascade=[small, mid, big])
    result = await moa.arun("t", input=["x"], plan=PLAN, agents=[agent], slm=small, llm=big, settings=settings())
    item = result.results["s"].items[0]
    assert [a.model for a in item.attempts] == ["fake:small", "fake:mid", "fake:big"]
    assert [(e.from_step, e.to_step) for e in item.escalations] == [("fake:small", "fake:mid"), ("fake:mid", "fake:big")]
    assert item.answered_by == "fake:big" and item.unverified is None


async def test_weak_answer_at_the_top_is_kept_and_marked_unverified() -> None:
    model = FakeModel([sentiment("positive", 0.2)])
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model, settings=settings())
    item = result.results["s"].items[0]
    assert item.output is not None and item.unverified == "no higher step"
    assert result.escalations.unverified == {"no higher step": 1}


async def test_llm_down_while_escalating_keeps_the_slm_answer_unverified() -> None:
    slm = FakeModel([sentiment("positive", 0.3)])
    result = await moa.arun("t", input=["a", "b"], plan=PLAN, slm=slm, llm=unreachable(), settings=settings())
    assert result.status == "ok"  # the run continues with the small model's answers
    for item in result.results["s"].items:
        assert item.output is not None and item.answered_by == "slm"
        assert item.unverified is not None and item.unverified.startswith("llm failed: model_unreachable")
    assert result.escalations.unverified == {"llm failed": 2}


async def test_no_escalate_runs_one_step() -> None:
    slm = FakeModel([sentiment("positive", 0.1)])
    llm = FakeModel([sentiment("negative", 0.9)], spec="fake:big")
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=slm, llm=llm, settings=settings(escalate=False))
    assert llm.requests == [] and result.results["s"].items[0].answered_by == "slm"


def test_bad_policy_input_is_refused() -> None:
    with pytest.raises(UserError) as info:
        moa.load_settings(threshold=1.5)
    assert info.value.code == ErrorCode.BAD_CONFIG and "threshold" in info.value.message
    with pytest.raises(UserError):
        moa.load_settings(thresholds={"sentiment": -0.1})
    with pytest.raises(UserError):
        builtin_agents()["sentiment"].with_policy(threshold=2)
    for budget in ("budget_tokens", "budget_cost", "budget_seconds"):
        with pytest.raises(UserError) as info:
            moa.load_settings(**{budget: 0})
        assert budget in info.value.message


async def test_cascade_naming_an_unknown_model_is_a_clear_error() -> None:
    model = FakeModel([sentiment("positive", 0.9)])
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model, settings=settings(cascade=["slm", "gpt5"]))
    assert info.value.code == ErrorCode.BAD_MODEL_SPEC and "'gpt5'" in info.value.message
    assert model.requests == []


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_budget_refuses_escalation_then_stops_the_run_keeping_results() -> None:
    slm = FakeModel([sentiment("positive", 0.3)], delay=0.01, max_concurrency=1)
    llm = FakeModel([sentiment("negative", 0.9)], spec="fake:big")
    items = [f"item {i}" for i in range(6)]
    result = await moa.arun("t", input=items, plan=PLAN, slm=slm, llm=llm, settings=settings(budget_tokens=260))
    assert result.status == "stopped" and "token budget" in (result.stopped or "")
    done = [i for i in result.results["s"].items if i.output is not None]
    refused = [i for i in result.results["s"].items if i.error is not None]
    assert done and refused  # what was computed is kept; the rest is marked
    assert all(i.error.code == ErrorCode.BUDGET_EXCEEDED for i in refused)  # type: ignore[union-attr]
    assert any((i.unverified or "").startswith("budget") for i in done)
    assert result.exit_code == 3


async def test_confidence_by_agreement_of_k_samples() -> None:
    votes = iter(["positive", "positive", "negative", "positive", "negative"])
    slm = FakeModel(lambda r: json.dumps({"label": next(votes) if r.seed else "positive", "confidence": 0.99}))
    llm = FakeModel([sentiment("positive", 0.9)], spec="fake:big")
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=slm, llm=llm, settings=moa.load_settings(confidence="samples", threshold=0.5))
    item = result.results["s"].items[0]
    assert item.output.label == "positive" and item.output.confidence == pytest.approx(0.6)  # type: ignore[union-attr]
    assert sorted(r.seed for r in slm.requests) == [1, 2, 3, 4, 5] and {r.temperature for r in slm.requests} == {0.8}


async def test_auto_confidence_samples_only_where_it_can_escalate() -> None:
    model = FakeModel([sentiment("positive", 0.9)])
    await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model)  # one step: no sampling
    assert len(model.requests) == 1
    big = FakeModel([sentiment("positive", 0.9)], spec="fake:big")
    small = FakeModel([sentiment("positive", 0.9)])
    await moa.arun("t", input=["x"], plan=PLAN, slm=small, llm=big)
    assert len(small.requests) == 5 and big.requests == []  # 5 of 5 agree: confident, no escalation


async def test_identical_inputs_in_a_batch_run_once() -> None:
    model = FakeModel([sentiment("positive", 0.9)])
    result = await moa.arun("t", input=["same", "other", "same"], plan=PLAN, slm=model, llm=model, settings=settings())
    assert len(model.requests) == 2
    items = result.results["s"].items
    assert items[2].deduplicated and items[2].output == items[0].output
    assert result.summary.calls == 2


async def test_per_tier_concurrency_limit() -> None:
    model = FakeModel([sentiment("positive", 0.9)], delay=0.01)
    await moa.arun("t", input=[str(i) for i in range(6)], plan=PLAN, slm=model, llm=model, settings=settings(slm_concurrency=1))
    assert model.max_in_flight == 1


async def test_calibration_maps_raw_confidence(tmp_path: Path) -> None:
    s = settings(state_dir=tmp_path)
    raw = [i / 100 for i in range(50, 100)] * 2
    key = task_for(builtin_agents()["sentiment"], PLAN["subtasks"][0]["options"]).key  # type: ignore[index]
    calibration = Calibration.fit(raw, [c > 0.85 for c in raw], agent="sentiment", model="fake:", key=key)
    calibration.save(calibration_path(s, "sentiment", "fake:", key))
    model = FakeModel([sentiment("positive", 0.7)])
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model, settings=s)
    item = result.results["s"].items[0]
    assert item.output.confidence == pytest.approx(calibration.apply(0.7)) and item.output.confidence < 0.2  # type: ignore[union-attr]
    assert item.unverified == "no higher step"  # below the agent's 0.7 once calibrated


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_escalated_answers_are_stored_and_train_a_specialist(tmp_path: Path) -> None:
    s = settings(state_dir=tmp_path)
    embedder = FakeEmbedder()
    slm = FakeModel([sentiment("positive", 0.2)])
    llm = FakeModel(lambda r: sentiment("negative" if "awful" in item_of(r) else "positive", 0.95), spec="fake:big")
    texts = [f"an awful dull film number {i}" for i in range(6)] + [f"a great lovely film number {i}" for i in range(6)]
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=slm, llm=llm), embedder=embedder)
    result = await moa.arun("t", input=texts, plan=PLAN, context=ctx)
    assert result.escalations.count == 12
    agent = builtin_agents()["sentiment"]
    task = task_for(agent, {"labels": ["positive", "negative"]})
    stored = await ctx.examples().all("sentiment", task.key)
    assert sorted((e.label, e.model) for e in stored) == sorted([("negative", "fake:big")] * 6 + [("positive", "fake:big")] * 6)
    # the slm prompt now carries the nearest stored examples as demonstrations
    slm.requests.clear()
    await moa.arun("t", input=["an awful film"], plan=PLAN, context=ctx)
    assert "an awful dull film number" in prompt_of(slm.requests[0])
    # and a specialist fitted on them answers first next time
    _, report, path = await train_agent(ctx, agent, task, None, from_escalations=True)
    assert path.exists() and report.n == 13  # the 12 and the one just escalated
    fresh = moa.RunContext.create(s, models=moa.Models(s, slm=slm, llm=llm), embedder=embedder)
    again = await moa.arun("t", input=["an awful dull film number 3"], plan=PLAN, context=fresh)
    item = again.results["s"].items[0]
    assert item.answered_by == "specialist" and item.output.label == "negative"  # type: ignore[union-attr]
    assert again.summary.per_tier["specialist"].calls == 1 and "slm" not in again.summary.per_tier
    await ctx.aclose()
    await fresh.aclose()


async def test_from_escalations_with_nothing_stored_says_what_to_do(tmp_path: Path) -> None:
    ctx = moa.RunContext.create(settings(state_dir=tmp_path), embedder=FakeEmbedder())
    agent = builtin_agents()["sentiment"]
    with pytest.raises(UserError) as info:
        await train_agent(ctx, agent, task_for(agent, {}), None, from_escalations=True)
    assert info.value.code == ErrorCode.NOT_TRAINED and "llm tier" in info.value.message


async def test_specialist_only_cascade_without_a_specialist_is_a_clear_item_error(tmp_path: Path) -> None:
    model = FakeModel([sentiment("positive", 0.9)])
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model, settings=settings(state_dir=tmp_path, cascade=["specialist"]))
    error = result.results["s"].items[0].error
    assert error is not None and error.code == ErrorCode.NOT_TRAINED and "moa train sentiment" in error.message


async def test_interrupted_run_keeps_finished_items() -> None:
    model = FakeModel(lambda r: sentiment("positive", 0.9), delay=0.05, max_concurrency=1)
    done: list[moa.Event] = []
    ctx = moa.RunContext.create(settings(), models=moa.Models(settings(), slm=model, llm=model), on_event=done.append)
    task = asyncio.ensure_future(moa.arun("t", input=[f"item {i}" for i in range(40)], plan=PLAN, context=ctx))
    while sum(e.kind == "item_done" for e in done) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (interrupted,) = [e for e in done if e.kind == "run_interrupted"]  # the driver hands what finished to the event sink
    partial = interrupted.data["result"]
    assert partial.status == "interrupted"
    items = partial.results["s"].items
    assert 3 <= len(items) < 40 and all(i.output is not None for i in items)


def test_the_all_llm_counterfactual_prices_specialist_answers_as_the_agents_mean_model_call() -> None:
    from moa.usage import Usage, summarize

    records = [
        Usage(model="m", tier="slm", prompt_tokens=100, completion_tokens=10, agent="sentiment"),
        Usage(model="m", tier="slm", prompt_tokens=200, completion_tokens=30, agent="sentiment"),
        Usage(model="m", tier="slm", prompt_tokens=1000, completion_tokens=100, agent="extraction"),
        Usage(model="spec", tier="specialist", agent="sentiment"),  # no tokens: counted as (150, 20)
    ]
    summary = summarize(records, llm_price=(1.0, 2.0))
    assert summary.all_llm_cost == pytest.approx((100 + 20 + 200 + 60 + 1000 + 200 + 150 + 40) / 1000)


async def test_summary_prices_the_all_llm_counterfactual() -> None:
    s = settings(llm="openai:big@http://127.0.0.1:9/v1", prices={"openai:big@http://127.0.0.1:9/v1": {"prompt": 1.0, "completion": 2.0}})
    model = FakeModel([sentiment("positive", 0.9)])
    result = await moa.arun("t", input=["x", "y"], plan=PLAN, slm=model, llm=model, settings=s)
    expected = sum(u.prompt_tokens * 1.0 + u.completion_tokens * 2.0 for u in result.usage) / 1000
    assert result.summary.cost == 0 and result.summary.all_llm_cost == pytest.approx(expected)
    assert result.summary.saving == pytest.approx(expected) and result.summary.saving_pct == pytest.approx(1.0)
    assert result.summary.per_tier["slm"].latency_p95 >= result.summary.per_tier["slm"].latency_p50


async def test_up_front_routing_by_length_and_script() -> None:
    slm = FakeModel([sentiment("positive", 0.95)])
    llm = FakeModel([sentiment("negative", 0.95)], spec="fake:big")
    items = ["short", "a much longer review " * 10, "Отличный отель, всё понравилось"]
    result = await moa.arun("t", input=items, plan=PLAN, slm=slm, llm=llm, settings=settings(route_long_chars=100, route_non_latin=0.5))
    short, long, russian = result.results["s"].items
    assert short.answered_by == "slm" and short.routed is None
    assert long.answered_by == "llm" and (long.routed or "").startswith("long input")
    assert russian.answered_by == "llm" and (russian.routed or "").startswith("non-Latin script")
    assert len(slm.requests) == 1 and result.escalations.routed == 2 and result.escalations.count == 0


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_a_model_never_gets_its_own_answers_as_demonstrations(tmp_path: Path) -> None:
    s = settings(state_dir=tmp_path, cascade=["specialist", "slm"])
    embedder = FakeEmbedder()
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel([sentiment("negative", 0.95)])), embedder=embedder)
    agent = builtin_agents()["sentiment"]
    task = task_for(agent, {"labels": ["positive", "negative"]})
    await ctx.examples().add("sentiment", task.key, "an awful dull film", "negative", "fake:")
    await ctx.examples().add("sentiment", task.key, "an awful boring film", "negative", "fake:big")
    shots = await agent._examples(ctx, agent.make_input("an awful film", task.options), moa.Capabilities(chat=False, completion=True), "fake:")
    assert [e.model for e in shots] == ["fake:big"]
    await ctx.aclose()


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_the_example_store_is_looked_at_once_a_run_and_again_in_the_next(tmp_path: Path) -> None:
    s = settings(state_dir=tmp_path, cascade=["specialist", "slm"])
    embedder = FakeEmbedder()
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel([sentiment("negative", 0.95)])), embedder=embedder)
    other = moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel([sentiment("negative", 0.95)])), embedder=embedder)
    task = task_for(builtin_agents()["sentiment"], {"labels": ["positive", "negative"]})
    assert await ctx.examples().count("sentiment", task.key) == 0  # nothing on disk yet
    await other.examples().add("sentiment", task.key, "an awful dull film", "negative", "fake:big")  # another run stores one
    assert await ctx.examples().count("sentiment", task.key) == 0  # this run keeps what it saw
    await ctx.examples().add("sentiment", task.key, "a dull film", "negative", "fake:big")
    assert await ctx.examples().count("sentiment", task.key) == 2  # its own writes count at once
    await other.examples().add("sentiment", task.key, "a boring film", "negative", "fake:big")
    later = ctx.for_run(s, "next", None)
    assert await later.examples().count("sentiment", task.key) == 3  # the next run looks again
    await ctx.aclose()
    await other.aclose()
