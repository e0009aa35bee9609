"""A run stopped in the middle of a subtask: its finished items come back on resume, and its
side-effect tool calls are made at most once (the run ledger, :mod:`moa.agent.ledger`).

A crash is an unexpected exception from the fake model or the tool (the run stops like a killed
process would, after what it had saved); real SIGKILLs are in test_crash_property.py (`slow`)
and test_durable_real.py (`real`).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import pytest
from structlog.testing import capture_logs

import moa
from moa.errors import ErrorCode
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents
from moa.workflow.index import state_path
from moa.workflow.prune import remove_runs

PLAN = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
ITEMS = [f"order A-{n} arrived" for n in range(1, 7)]
GOOD = '{"label":"positive","confidence":0.9}'


def _item(request: GenerateRequest) -> str:
    found = re.search(r"A-\d+", prompt_of(request))
    assert found is not None
    return found.group(0)


class CrashOn:
    """Answers sentiment prompts; raises on the prompt of one item while armed."""

    def __init__(self, item: str) -> None:
        self.item = item
        self.armed = True

    def __call__(self, request: GenerateRequest) -> str:
        if self.armed and _item(request) == self.item:
            raise RuntimeError("simulated crash")
        return GOOD


def _rows(table: str, run_id: str = "r1") -> int:
    with sqlite3.connect(state_path(moa.load_settings())) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0])


def _saved_positions(run_id: str = "r1") -> list[int]:
    with sqlite3.connect(state_path(moa.load_settings())) as conn:
        return [int(p) for (p,) in conn.execute("SELECT position FROM moa_items WHERE run_id = ? ORDER BY position", (run_id,))]


async def _crash_at_item_5() -> tuple[FakeModel, CrashOn, moa.Settings, list[int]]:
    """A run whose item 5 crashes; the positions of the items saved by then (the others ran concurrently)."""
    handler = CrashOn("A-5")
    model = FakeModel(handler)
    settings = moa.load_settings(concurrency=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model, run_id="r1", settings=settings)
    saved = _saved_positions()
    assert 5 not in saved and {1, 2, 3} <= set(saved)
    return model, handler, settings, saved


async def test_the_items_finished_before_a_crash_are_not_run_again_and_the_result_is_the_same() -> None:
    same = FakeModel([GOOD])
    reference = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=same, llm=same, settings=moa.load_settings(concurrency=2))
    model, handler, settings, saved = await _crash_at_item_5()
    handler.armed = False
    before = len(model.requests)

    with capture_logs() as logs:
        result = await moa.aresume("r1", slm=model, llm=model, settings=settings)

    assert result.status == "ok" and result.reused == []  # the subtask had not finished: it ran, with its saved items
    assert sorted(_item(r) for r in model.requests[before:]) == [f"A-{p}" for p in range(1, 7) if p not in saved]
    assert [e for e in logs if e["event"] == "items_reused"] == [
        {"event": "items_reused", "log_level": "info", "run_id": "r1", "subtask": "a", "items": len(saved), "of": 6}
    ]
    assert result.results["a"].items == reference.results["a"].items  # outputs (of the agent's type), attempts, tool calls
    assert type(result.results["a"].items[0].output).__name__ == "Sentiment"
    assert result.results["a"].status == "ok" and result.results["a"].handled == reference.results["a"].handled
    # each item's usage counted once: the saved items' (spent by the first attempt) and the new ones'
    assert result.summary.calls == reference.summary.calls == 6
    assert result.summary.prompt_tokens == reference.summary.prompt_tokens
    assert _rows("moa_items") == 0  # the checkpoint holds them now


async def test_a_resume_counts_the_saved_items_in_the_budget() -> None:
    model, handler, settings, saved = await _crash_at_item_5()
    handler.armed = False
    per_item = model.requests[0]  # every item's prompt and answer are the same size
    tokens = len(saved) * (len(prompt_of(per_item).split()) + len(GOOD.split()))
    before = len(model.requests)

    result = await moa.aresume("r1", slm=model, llm=model, settings=moa.load_settings(concurrency=2, budget_tokens=tokens))

    assert result.status == "stopped" and len(model.requests) == before  # the saved items used the budget up
    items = result.results["a"].items
    assert [i.output is not None for i in items] == [p in saved for p in range(1, 7)]
    assert all(i.error is not None and i.error.code == ErrorCode.BUDGET_EXCEEDED for p, i in enumerate(items, start=1) if p not in saved)


async def test_removing_a_run_removes_its_saved_items() -> None:
    await _crash_at_item_5()
    assert _rows("moa_items") > 0
    removed = await remove_runs(moa.load_settings(), ["r1"])
    assert removed.runs == ["r1"] and _rows("moa_items") == 0


executed: list[str] = []


@moa.tool(side_effects=True)
def ship(order_id: str) -> str:
    """Ship an order."""
    executed.append(order_id)
    if order_id == "A-2" and crash["tool"]:
        raise RuntimeError("simulated crash in the tool")
    return f"shipped {order_id}"


crash = {"tool": False, "answer": False}


def shipper(request: GenerateRequest) -> Generation:
    """Ships the order of its item, then answers (crashes on the answer while ``crash["answer"]``)."""
    if request.tools:
        if any(m.role == "tool" for m in request.messages or []):
            return Generation(text="done")
        return Generation(text="", tool_calls=[ToolCall(id="c1", name="ship", arguments={"order_id": _item(request)})])
    if crash["answer"]:
        raise RuntimeError("simulated crash")
    return Generation(text=GOOD)


def _tool_messages(requests: list[GenerateRequest]) -> list[str]:
    return [m.content for r in requests for m in r.messages or [] if m.role == "tool"]


async def _crashed(item: str, **where: bool) -> tuple[dict[str, Any], FakeModel]:
    executed.clear()
    crash.update({"tool": False, "answer": False, **where})
    model = FakeModel(shipper, chat=True, tools=True)
    agent = builtin_agents()["sentiment"].with_tools(ship)
    run: dict[str, Any] = {"agents": [agent], "slm": model, "llm": FakeModel(), "settings": moa.load_settings(escalate=False)}
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.arun("ship and rate", input=[f"order {item} arrived"], plan=PLAN, run_id="t1", **run)
    assert executed == [item]
    crash.update(tool=False, answer=False)
    return run, model


async def test_a_side_effect_call_that_finished_before_a_crash_is_not_made_again_on_resume() -> None:
    run, model = await _crashed("A-1", answer=True)  # the tool ran, then the final answer crashed
    assert _rows("moa_tool_calls", "t1") == 1
    before = len(model.requests)

    result = await moa.aresume("t1", **run)

    assert result.status == "ok" and executed == ["A-1"]  # not shipped twice
    (call,) = result.results["a"].tool_calls
    assert (call.name, call.allowed, call.result, call.error) == ("ship", True, "shipped A-1", None)
    assert '"shipped A-1"' in _tool_messages(model.requests[before:])  # the model got the recorded result
    assert _rows("moa_tool_calls", "t1") == 0


async def test_a_side_effect_call_killed_while_it_ran_is_refused_on_resume_not_repeated() -> None:
    run, model = await _crashed("A-2", tool=True)  # the tool had its effect, then the process died in it
    before = len(model.requests)

    with capture_logs() as logs:
        result = await moa.aresume("t1", **run)

    assert executed == ["A-2"]  # not called again
    item = result.results["a"].items[0]
    (call,) = item.run.tool_calls
    assert not call.allowed and call.error is not None and call.error.code == ErrorCode.TOOL_MAY_HAVE_RUN and call.error.type == "ToolRefused"
    told = _tool_messages(model.requests[before:])
    assert told and "may already have run" in told[0] and "not repeated" in told[0]
    assert item.output is not None and result.status == "ok"  # the model is told, and answers
    assert any(e["event"] == "tool_call_not_repeated" and e["tool"] == "ship" for e in logs)


async def test_without_a_durable_run_side_effect_tools_are_called_as_asked() -> None:
    executed.clear()
    crash.update(tool=False, answer=False)
    model = FakeModel(shipper, chat=True, tools=True)
    settings = moa.load_settings(escalate=False, durable=False)
    agent = builtin_agents()["sentiment"].with_tools(ship)
    for _ in range(2):
        result = await moa.arun("ship", input=["order A-3 arrived"], plan=PLAN, agents=[agent], slm=model, llm=FakeModel(), settings=settings)
        assert result.results["a"].tool_calls[0].allowed
    assert executed == ["A-3", "A-3"] and not state_path(settings).exists()


@moa.tool
def refund(order_id: str) -> str:
    """Refund an order."""
    executed.append(f"refund {order_id}")
    return "refunded"


def ship_then_refund(request: GenerateRequest) -> Generation:
    """Ships (round 1), then asks for a refund (round 2), then answers."""
    if request.tools:
        done = [m.content for m in request.messages or [] if m.role == "tool"]
        if not done:
            return Generation(text="", tool_calls=[ToolCall(id="c1", name="ship", arguments={"order_id": _item(request)})])
        if len(done) == 1:
            return Generation(text="", tool_calls=[ToolCall(id="c2", name="refund", arguments={"order_id": _item(request)})])
        return Generation(text="done")
    return Generation(text=GOOD)


async def test_a_side_effect_call_made_before_an_item_waited_for_approval_is_not_made_again_after_it() -> None:
    executed.clear()
    crash.update(tool=False, answer=False)
    model = FakeModel(ship_then_refund, chat=True, tools=True)
    run: dict[str, Any] = {
        "agents": [builtin_agents()["sentiment"].with_tools(ship, refund)], "slm": model, "llm": FakeModel(),
        "settings": moa.load_settings(escalate=False, approve=["tool:refund"]),
    }  # fmt: skip
    waiting = await moa.arun("ship", input=["order A-4 arrived"], plan=PLAN, **run)
    assert [a.id for a in waiting.pending] == ["a/1/tool:refund"] and executed == ["A-4"]

    result = await moa.aresume(waiting.run_id, approve=True, **run)  # the item's tool loop runs again from its start

    assert result.status == "ok" and executed == ["A-4", "refund A-4"]  # shipped once
    calls = result.results["a"].tool_calls  # the parked attempt's calls, then the run's calls after the approval
    assert {(c.name, c.allowed, c.result) for c in calls} == {("ship", True, "shipped A-4"), ("refund", True, "refunded")}
