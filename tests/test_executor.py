"""Orchestration with fake models: fan-out, reducer merge, failures, partial results."""

from __future__ import annotations

import asyncio
import json

import pytest

import moa
from moa.errors import ErrorCode, RunError, UserError
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeEmbedder, FakeModel, prompt_of, unreachable


def _answers(request: GenerateRequest) -> str:
    prompt = prompt_of(request)
    if "spam or ham" in prompt:
        return '{"label":"spam","confidence":0.9}' if "WIN" in prompt.rsplit("Message:", 1)[-1] else '{"label":"ham","confidence":0.9}'
    if "named entities" in prompt:
        return '{"entities":[{"text":"Paris","type":"location"},{"text":"Atlantis","type":"location"}]}'
    return '{"label":"positive","confidence":0.9}'


TRIAGE = {
    "subtasks": [
        {"id": "f", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "s", "agent": "sentiment", "items": "f", "depends_on": ["f"]},
        {"id": "e", "agent": "extraction", "items": "f", "depends_on": ["f"]},
    ]
}
ITEMS = ["WIN a prize now", "Lovely hotel in Paris", "Great food"]


async def test_dag_runs_filter_then_parallel_agents_on_kept_items() -> None:
    model = FakeModel(_answers)
    result = await moa.arun("triage", input=ITEMS, plan=TRIAGE, slm=model, llm=model)
    assert result.status == "ok"
    assert result.results["f"].forwarded == ["Lovely hotel in Paris", "Great food"]
    assert [i.item for i in result.results["s"].items] == ["Lovely hotel in Paris", "Great food"]
    entities = result.results["e"].items[0].output.entities  # type: ignore[union-attr]
    # "Atlantis" is not in the text: dropped; "Paris" gets its exact span
    assert [(e.text, e.start, e.end) for e in entities] == [("Paris", 16, 21)]
    assert result.summary.calls == 3 + 2 + 2
    assert result.summary.slm_call_share == 1.0


async def test_independent_subtasks_run_concurrently() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'], delay=0.05)
    plan = {"subtasks": [{"id": f"s{i}", "agent": "sentiment"} for i in range(3)]}
    result = await moa.arun("sentiment", input=["a", "b", "c", "d"], plan=plan, slm=model, llm=model)
    assert result.status == "ok"
    assert model.max_in_flight == 12  # 3 subtasks x 4 items, all in flight at once


async def test_backend_concurrency_limit_is_respected() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'], delay=0.02, max_concurrency=2)
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    await moa.arun("sentiment", input=[str(i) for i in range(6)], plan=plan, slm=model, llm=model)
    assert model.max_in_flight == 2


async def test_invalid_output_twice_is_a_typed_error_and_keeps_other_results() -> None:
    def handler(request: GenerateRequest) -> str:
        return "not json at all" if "broken" in prompt_of(request).rsplit("Text:", 1)[-1] else '{"label":"negative","confidence":0.8}'

    model = FakeModel(handler)
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    result = await moa.arun("sentiment", input=["fine", "broken item"], plan=plan, slm=model, llm=model)
    assert result.status == "partial"
    items = result.results["s1"].items
    assert items[0].output is not None and items[0].output.label == "negative"  # type: ignore[attr-defined]
    assert items[1].error is not None and items[1].error.code == ErrorCode.INVALID_OUTPUT
    assert len(model.requests) == 3  # fine + broken + one repair
    assert result.exit_code == 3
    json.loads(result.model_dump_json())  # the partial result serialises


async def test_failed_subtask_skips_dependents_and_keeps_finished_work() -> None:
    good = FakeModel(_answers)
    down = unreachable()
    plan = {
        "subtasks": [
            {"id": "a", "agent": "sentiment"},
            {"id": "f", "agent": "filtering", "options": {"criterion": "spam"}},
            {"id": "x", "agent": "extraction", "items": "f", "depends_on": ["f"]},
        ]
    }

    down_filter = moa.workflow.catalog.builtin_agents()["filtering"].with_policy(cascade=[down])
    result = await moa.arun("t", input=ITEMS, plan=plan, slm=good, llm=good, agents=[down_filter])
    assert result.results["a"].status == "ok"
    assert result.results["f"].status == "failed"
    assert result.results["x"].status == "skipped"
    assert "depends on f" in (result.results["x"].reason or "")
    assert result.status == "partial"
    codes = {e.code for e in result.errors}
    assert ErrorCode.MODEL_UNREACHABLE in codes
    # an unreachable model stops the batch: one call, not one per item
    assert len(down.requests) == 1


async def test_plan_with_cycle_is_rejected_before_any_model_call() -> None:
    model = FakeModel(_answers)
    plan = {"subtasks": [{"id": "a", "agent": "sentiment", "depends_on": ["a"]}]}
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model)
    assert info.value.code == ErrorCode.INVALID_PLAN
    assert model.requests == []


@pytest.mark.real  # routes by the MiniLM embedder's similarity (a bag-of-words FakeEmbedder misses the entities)
async def test_router_planner_builds_the_triage_dag() -> None:
    model = FakeModel(_answers)
    result = await moa.arun("Filter out spam, then give the sentiment and the entities of the rest", input=ITEMS, slm=model, llm=model)
    assert result.planner is not None and result.planner.name == "router"
    assert "no chat template" in result.planner.reason  # FakeModel(chat=False) is a base model
    agents = {s.agent: s for s in result.plan.subtasks}  # type: ignore[union-attr]
    assert set(agents) == {"filtering", "sentiment", "extraction"}
    assert agents["filtering"].options == {"criterion": "spam", "mode": "drop"}
    assert agents["sentiment"].depends_on == [agents["filtering"].id]
    assert agents["extraction"].depends_on == [agents["filtering"].id]
    assert result.status == "ok"


async def test_llm_planner_is_used_for_chat_models_and_repairs_mechanically() -> None:
    bad = json.dumps({"subtasks": [{"id": "s1", "agent": "sentiment", "depends_on": ["s1"]}]})  # moa's full format, depends on itself
    llm = FakeModel([bad, "The reviews are positive."], chat=True)
    slm = FakeModel(['{"label":"positive","confidence":0.9}'])
    settings = moa.load_settings(confidence="self")  # one call per item (agreement sampling is tested in test_escalation)
    result = await moa.arun("how do people feel?", input=["nice"], slm=slm, llm=llm, settings=settings)
    assert result.planner is not None and result.planner.name == "llm" and "dropped dependencies on 's1'" in result.planner.reason
    assert result.answer == "The reviews are positive."
    assert result.summary.per_tier["llm"].calls == 2  # no second planning call: the repair was mechanical
    assert result.summary.slm_call_share == pytest.approx(1 / 3)


async def test_an_llm_plan_that_cannot_be_repaired_is_an_error_with_planner_llm() -> None:
    """With ``planner = "llm"``; under ``auto`` the router plans with a warning (below, and
    tests/test_planner_fallback.py)."""
    bad = json.dumps({"subtasks": [{"id": "s1", "agent": "nope"}]})
    llm = FakeModel([bad], chat=True)
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=["x"], slm=llm, llm=llm, settings=moa.load_settings(planner="llm"))
    assert info.value.code == ErrorCode.INVALID_PLAN and "no usable plan" in info.value.message and "--planner router" in info.value.message
    assert len(llm.requests) == 1  # one planning call: no second attempt


async def test_an_llm_plan_that_cannot_be_repaired_is_routed_instead_with_a_warning() -> None:
    bad = json.dumps({"subtasks": [{"id": "s1", "agent": "nope"}]})
    llm = FakeModel([bad], chat=True)
    settings = moa.load_settings()
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=llm, llm=llm), embedder=FakeEmbedder())
    result = await moa.arun("give the sentiment of each review", input=["x"], context=ctx)
    await ctx.aclose()
    assert result.planner is not None and result.planner.name == "router"
    assert result.planner.warning is not None and "unknown agent 'nope'" in result.planner.warning


async def test_synthesizer_failure_keeps_the_report() -> None:
    llm = FakeModel(chat=True, fail_with=RunError(ErrorCode.MODEL_TIMEOUT, "slow"))
    slm = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    result = await moa.arun("t", input=["x"], plan=plan, slm=slm, llm=llm)
    assert result.answer is None and "failed: [model_timeout] slow" in (result.synthesizer or "")
    assert result.status == "ok"


async def test_a_synthesizer_answer_without_text_is_a_model_error_and_a_cut_one_is_marked() -> None:
    slm = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    called = Generation(text="", tool_calls=[ToolCall(id="c1", name="delete_everything", arguments={})], finish_reason="tool_calls")
    result = await moa.arun("t", input=["x"], plan=plan, slm=slm, llm=FakeModel(lambda _: called, chat=True))
    assert result.answer is None and result.status == "ok" and result.results["s1"].items[0].output is not None
    assert result.synthesizer is not None and "[model_error]" in result.synthesizer and "delete_everything" in result.synthesizer
    cut = Generation(text="The reviews are posi", finish_reason="length")
    result = await moa.arun("t", input=["x"], plan=plan, slm=slm, llm=FakeModel(lambda _: cut, chat=True))
    assert result.answer == "The reviews are posi" and result.synthesizer == "fake: (cut at max_tokens=600: the answer is incomplete)"


async def test_events_are_logged_with_run_and_subtask_ids() -> None:
    from structlog.testing import capture_logs

    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    with capture_logs() as logs:
        result = await moa.arun("t", input=["x"], plan=plan, slm=model, llm=model)
    done = [e for e in logs if e["event"] == "subtask_done"]
    assert done and done[0]["run_id"] == result.run_id and done[0]["subtask"] == "s1"
    assert any(e["event"] == "run_finished" and e["status"] == "ok" for e in logs)


def _first_label(request: GenerateRequest) -> str:
    """Answer with the first of the labels the sentiment prompt offers."""
    line = next(line for line in prompt_of(request).splitlines() if "as one of:" in line)
    return json.dumps({"label": line.split("one of:")[1].strip(" .").split(", ")[0], "confidence": 0.9})


@pytest.mark.parametrize("durable", [True, False], ids=["langgraph-tasks", "asyncio-tasks"])
async def test_a_subtask_starts_when_its_own_dependencies_finish(durable: bool) -> None:
    # a is slow; b -> c is a fast chain: c must not wait for a (no superstep barrier), whether
    # subtasks are LangGraph tasks (checkpointed) or plain asyncio tasks (not checkpointed)
    model = FakeModel(_first_label, delay=lambda request: 1.0 if "slowpos" in prompt_of(request) else 0.0)
    plan = {
        "subtasks": [
            {"id": "a", "agent": "sentiment", "options": {"labels": ["slowpos", "slowneg"]}},
            {"id": "b", "agent": "sentiment"},
            {"id": "c", "agent": "sentiment", "depends_on": ["b"]},
        ]
    }
    events: list[tuple[str, str | None]] = []
    settings = moa.load_settings(durable=durable)
    result = await moa.arun("t", input=["x"], plan=plan, slm=model, llm=model, settings=settings, on_event=lambda e: events.append((e.kind, e.subtask)))
    assert result.status == "ok"
    assert [s for kind, s in events if kind == "subtask_done"] == ["b", "c", "a"]
    assert result.results["a"].items[0].output.label == "slowpos"  # type: ignore[union-attr]


@pytest.mark.parametrize("items", [1, 3], ids=["one-item", "batch"])  # a one-item batch runs its item without a task of its own
@pytest.mark.parametrize("durable", [True, False], ids=["langgraph-tasks", "asyncio-tasks"])
async def test_cancelling_a_run_cancels_the_subtasks_still_running(durable: bool, items: int) -> None:
    from pydantic import BaseModel

    class Text(BaseModel):
        text: str

    class Done(BaseModel):
        ok: bool

    class Slow(moa.FunctionAgent[Text, Done]):
        name = "slow"
        description = "Takes its time."
        input_type = Text
        output_type = Done

    started, cancelled = asyncio.Event(), asyncio.Event()

    async def wait(ctx: moa.RunContext, data: Text) -> Done:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Done(ok=True)

    plan = {"subtasks": [{"id": "s1", "agent": "slow"}, {"id": "s2", "agent": "slow"}]}
    settings = moa.load_settings(durable=durable)
    texts = [f"x{i}" for i in range(items)]
    run = asyncio.ensure_future(moa.arun("t", input=texts, plan=plan, agents=[Slow(wait)], slm=FakeModel(), llm=FakeModel(), settings=settings))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.wait_for(cancelled.wait(), 5)  # the agent's work was stopped, not left running


async def test_a_plan_longer_than_max_steps_is_refused_before_any_model_call() -> None:
    model = FakeModel(_first_label)
    plan = {"subtasks": [{"id": f"s{i}", "agent": "sentiment"} for i in range(3)]}
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=["x"], plan=plan, slm=model, llm=model, settings=moa.load_settings(max_steps=2))
    assert info.value.code == ErrorCode.STEP_LIMIT
    assert "3 subtasks" in info.value.message and "MOA_MAX_STEPS" in info.value.message
    assert model.requests == []


async def test_a_looping_graph_stops_at_max_steps_with_a_clear_error() -> None:
    from langgraph.graph import START, StateGraph

    from moa.workflow.state import RunDeps, RunState

    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("again", lambda state: {"answer": "still going"})
    graph.add_edge(START, "again")
    graph.add_edge("again", "again")  # a loop with no way out
    with pytest.raises(RunError) as info:
        await moa.arun("t", graph=graph.compile(name="loop"), slm=FakeModel(), llm=FakeModel(), settings=moa.load_settings(max_steps=5))
    assert info.value.code == ErrorCode.STEP_LIMIT
    assert "max_steps=5" in info.value.message and "MOA_MAX_STEPS" in info.value.message
