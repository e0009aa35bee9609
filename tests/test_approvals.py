"""Human in the loop: approvals (subtask, llm escalation, tools, planner, synthesizer) and the
hand-off to a person — fake models, real LangGraph interrupts and real SQLite checkpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest

import moa
from moa.errors import ErrorCode, UserError
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeEmbedder, FakeModel, prompt_of, unreachable
from moa.workflow.catalog import builtin_agents
from moa.workflow.index import open_index

GOOD = '{"label":"positive","confidence":0.9}'
PLAN = {
    "subtasks": [
        {"id": "a", "agent": "sentiment", "approve": True},
        {"id": "b", "agent": "sentiment"},
        {"id": "c", "agent": "sentiment", "depends_on": ["a", "b"]},
    ]
}
ITEMS = ["the room was lovely", "the staff were rude"]
ONE = {"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": ["positive", "negative"]}}]}


def sentiment(label: str, confidence: float) -> str:
    return json.dumps({"label": label, "confidence": confidence})


def item_of(request: GenerateRequest) -> str:
    return prompt_of(request).rsplit("Text:", 1)[-1]


def weak_on(word: str) -> FakeModel:
    """A base model, unsure (0.4) about items containing ``word``, sure about the rest."""
    return FakeModel(lambda r: sentiment("positive", 0.4 if word in item_of(r) else 0.95))


def settings(**kw: Any) -> moa.Settings:
    return moa.load_settings(confidence="self", **kw)


async def _row(run_id: str) -> Any:
    async with open_index(moa.load_settings()) as index:
        return await index.get(run_id)


# --- a subtask that waits before it starts -----------------------------------------------


async def test_a_subtask_waits_for_approval_and_runs_once_approved() -> None:
    model = FakeModel([GOOD])
    result = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)

    assert result.status == "waiting" and result.exit_code == 4
    assert [(a.id, a.kind, a.rule) for a in result.pending] == [("a", "subtask", "plan: approve")]
    assert {sid: r.status for sid, r in result.results.items()} == {"a": "waiting", "b": "ok"}  # c waits for a
    assert len(model.requests) == 2  # only b's items ran
    row = await _row(result.run_id)
    assert row.status == "waiting" and [a.id for a in row.pending] == ["a"]
    assert [a.id for a in await moa.apending(result.run_id)] == ["a"]

    done = await moa.aresume(result.run_id, approve=["a"], slm=model, llm=model)

    assert done.status == "ok" and done.pending == [] and done.reused == ["b"]
    assert {sid: r.status for sid, r in done.results.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    assert len(model.requests) == 6 and done.summary.calls == 6  # b was not run again
    row = await _row(result.run_id)
    assert row.status == "ok" and row.pending == [] and row.attempts == 2
    assert await moa.apending(result.run_id) == []


async def test_a_denied_subtask_is_recorded_and_its_dependents_are_skipped_with_the_reason() -> None:
    model = FakeModel([GOOD])
    waiting = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)

    result = await moa.aresume(waiting.run_id, deny=True, slm=model, llm=model)

    assert result.status == "partial" and result.exit_code == 3
    a, c = result.results["a"], result.results["c"]
    assert a.status == "denied" and a.items == [] and "a person refused to start a" in (a.reason or "")
    assert c.status == "skipped" and "a person denied a" in (c.reason or "")
    assert result.results["b"].status == "ok"
    assert len(model.requests) == 2  # neither a nor c ever reached the model
    assert {e.subtask: e.code for e in result.errors} == {"a": "approval_denied", "c": "subtask_failed"}


async def test_approval_rules_in_settings_and_on_agents() -> None:
    model = FakeModel([GOOD])
    plan = {"subtasks": [{"id": "x", "agent": "sentiment"}, {"id": "y", "agent": "extraction"}]}
    by_rule = await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model, settings=moa.load_settings(approve=["agent:extraction"]))
    assert [(a.id, a.rule) for a in by_rule.pending] == [("y", "agent:extraction")]
    by_id = await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model, settings=moa.load_settings(approve=["subtask:x"]))
    assert [(a.id, a.rule) for a in by_id.pending] == [("x", "subtask:x")]
    flagged = builtin_agents()["sentiment"].with_approval()
    in_code = await moa.arun("t", input=ITEMS, plan=plan, agents=[flagged], slm=model, llm=model)
    assert [(a.id, a.rule) for a in in_code.pending] == [("x", "agent sentiment: approve")]


async def test_answers_may_come_one_at_a_time() -> None:
    model = FakeModel([GOOD])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}, {"id": "d", "agent": "sentiment", "approve": True}]}
    first = await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model)
    assert [a.id for a in first.pending] == ["a", "d"] and model.requests == []

    second = await moa.aresume(first.run_id, approve=["a"], slm=model, llm=model)
    assert second.status == "waiting" and [a.id for a in second.pending] == ["d"]
    assert second.results["a"].status == "ok" and len(model.requests) == 2

    third = await moa.aresume(first.run_id, deny=["d"], slm=model, llm=model)
    assert third.status == "partial" and third.results["d"].status == "denied"
    assert third.results["a"].status == "ok" and len(model.requests) == 2  # a was not run again


# --- an escalation to the llm step ---------------------------------------------------------


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_tier_llm_makes_escalations_wait_and_approved_ones_climb() -> None:
    slm = weak_on("unclear")
    llm = FakeModel([sentiment("negative", 0.97)], spec="fake:big")
    s = settings(approve=["tier:llm"])
    waiting = await moa.arun("t", input=["clear praise", "unclear words", "more unclear words"], plan=ONE, slm=slm, llm=llm, settings=s)

    assert waiting.status == "waiting" and llm.requests == []
    assert [(a.id, a.kind, a.step, a.item) for a in waiting.pending] == [
        ("s/2/llm", "step", "llm", "unclear words"),
        ("s/3/llm", "step", "llm", "more unclear words"),
    ]
    assert "escalate to llm" in waiting.pending[0].reason and "low_confidence" in waiting.pending[0].reason
    items = waiting.results["s"].items
    assert items[0].output is not None and items[0].waiting is None
    assert [i.waiting for i in items[1:]] == ["s/2/llm", "s/3/llm"]
    slm_calls = len(slm.requests)

    result = await moa.aresume(waiting.run_id, approve=["s/2/llm"], deny=["s/3/llm"], slm=slm, llm=llm, settings=s)

    assert len(slm.requests) == slm_calls  # the cheap step is not run again
    clear, approved, denied = result.results["s"].items
    assert clear.answered_by == "slm" and clear.escalations == []
    assert approved.answered_by == "llm" and approved.output.label == "negative"  # type: ignore[union-attr]
    assert [(e.from_step, e.to_step) for e in approved.escalations] == [("slm", "llm")]
    assert [a.step for a in approved.attempts] == ["slm", "llm"]
    assert denied.answered_by == "slm" and denied.unverified == "denied: llm escalation" and denied.escalations == []
    assert len(llm.requests) == 1
    assert result.status == "ok" and result.escalations.unverified == {"denied": 1}
    assert result.summary.per_tier["slm"].calls == 3 and result.summary.per_tier["llm"].calls == 1


async def test_an_item_routed_to_the_llm_step_falls_back_to_the_usual_way_when_denied() -> None:
    slm = FakeModel([sentiment("positive", 0.95)])
    llm = FakeModel([sentiment("negative", 0.97)], spec="fake:big")
    s = settings(approve=["tier:llm"], route_long_chars=20)
    waiting = await moa.arun("t", input=["a rather long review of the hotel"], plan=ONE, slm=slm, llm=llm, settings=s)
    (approval,) = waiting.pending
    assert approval.id == "s/1/llm" and "long input" in approval.reason and slm.requests == []
    result = await moa.aresume(waiting.run_id, deny=True, slm=slm, llm=llm, settings=s)
    item = result.results["s"].items[0]
    assert item.answered_by == "slm" and item.unverified is None and llm.requests == []


# --- tools -------------------------------------------------------------------------------

executed: list[str] = []


@moa.tool
def order_status(order_id: str) -> str:
    """Shipping status of an order."""
    executed.append(f"order_status:{order_id}")
    return "shipped"


@moa.tool(side_effects=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    executed.append(f"refund:{order_id}")
    return "refunded"


def tool_user(spec: str = "fake:") -> FakeModel:
    """A chat model that asks for both tools, then answers."""

    def handler(request: GenerateRequest) -> Generation:
        if request.tools:
            if any(m.role == "tool" for m in request.messages or []):
                return Generation(text="I know enough.")
            calls = [ToolCall(id="c1", name="order_status", arguments={"order_id": "A-17"}), ToolCall(id="c2", name="refund", arguments={"order_id": "A-17"})]
            return Generation(text="", tool_calls=calls)
        return Generation(text=GOOD)

    return FakeModel(handler, chat=True, tools=True, spec=spec)


@pytest.mark.parametrize("approved", [True, False])
async def test_a_tool_with_side_effects_waits_and_is_run_or_refused(approved: bool) -> None:
    executed.clear()
    model = tool_user()
    agent = builtin_agents()["sentiment"].with_tools(order_status, refund)
    s = moa.load_settings(escalate=False, approve=["tools:side_effects"])
    plan = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}
    waiting = await moa.arun("t", input=["Where is A-17? refund it"], plan=plan, agents=[agent], slm=model, llm=FakeModel(chat=True), settings=s)

    (approval,) = waiting.pending
    assert (approval.id, approval.kind, approval.tool, approval.arguments, approval.rule) == (
        "s1/1/tool:refund", "tool", "refund", {"order_id": "A-17"}, "tools:side_effects",
    )  # fmt: skip
    assert executed == []  # no call of that round ran before the decision

    answer = {"approve": True} if approved else {"deny": True}
    result = await moa.aresume(waiting.run_id, agents=[agent], slm=model, llm=FakeModel(chat=True), settings=s, **answer)

    assert result.status == "ok" and result.results["s1"].items[0].output.label == "positive"  # type: ignore[union-attr]
    calls = {c.name: c for c in result.results["s1"].tool_calls}
    if approved:
        assert executed == ["order_status:A-17", "refund:A-17"] and calls["refund"].allowed
    else:
        assert executed == ["order_status:A-17"] and not calls["refund"].allowed
        assert calls["refund"].error.code == ErrorCode.TOOL_REFUSED and "a person denied" in calls["refund"].error.message


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_an_approved_escalation_can_wait_again_for_a_tool_of_the_llm_step() -> None:
    executed.clear()
    slm = FakeModel([sentiment("positive", 0.3)])
    llm = tool_user("fake:big")
    agent = builtin_agents()["sentiment"].with_tools(order_status, refund)
    s = settings(approve=["tier:llm", "tools:side_effects"])
    kw: dict[str, Any] = {"agents": [agent], "slm": slm, "llm": llm, "settings": s}
    first = await moa.arun("t", input=["refund A-17"], plan=ONE, **kw)
    assert [a.id for a in first.pending] == ["s/1/llm"]
    second = await moa.aresume(first.run_id, approve=True, **kw)
    assert [a.id for a in second.pending] == ["s/1/tool:refund"] and executed == []
    third = await moa.aresume(first.run_id, approve=["s/1/tool:refund"], **kw)
    assert [a.id for a in third.pending] == ["synthesize"]  # the llm is a chat model: writing the answer is an llm call too
    item = third.results["s"].items[0]
    assert item.answered_by == "llm" and [a.step for a in item.attempts] == ["slm", "llm"]
    assert executed == ["order_status:A-17", "refund:A-17"]
    assert len(slm.requests) == 1  # the cheap step ran once across the three pauses
    done = await moa.aresume(first.run_id, deny=True, **kw)
    assert done.status == "ok" and done.answer is None and done.results["s"].items[0].answered_by == "llm"


# --- the planner and the synthesizer (llm tier) ---------------------------------------------


async def test_tier_llm_asks_before_the_synthesizer() -> None:
    slm = FakeModel([GOOD])
    llm = FakeModel(lambda r: "All positive.", chat=True, spec="fake:big")
    s = settings(approve=["tier:llm"])
    plan = {"subtasks": [{"id": "s", "agent": "sentiment"}]}
    waiting = await moa.arun("t", input=ITEMS, plan=plan, slm=slm, llm=llm, settings=s)
    assert [(a.id, a.kind) for a in waiting.pending] == [("synthesize", "synthesize")] and llm.requests == []
    assert waiting.results["s"].status == "ok"  # finished work shows while the run waits
    denied = await moa.aresume(waiting.run_id, deny=True, slm=slm, llm=llm, settings=s)
    assert denied.status == "ok" and denied.answer is None and "a person denied" in (denied.synthesizer or "")
    approved = await moa.arun("t", input=ITEMS, plan=plan, slm=slm, llm=llm, settings=s)
    approved = await moa.aresume(approved.run_id, approve=True, slm=slm, llm=llm, settings=s)
    assert approved.answer == "All positive."


async def test_tier_llm_asks_before_the_llm_planner_and_a_denial_routes_instead() -> None:
    llm = FakeModel(lambda r: json.dumps(ONE), chat=True, spec="fake:big")
    slm = FakeModel([GOOD])
    s = settings(approve=["tier:llm"], planner="llm")
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=slm, llm=llm), embedder=FakeEmbedder())
    waiting = await moa.arun("give the sentiment of each review", input=ITEMS, context=ctx)
    assert [a.id for a in waiting.pending] == ["plan"] and waiting.plan is None and llm.requests == []
    result = await moa.aresume(waiting.run_id, deny=["plan"], context=ctx)
    assert result.planner is not None and result.planner.name == "router" and "denied" in result.planner.reason
    assert all("You turn a task into a plan" not in prompt_of(r) for r in llm.requests)
    await ctx.aclose()


# --- answers that do not fit -----------------------------------------------------------------


async def test_answering_a_step_that_no_longer_waits_is_a_clear_error() -> None:
    model = FakeModel([GOOD])
    waiting = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)
    with pytest.raises(UserError) as info:
        await moa.aresume(waiting.run_id, approve=["b"], slm=model, llm=model)
    assert info.value.code == ErrorCode.NOT_WAITING and "b is not waiting" in info.value.message and "waiting: a" in info.value.message
    row = await _row(waiting.run_id)
    assert row.status == "waiting" and row.attempts == 1  # a wrong answer leaves the run as it was

    with pytest.raises(UserError) as info:
        await moa.aresume(waiting.run_id, slm=model, llm=model)
    assert info.value.code == ErrorCode.AWAITING_APPROVAL and f"moa resume {waiting.run_id} --approve" in info.value.message

    await moa.aresume(waiting.run_id, approve=["a"], slm=model, llm=model)
    with pytest.raises(UserError) as info:  # answered already: a no longer waits
        await moa.aresume(waiting.run_id, approve=["a"], slm=model, llm=model)
    assert info.value.code == ErrorCode.NOT_WAITING and "not waiting for approvals (status ok)" in info.value.message


@pytest.mark.parametrize(
    ("answer", "needle"),
    [({"approve": "a"}, "not the string"), ({"approve": ["a"], "deny": ["a"]}, "both approved and denied"), ({"approve": True, "deny": True}, "contradict")],
)
async def test_malformed_answers_are_refused(answer: dict[str, Any], needle: str) -> None:
    model = FakeModel([GOOD])
    waiting = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)
    with pytest.raises(UserError) as info:
        await moa.aresume(waiting.run_id, slm=model, llm=model, **answer)
    assert info.value.code == ErrorCode.INVALID_INPUT and needle in info.value.message


async def test_pending_of_an_unknown_run() -> None:
    with pytest.raises(UserError) as info:
        await moa.apending("nope")
    assert info.value.code == ErrorCode.UNKNOWN_RUN


def test_bad_approval_rules_and_approvals_without_durability_are_refused() -> None:
    with pytest.raises(UserError) as info:
        moa.load_settings(approve=["llm"])
    assert info.value.code == ErrorCode.BAD_CONFIG and "tier:llm" in info.value.message
    with pytest.raises(UserError) as info:
        moa.run("t", input=ITEMS, plan=ONE, slm=FakeModel([GOOD]), settings=moa.load_settings(approve=["tier:llm"], durable=False))
    assert info.value.code == ErrorCode.BAD_CONFIG and "durable" in info.value.message
    with pytest.raises(UserError) as info:  # a flag in the plan is only found while running
        moa.run("t", input=ITEMS, plan=PLAN, slm=FakeModel([GOOD]), settings=moa.load_settings(durable=False))
    assert info.value.code == ErrorCode.BAD_CONFIG and "durable" in info.value.message


def test_sync_pending_and_resume() -> None:
    model = FakeModel([GOOD])
    waiting = moa.run("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)
    assert [a.id for a in moa.pending(waiting.run_id)] == ["a"]
    assert moa.resume(waiting.run_id, approve=True, slm=model, llm=model).status == "ok"


# --- the hand-off to a person ------------------------------------------------------------------


async def test_needs_human_hands_weak_answers_over_instead_of_presenting_them() -> None:
    model = weak_on("unclear")  # one model on both tiers: a weak answer has no higher step
    chat = FakeModel(lambda r: "An answer.", chat=True)
    plan = {"subtasks": [*ONE["subtasks"], {"id": "next", "agent": "sentiment", "items": "s", "depends_on": ["s"]}]}
    s = settings(on_unsure="needs_human")
    result = await moa.arun("t", input=["clear praise", "unclear words"], plan=plan, slm=model, llm=model, settings=s)

    assert result.status == "needs_human" and result.exit_code == 5
    clear, unsure = result.results["s"].items
    assert clear.output is not None and clear.handoff is None
    assert unsure.output is None and unsure.handoff == "unsure (low_confidence): no higher step"
    (handoff,) = result.handoff
    assert (handoff.subtask, handoff.agent, handoff.item) == ("s", "sentiment", "unclear words")
    assert handoff.attempts[0].output.confidence == 0.4  # type: ignore[union-attr]  # the weak answer, kept for the person
    assert result.results["next"].items[0].item == "clear praise" and len(result.results["next"].items) == 1  # not passed on
    assert "1 of 2 items need a person" in (result.results["s"].reason or "")
    with_chat = await moa.arun("t", input=["unclear words"], plan=ONE, slm=model, llm=chat, settings=s.model_copy(update={"escalate": False}))
    assert with_chat.answer is None and "need a person" in (with_chat.synthesizer or "")
    assert not any(r.messages and "Subtask results" in prompt_of(r) for r in chat.requests)


async def test_needs_human_also_takes_items_whose_every_step_failed() -> None:
    slm = FakeModel(["not json"])
    result = await moa.arun("t", input=["x"], plan=ONE, slm=slm, llm=unreachable(), settings=settings(on_unsure="needs_human"))
    assert result.status == "needs_human"
    (handoff,) = result.handoff
    assert handoff.reason.startswith("no step gave an answer: [model_unreachable]")
    assert [a.step for a in handoff.attempts] == ["slm", "llm"] and handoff.attempts[0].error.code == ErrorCode.INVALID_OUTPUT  # type: ignore[union-attr]


async def test_keep_is_the_default() -> None:
    model = weak_on("unclear")
    result = await moa.arun("t", input=["unclear words"], plan=ONE, slm=model, llm=model, settings=settings())
    assert result.status == "ok" and result.handoff == [] and result.results["s"].items[0].unverified == "no higher step"


@pytest.mark.real  # escalated answers go to the example store: Chroma on disk
async def test_copies_of_an_item_share_one_approval() -> None:
    slm = weak_on("unclear")
    llm = FakeModel([sentiment("negative", 0.97)], spec="fake:big")
    s = settings(approve=["tier:llm"])
    waiting = await moa.arun("t", input=["unclear", "fine", "unclear"], plan=ONE, slm=slm, llm=llm, settings=s)
    assert [a.id for a in waiting.pending] == ["s/1/llm"]
    assert [i.waiting for i in waiting.results["s"].items] == ["s/1/llm", None, "s/1/llm"]
    result = await moa.aresume(waiting.run_id, approve=True, slm=slm, llm=llm, settings=s)
    assert [i.answered_by for i in result.results["s"].items] == ["llm", "slm", "llm"] and len(llm.requests) == 1


async def test_an_llm_tier_agent_denied_its_first_step_fails_the_item_with_the_reason() -> None:
    base = type(builtin_agents()["sentiment"])

    class Careful(base):  # type: ignore[valid-type,misc]
        name = "careful"
        tier = "llm"

    llm = FakeModel([GOOD], spec="fake:big")
    s = settings(approve=["tier:llm"])
    plan = {"subtasks": [{"id": "k", "agent": "careful"}]}
    waiting = await moa.arun("t", input=["x"], plan=plan, agents=[Careful()], slm=FakeModel([GOOD]), llm=llm, settings=s)
    assert [(a.id, a.reason) for a in waiting.pending] == [("k/1/llm", "run this item on llm")]
    result = await moa.aresume(waiting.run_id, deny=True, agents=[Careful()], slm=FakeModel([GOOD]), llm=llm, settings=s)
    error = result.results["k"].items[0].error
    assert error is not None and error.code == ErrorCode.APPROVAL_DENIED and "tier:llm" in error.message
    assert result.status == "failed" and llm.requests == []


async def test_a_run_index_from_before_approvals_gets_its_new_column() -> None:
    import sqlite3

    from moa.workflow.index import state_path

    path = state_path(moa.load_settings())
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE moa_runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, graph TEXT NOT NULL, status TEXT NOT NULL, "
            "started REAL NOT NULL, seconds REAL NOT NULL DEFAULT 0, items INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 1, "
            "pid INTEGER, plan TEXT, error TEXT)"
        )
        conn.execute("INSERT INTO moa_runs VALUES ('old', 't', 'plan_execute', 'ok', 1.0, 2.0, 1, 1, NULL, NULL, NULL)")
    assert await moa.apending("old") == []
    model = FakeModel([GOOD])
    waiting = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)
    assert [a.id for a in await moa.apending(waiting.run_id)] == ["a"]


async def test_a_pause_is_logged_and_the_report_marks_waiting_and_handed_over_items() -> None:
    from structlog.testing import capture_logs

    from moa.workflow.report import item_table

    slm = weak_on("unclear")
    llm = FakeModel([sentiment("negative", 0.97)], spec="fake:big")
    with capture_logs() as logs:
        waiting = await moa.arun("t", input=["fine", "unclear"], plan=ONE, slm=slm, llm=llm, settings=settings(approve=["tier:llm"]))
    paused = [e for e in logs if e["event"] == "run_paused"]
    assert [e["approvals"] for e in paused] == [["s/2/llm"]] and paused[0]["run_id"] == waiting.run_id
    assert any(e["event"] == "awaiting_approval" and e["step"] == "llm" and e["subtask"] == "s" for e in logs)
    _, rows = item_table(waiting)
    assert rows[1] == ["unclear", "waiting (s/2/llm)"] and rows[0][1].startswith("positive")
    handed = await moa.arun("t", input=["unclear"], plan=ONE, slm=slm, llm=slm, settings=settings(on_unsure="needs_human"))
    assert item_table(handed)[1] == [["unclear", "needs a person"]]


async def test_a_crash_after_the_answers_leaves_the_approvals_waiting_to_be_answered_again() -> None:
    armed = {"on": False}

    def answer(request: GenerateRequest) -> str:
        if armed["on"] and "lovely" in item_of(request):
            raise RuntimeError("simulated crash")
        return GOOD

    model = FakeModel(answer)
    waiting = await moa.arun("rate", input=ITEMS, plan=PLAN, slm=model, llm=model)
    armed["on"] = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.aresume(waiting.run_id, approve=["a"], slm=model, llm=model)
    row = await _row(waiting.run_id)
    assert row.status == "error" and [a.id for a in row.pending] == ["a"]  # the answer was not saved: a still waits
    assert [a.id for a in await moa.apending(waiting.run_id)] == ["a"]
    with pytest.raises(UserError) as info:
        await moa.aresume(waiting.run_id, slm=model, llm=model)
    assert info.value.code == ErrorCode.AWAITING_APPROVAL
    armed["on"] = False
    done = await moa.aresume(waiting.run_id, approve=["a"], slm=model, llm=model)
    assert done.status == "ok" and done.reused == ["b"] and (await _row(waiting.run_id)).pending == []
