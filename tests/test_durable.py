"""Durable runs on the real SQLite checkpointer, with fake models: crash, resume, bad state.

A crash is injected as an unexpected exception from the model (the run stops mid-way like a
killed process would, after the other subtasks' results were saved); a real SIGKILL of `moa run`
on the embedded model is in test_durable_real.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph

import moa
from moa.errors import ErrorCode, RunError, UserError
from moa.models.base import GenerateRequest
from moa.testing import FakeModel, prompt_of
from moa.workflow.index import open_index, state_path
from moa.workflow.nodes import plan_node
from moa.workflow.scheduler import execute
from moa.workflow.state import RunDeps, RunState
from moa.workflow.view import load_view

PLAN = {
    "subtasks": [
        {"id": "a", "agent": "sentiment"},
        {"id": "b", "agent": "sentiment"},
        {"id": "c", "agent": "sentiment", "options": {"labels": ["calm", "urgent"]}, "depends_on": ["a", "b"]},
    ]
}
ITEMS = ["the room was lovely", "the staff were rude"]


class Crashing:
    """Answers sentiment prompts; raises on subtask c's prompts (labels calm/urgent) while armed."""

    def __init__(self) -> None:
        self.armed = True

    def __call__(self, request: GenerateRequest) -> str:
        if "calm, urgent" in prompt_of(request):
            if self.armed:
                raise RuntimeError("simulated crash")
            return '{"label":"calm","confidence":0.8}'
        return '{"label":"positive","confidence":0.9}'


def _subtask_of(request: GenerateRequest) -> str:
    return "c" if "calm, urgent" in prompt_of(request) else "a|b"


async def _crash(model: FakeModel, run_id: str = "r1", **kwargs: Any) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.arun("rate the reviews", input=ITEMS, plan=PLAN, slm=model, llm=model, run_id=run_id, **kwargs)


async def test_a_crashed_run_resumes_without_redoing_finished_subtasks() -> None:
    handler = Crashing()
    model = FakeModel(handler)
    await _crash(model)
    settings = moa.load_settings()
    view = await load_view(settings, "r1")
    assert view.run.status == "error" and view.run.error is not None and view.run.error.type == "RuntimeError"
    assert {s.id: s.status for s in view.subtasks} == {"a": "ok", "b": "ok", "c": "pending"}
    saved = {s.id: s for s in view.subtasks}
    before = len(model.requests)
    handler.armed = False

    result = await moa.aresume("r1", slm=model, llm=model)

    assert result.status == "ok" and result.resumed and result.run_id == "r1"
    assert sorted(result.reused) == ["a", "b"]
    # only c's two items were sent to the model again
    assert [_subtask_of(r) for r in model.requests[before:]] == ["c", "c"]
    # results read back from the checkpoint have their agent's output type again
    output = result.results["a"].items[0].output
    assert type(output).__name__ == "Sentiment" and output.label == "positive"  # type: ignore[union-attr]
    assert result.results["c"].items[0].output.label == "calm"  # type: ignore[union-attr]
    assert result.summary.calls == 6  # a + b (from the checkpoint) + c
    after = await load_view(settings, "r1")
    assert after.run.status == "ok" and after.run.attempts == 2
    for sid in ("a", "b"):  # the saved records, not new ones
        assert after.subtasks[["a", "b"].index(sid)] == saved[sid]


async def test_a_resumed_run_keeps_the_budget_its_first_attempt_spent() -> None:
    handler = Crashing()
    model = FakeModel(handler)
    await _crash(model)  # a and b finished: 4 calls
    handler.armed = False
    before = len(model.requests)
    first = await load_view(moa.load_settings(), "r1")
    used = sum(s.prompt_tokens + s.completion_tokens for s in first.subtasks)
    assert used > 0
    # a budget the first attempt already used up: nothing more runs
    result = await moa.aresume("r1", slm=model, llm=model, settings=moa.load_settings(budget_tokens=used))
    assert result.status == "stopped" and "token budget" in (result.stopped or "")
    assert len(model.requests) == before
    assert all(i.error and i.error.code == ErrorCode.BUDGET_EXCEEDED for i in result.results["c"].items)


async def test_resume_of_an_unknown_run() -> None:
    with pytest.raises(UserError) as info:
        await moa.aresume("nope", slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.UNKNOWN_RUN and "moa runs list" in info.value.message


async def test_resume_of_a_finished_run() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    result = await moa.arun("t", input=ITEMS, plan={"subtasks": [{"id": "a", "agent": "sentiment"}]}, slm=model, llm=model)
    with pytest.raises(UserError) as info:
        await moa.aresume(result.run_id, slm=model, llm=model)
    assert info.value.code == ErrorCode.RUN_FINISHED and f"moa runs show {result.run_id}" in info.value.message


def test_sync_resume_refuses_a_running_loop() -> None:
    import asyncio

    async def inside() -> None:
        moa.resume("r1")

    with pytest.raises(UserError) as info:
        asyncio.run(inside())
    assert info.value.code == ErrorCode.NESTED_EVENT_LOOP and "moa.aresume" in info.value.message


async def test_a_run_id_cannot_be_used_twice() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
    await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model, run_id="same")
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model, run_id="same")
    assert info.value.code == ErrorCode.RUN_EXISTS and "moa resume same" in info.value.message


async def test_a_reused_context_gives_each_run_its_own_id() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    ctx = moa.RunContext.create(moa.load_settings(), models=moa.Models(moa.load_settings(), slm=model, llm=model))
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
    first = await moa.arun("t", input=ITEMS, plan=plan, context=ctx)
    second = await moa.arun("t", input=ITEMS, plan=plan, context=ctx)
    assert first.run_id != second.run_id
    assert second.reused == [] and second.summary.calls == 2


async def test_a_reused_context_gives_each_run_its_own_budget_and_journal() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
    probe = await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model)
    settings = moa.load_settings(budget_tokens=probe.summary.prompt_tokens + probe.summary.completion_tokens + 1)  # room for one run
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=model, llm=model))
    first = await moa.arun("t", input=ITEMS, plan=plan, context=ctx)
    second = await moa.arun("t", input=ITEMS, plan=plan, context=ctx)
    assert first.status == second.status == "ok"  # the first run's tokens are not charged to the second
    assert ctx.journal == [] and ctx.budget.tokens == 0  # the caller's context is left as it was


async def _fixed_plan(state: RunState, runtime: Any) -> dict[str, Any]:
    return {"plan": moa.Plan.model_validate(PLAN)}


def _custom_graph(plan: Any = _fixed_plan, name: str = "custom_triage") -> Any:
    """plan → execute, with a plan node of the test's own."""
    graph = StateGraph(RunState, context_schema=RunDeps)
    graph.add_node("plan", plan)
    graph.add_node("execute", execute)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "execute")
    graph.add_edge("execute", END)
    return graph.compile(name=name)


async def test_a_custom_graph_run_resumes_when_given_its_graph() -> None:
    handler = Crashing()
    model = FakeModel(handler)
    with pytest.raises(RuntimeError):
        await moa.arun("t", input=ITEMS, graph=_custom_graph(), slm=model, llm=model, run_id="g1")
    handler.armed = False
    with pytest.raises(UserError) as info:
        await moa.aresume("g1", slm=model, llm=model)
    assert info.value.code == ErrorCode.UNKNOWN_GRAPH and "custom_triage" in info.value.message
    result = await moa.aresume("g1", graph=_custom_graph(), slm=model, llm=model)
    assert result.status == "ok" and sorted(result.reused) == ["a", "b"] and result.graph == "custom_triage"


async def test_a_run_that_stopped_before_planning_plans_again_on_resume() -> None:
    calls = {"n": 0}

    async def flaky_plan(state: RunState, runtime: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("planner crashed")
        return await plan_node(state, runtime)

    compiled = _custom_graph(flaky_plan, "flaky")
    handler = Crashing()
    handler.armed = False
    model = FakeModel(handler)
    with pytest.raises(RuntimeError):
        await moa.arun("t", input=ITEMS, graph=compiled, plan=PLAN, slm=model, llm=model, run_id="p1")
    result = await moa.aresume("p1", graph=compiled, slm=model, llm=model)  # the given plan was recorded
    assert result.status == "ok" and result.reused == [] and set(result.results) == {"a", "b", "c"}


async def test_durable_false_records_nothing() -> None:
    settings = moa.load_settings(durable=False)
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    await moa.arun("t", input=ITEMS, plan={"subtasks": [{"id": "a", "agent": "sentiment"}]}, slm=model, llm=model, settings=settings)
    assert not state_path(settings).exists()
    with pytest.raises(UserError) as info:
        await moa.aresume("x", settings=settings)
    assert info.value.code == ErrorCode.BAD_CONFIG


async def test_a_locked_state_database_is_a_clear_error_after_the_timeout() -> None:
    settings = moa.load_settings(state_lock_timeout=0.1)
    async with open_index(settings):  # creates the database
        pass
    holder = sqlite3.connect(state_path(settings))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RunError) as info:
            await moa.arun("t", input=ITEMS, plan=PLAN, slm=FakeModel(), llm=FakeModel(), settings=settings)
    finally:
        holder.rollback()
        holder.close()
    assert info.value.code == ErrorCode.STATE_LOCKED
    assert str(state_path(settings)) in info.value.message and "MOA_STATE_LOCK_TIMEOUT" in info.value.message


@pytest.mark.parametrize("content", [b"this is not a database, just text\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
async def test_a_corrupt_state_database_is_a_clear_error(content: bytes) -> None:
    settings = moa.load_settings()
    path = state_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    model = FakeModel()
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=ITEMS, plan=PLAN, slm=model, llm=model, settings=settings)
    assert info.value.code == ErrorCode.STATE_CORRUPT
    assert f"mv {path} {path}.bad" in info.value.message
    assert model.requests == []


async def test_a_state_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    settings = moa.load_settings(state_dir=blocker / "state")
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=ITEMS, plan=PLAN, slm=FakeModel(), llm=FakeModel(), settings=settings)
    assert info.value.code == ErrorCode.STATE_UNAVAILABLE and "MOA_STATE_DIR" in info.value.message


async def test_a_postgres_url_without_a_server_is_a_clear_error(free_port: int) -> None:
    pytest.importorskip("langgraph.checkpoint.postgres")
    settings = moa.load_settings(checkpoint_url=f"postgresql://moa@127.0.0.1:{free_port}/moa?connect_timeout=2")
    with pytest.raises(UserError) as info:
        await moa.arun("t", input=ITEMS, plan=PLAN, slm=FakeModel(), llm=FakeModel(), settings=settings)
    assert info.value.code == ErrorCode.BAD_CONFIG and "MOA_CHECKPOINT_URL" in info.value.message


async def test_the_run_index_lists_runs_newest_first() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
    first = await moa.arun("first task", input=ITEMS, plan=plan, slm=model, llm=model)
    second = await moa.arun("second task", input=ITEMS[:1], plan=plan, slm=model, llm=model)
    async with open_index(moa.load_settings()) as index:
        records = await index.list()
    assert [(r.run_id, r.task, r.status, r.items, r.graph) for r in records] == [
        (second.run_id, "second task", "ok", 1, "plan_execute"),
        (first.run_id, "first task", "ok", 2, "plan_execute"),
    ]
    assert json.loads(records[0].plan or "{}") == plan


async def _set_row(run_id: str, **columns: Any) -> None:
    async with open_index(moa.load_settings()) as index:
        sets = ", ".join(f"{k} = ?" for k in columns)
        await index.conn.execute(f"UPDATE moa_runs SET {sets} WHERE run_id = ?", (*columns.values(), run_id))
        await index.conn.commit()


async def test_resume_of_a_run_whose_process_is_alive_is_refused() -> None:
    import os

    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    result = await moa.arun("t", input=ITEMS, plan={"subtasks": [{"id": "a", "agent": "sentiment"}]}, slm=model, llm=model)
    await _set_row(result.run_id, status="running", pid=os.getpid())
    with pytest.raises(UserError) as info:
        await moa.aresume(result.run_id, slm=model, llm=model)
    assert info.value.code == ErrorCode.RUN_ACTIVE and str(os.getpid()) in info.value.message


async def test_a_run_killed_after_its_last_checkpoint_resumes_from_the_saved_state() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}]}
    first = await moa.arun("t", input=ITEMS, plan=plan, slm=model, llm=model)
    await _set_row(first.run_id, status="running", pid=None)  # as if killed before the index was updated
    calls = len(model.requests)
    result = await moa.aresume(first.run_id, slm=model, llm=model)
    assert result.status == "ok" and result.results["a"].items[0].output.label == "positive"  # type: ignore[union-attr]
    assert len(model.requests) == calls


async def test_checkpoints_can_go_to_another_sqlite_file(tmp_path: Path) -> None:
    settings = moa.load_settings(checkpoint_url=str(tmp_path / "elsewhere.sqlite"))
    handler = Crashing()
    model = FakeModel(handler)
    await _crash(model, run_id="x1", settings=settings)
    handler.armed = False
    result = await moa.aresume("x1", slm=model, llm=model, settings=settings)
    assert sorted(result.reused) == ["a", "b"]
    with sqlite3.connect(tmp_path / "elsewhere.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'x1'").fetchone()[0] > 0
    with sqlite3.connect(state_path(settings)) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'checkpoints'").fetchone() is None


@pytest.mark.parametrize(("state_sync", "level"), [("normal", 1), ("full", 2)])
async def test_state_databases_are_wal_with_the_chosen_sync_level(state_sync: str, level: int) -> None:
    from moa.workflow.durable import open_checkpointer

    settings = moa.load_settings(state_sync=state_sync)
    async with open_index(settings) as index, open_checkpointer(settings) as saver:
        for conn in (index.conn, saver.conn):  # type: ignore[attr-defined]
            async with conn.execute("PRAGMA synchronous") as cursor:
                assert (await cursor.fetchone())[0] == level
            async with conn.execute("PRAGMA journal_mode") as cursor:
                assert (await cursor.fetchone())[0] == "wal"


def test_an_unknown_state_sync_is_a_clear_error() -> None:
    with pytest.raises(UserError) as info:
        moa.load_settings(state_sync="off")
    assert info.value.code == ErrorCode.BAD_CONFIG and "state_sync" in info.value.message
