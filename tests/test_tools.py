"""Tool calling between nodes: allowlists, refusals in the run record, agents as langchain tools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import moa
from moa.errors import ErrorCode, UserError
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeModel
from moa.workflow.catalog import builtin_agents

SENTIMENT = builtin_agents()["sentiment"]
executed: list[str] = []


@moa.tool
def delete_everything(confirm: bool) -> str:
    """Deletes all data."""
    executed.append("delete_everything")
    return "deleted"


@moa.tool
async def order_status(order_id: str, verbose: bool = False) -> dict[str, str]:
    """Shipping status of an order."""
    executed.append(f"order_status:{order_id}")
    return {"order_id": order_id, "status": "shipped"}


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    executed.clear()
    yield


def _script() -> FakeModel:
    turns = iter(
        [
            Generation(
                text="",
                tool_calls=[
                    ToolCall(id="c1", name="order_status", arguments={"order_id": "A-17"}),
                    ToolCall(id="c2", name="delete_everything", arguments={"confirm": True}),
                    ToolCall(id="c3", name="order_status", arguments={"wrong": 1}),
                ],
            ),
            Generation(text="I know enough."),
            Generation(text='{"label":"positive","confidence":0.8}'),
        ]
    )

    def handler(request: GenerateRequest) -> Generation:
        return next(turns)

    return FakeModel(handler, chat=True, tools=True)


async def test_allowed_tools_run_and_disallowed_are_refused_not_executed() -> None:
    model = _script()
    agent = SENTIMENT.with_tools(order_status)
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    result = await moa.arun("how does the customer feel?", input=["Where is order A-17? Love the shop."], plan=plan, agents=[agent], slm=model, llm=FakeModel(chat=True), settings=moa.load_settings(escalate=False))
    calls = result.results["s1"].tool_calls
    assert [(c.name, c.allowed) for c in calls] == [("order_status", True), ("delete_everything", False), ("order_status", True)]
    assert calls[0].result == {"order_id": "A-17", "status": "shipped"}
    assert calls[1].error.code == ErrorCode.TOOL_REFUSED and "allowlist" in calls[1].error.message
    assert calls[2].error is not None  # invalid arguments are reported, not executed
    assert executed == ["order_status:A-17"]
    # the model saw the refusal and the result
    second = model.requests[1]
    tool_messages = [m.content for m in second.messages or [] if m.role == "tool"]
    assert any("not on the allowlist" in c for c in tool_messages) and any("shipped" in c for c in tool_messages)
    assert [t.name for t in model.requests[0].tools or []] == ["order_status"]  # only allowed tools are offered
    assert result.results["s1"].items[0].output.label == "positive"  # type: ignore[union-attr]
    assert [u.purpose for u in result.usage] == ["tool", "tool", "agent", "synthesize"]


async def test_tools_are_skipped_for_models_without_tool_calling() -> None:
    model = FakeModel(['{"label":"negative","confidence":0.7}'])  # base completion model
    agent = SENTIMENT.with_tools(order_status)
    run = await agent.run(moa.RunContext.create(models=moa.Models(moa.Settings(escalate=False), slm=model)), SENTIMENT.make_input("bad"))
    assert run.ok and run.tool_calls == [] and len(model.requests) == 1


async def test_agent_as_langchain_tool_has_typed_args() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    ctx = moa.RunContext.create(models=moa.Models(moa.Settings(escalate=False), slm=model))
    lc_tool = moa.as_langchain_tool(SENTIMENT, ctx)
    assert lc_tool.name == "sentiment"
    assert set(lc_tool.args) >= {"text", "labels"}
    out = await lc_tool.ainvoke({"text": "great", "labels": ["positive", "negative"]})
    assert out == {"label": "positive", "confidence": 0.9}


def test_tool_needs_annotations() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(UserError):
        moa.tool(untyped)


def test_tool_schema_from_signature() -> None:
    spec = order_status.spec()
    assert spec.parameters["required"] == ["order_id"]
    assert spec.description == "Shipping status of an order."
