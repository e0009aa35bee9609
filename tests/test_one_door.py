"""Every model call goes through one door: each built-in graph, and an agent called as another
agent's tool, waits under a ``tier:llm`` / ``tools:side_effects`` approval and stops on a tiny
budget (the bypasses found in mixture, rag and agent_tool)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import moa
from moa.agent.tools import agent_tool
from moa.errors import ErrorCode
from moa.graphs import mixture, plan_execute, rag, triage
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeEmbedder, FakeModel
from moa.workflow.catalog import builtin_agents

PLAN = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
LLM_PLAN = json.dumps({"subtasks": [{"id": "s1", "agent": "sentiment", "instruction": "rate"}], "rationale": ""})


def answers(request: GenerateRequest) -> str:
    """A valid answer for any decode schema with a ``label`` enum, or a plan for the planner."""
    props = (request.json_schema or {}).get("properties", {})
    if "subtasks" in props or "plan" in props:  # moa's full plan format, or the llm planner's compact one
        return LLM_PLAN
    label = props.get("label", {})
    choice = (label.get("enum") or ["positive"])[0]
    return json.dumps({"reason": "r", "label": choice, "confidence": 0.99})


def models() -> tuple[FakeModel, FakeModel]:
    return FakeModel(answers, spec="fake:small"), FakeModel(answers, chat=True, spec="fake:big")


def context(tmp_path: Path, slm: FakeModel, llm: FakeModel, **settings: Any) -> moa.RunContext:
    s = moa.load_settings(memory_dir=tmp_path / "memory", **settings)
    return moa.RunContext.create(s, models=moa.Models(s, slm=slm, llm=llm), embedder=FakeEmbedder())


GRAPHS = {
    "plan_execute": lambda: plan_execute.build(),
    "triage": lambda: triage.build(),
    "mixture": lambda: mixture.build(layers=1),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
async def test_each_graph_waits_for_tier_llm_approval_before_any_llm_call(tmp_path: Path, name: str) -> None:
    slm, llm = models()
    ctx = context(tmp_path, slm, llm, approve=["tier:llm"])
    result = await moa.arun("rate the reviews", input=["great", "awful"], graph=GRAPHS[name](), context=ctx)
    assert result.status == "waiting", result.status
    assert result.pending and all(a.step == "llm" for a in result.pending)
    assert llm.requests == []  # nothing reached the large model before a person said yes
    resumed = await moa.aresume(result.run_id, approve=True, graph=GRAPHS[name](), context=ctx)
    assert resumed.status in ("ok", "waiting"), resumed.status
    assert llm.requests  # approved: the llm was called
    await ctx.aclose()


@pytest.mark.parametrize("name", sorted(GRAPHS))
async def test_each_graph_stops_on_a_tiny_budget(tmp_path: Path, name: str) -> None:
    slm, llm = models()
    ctx = context(tmp_path, slm, llm, budget_tokens=1, slm_concurrency=1, llm_concurrency=1)
    result = await moa.arun("rate the reviews", input=["great", "awful", "fine"], graph=GRAPHS[name](), context=ctx)
    assert result.status == "stopped" and result.stopped and "token budget" in result.stopped
    assert len(slm.requests) + len(llm.requests) == 1  # the first call spends the budget; no other call goes out
    assert result.summary.calls == 1
    await ctx.aclose()


@pytest.mark.real  # real embedded Chroma (with the fake embedder)
async def test_rag_waits_for_approval_and_stops_on_a_tiny_budget(tmp_path: Path) -> None:
    slm, llm = models()
    llm_answers = FakeModel(["Paris [1]."], chat=True, spec="fake:big")
    ctx = context(tmp_path, slm, llm_answers, approve=["tier:llm"])
    await ctx.memory().aadd(["paris is the capital of france"], sources=["geo.md"])
    waiting = await moa.arun("answer", input=["capital of france?", "france capital?"], graph=rag.build(k=1, min_score=0.0), context=ctx)
    assert waiting.status == "waiting" and [a.id for a in waiting.pending] == ["answer"] and llm_answers.requests == []
    done = await moa.aresume(waiting.run_id, approve=True, graph=rag.build(k=1, min_score=0.0), context=ctx)
    assert done.status == "ok" and len(llm_answers.requests) == 2
    await ctx.aclose()

    ctx = context(tmp_path, slm, llm_answers, budget_tokens=1, llm_concurrency=1)
    llm_answers.requests.clear()
    stopped = await moa.arun("answer", input=["capital of france?", "france capital?"], graph=rag.build(k=1, min_score=0.0), context=ctx)
    assert stopped.status == "stopped" and len(llm_answers.requests) == 1
    codes = [i.error.code for i in stopped.results["answer"].items if i.error]
    assert codes == [ErrorCode.BUDGET_EXCEEDED]
    await ctx.aclose()


executed: list[str] = []


@moa.tool(side_effects=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    executed.append(order_id)
    return "refunded"


def tool_caller(request: GenerateRequest) -> Generation:
    """Asks for the first offered tool once, then answers."""
    if request.tools:
        if any(m.role == "tool" for m in request.messages or []):
            return Generation(text="done", prompt_tokens=5, completion_tokens=1)
        tool = request.tools[0].name
        arguments = {"order_id": "A-17"} if tool == "refund" else {"text": "refund order A-17 please", "criterion": "refund requests"}
        return Generation(text="", tool_calls=[ToolCall(id=f"c-{tool}", name=tool, arguments=arguments)], prompt_tokens=7, completion_tokens=3)
    return Generation(text=answers(request), prompt_tokens=11, completion_tokens=4)


async def test_an_agent_called_as_a_tool_goes_through_the_outer_runs_approvals_and_accounting(tmp_path: Path) -> None:
    executed.clear()
    model = FakeModel(tool_caller, chat=True, tools=True)
    inner = builtin_agents()["filtering"].with_tools(refund)  # B: a side-effect tool
    outer = builtin_agents()["sentiment"].with_tools(agent_tool(inner))  # A calls B as a tool
    s = moa.load_settings(escalate=False, approve=["tools:side_effects"])
    run = dict(plan=PLAN, agents=[outer], slm=model, llm=model, settings=s)
    waiting = await moa.arun("rate", input=["please refund A-17"], **run)  # type: ignore[arg-type]

    assert waiting.status == "waiting" and executed == []
    (approval,) = waiting.pending
    assert (approval.kind, approval.tool, approval.rule, approval.agent) == ("tool", "refund", "tools:side_effects", "filtering")

    done = await moa.aresume(waiting.run_id, approve=True, agents=[outer], slm=model, llm=model, settings=s)
    assert done.status == "ok" and executed == ["A-17"]  # run once, after the approval
    calls = [(c.name, c.allowed) for c in done.results["s1"].tool_calls]
    assert ("filtering", True) in calls and ("refund", True) in calls  # the nested agent's tool call is listed too
    agents_billed = {u.agent for u in done.usage}
    assert "filtering" in agents_billed and "sentiment" in agents_billed  # B's model calls are in the run's usage
    assert done.summary.calls == len(model.requests)  # every request the model got is accounted


async def test_an_agent_tool_denied_leaves_the_side_effect_undone(tmp_path: Path) -> None:
    executed.clear()
    model = FakeModel(tool_caller, chat=True, tools=True)
    outer = builtin_agents()["sentiment"].with_tools(agent_tool(builtin_agents()["filtering"].with_tools(refund)))
    s = moa.load_settings(escalate=False, approve=["tools:side_effects"])
    waiting = await moa.arun("rate", input=["please refund A-17"], plan=PLAN, agents=[outer], slm=model, llm=model, settings=s)
    done = await moa.aresume(waiting.run_id, deny=True, agents=[outer], slm=model, llm=model, settings=s)
    assert done.status == "ok" and executed == []
    refused = [c for c in done.results["s1"].tool_calls if c.name == "refund"]
    assert refused and not refused[0].allowed and refused[0].error is not None and refused[0].error.code == ErrorCode.TOOL_REFUSED


async def test_the_door_records_every_call_in_the_scope_budget_and_events(tmp_path: Path) -> None:
    events: list[moa.Event] = []
    model = FakeModel(["hi"], chat=True)
    s = moa.load_settings()
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=model, llm=model), on_event=events.append)
    with ctx.scope(subtask="x", agent="a") as scope:
        gen = await ctx.call("slm", GenerateRequest(prompt="p"), purpose="agent")
    assert gen.text == "hi"
    (usage,) = scope.usage
    assert (usage.subtask, usage.agent, usage.tier, usage.purpose) == ("x", "a", "slm", "agent")
    assert ctx.budget.tokens == usage.tokens
    assert [e.kind for e in events] == ["model_call"] and events[0].subtask == "x"


async def test_a_typed_error_carries_usage_and_outputs() -> None:
    model = FakeModel(["not json", "still not json"])
    s = moa.load_settings()
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=model, llm=model))

    class Answer(BaseModel):
        label: str

    with pytest.raises(moa.InvalidOutput) as caught:
        await moa.generate_structured(ctx, "slm", GenerateRequest(prompt="p"), Answer)
    assert caught.value.outputs == ["not json", "still not json"]
    assert [u.purpose for u in caught.value.usage] == ["agent", "repair"]
    assert isinstance(caught.value, moa.RunError) and caught.value.exit_code == 3


async def test_a_gated_call_outside_a_run_is_a_clear_error_not_a_langgraph_traceback() -> None:
    """``ctx.call`` used directly (no graph to pause, nobody to ask) under an approval rule."""
    model = FakeModel(["hi"], chat=True)
    s = moa.load_settings(approve=["tier:llm"])
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=model, llm=model))
    with pytest.raises(moa.UserError) as caught:
        await ctx.call("llm", GenerateRequest(prompt="p"), purpose="answer")
    assert caught.value.code == ErrorCode.AWAITING_APPROVAL
    assert "tier:llm" in caught.value.message and "moa.run" in caught.value.message
    assert model.requests == []  # nothing reached the model
    assert await ctx.call("slm", GenerateRequest(prompt="p"), purpose="answer") is not None  # ungated steps still go
