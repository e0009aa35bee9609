"""A run's options (approval rules, budgets, cascade, thresholds, cache, memory folder, output file)
are recorded with it and restored on resume; a resume may only tighten them.

Fake models, real LangGraph checkpoints and a real SQLite run index. A crash is an unexpected
exception from the model (the run stops like a killed one, its row says ``error``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.tiers import fake_tiers
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.models.base import GenerateRequest
from moa.testing import FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents
from moa.workflow.index import open_index
from moa.workflow.options import RunOptions, restore
from moa.workflow.view import load_view

GOOD = '{"label":"positive","confidence":0.9}'
ITEMS = ["the room was lovely", "the staff were rude"]
runner = CliRunner()


class Careful(type(builtin_agents()["sentiment"])):  # type: ignore[misc]
    """A sentiment agent on the llm tier: each of its calls is gated by ``tier:llm``."""

    name = "careful"
    tier = "llm"


async def _row(run_id: str) -> Any:
    async with open_index(moa.load_settings()) as index:
        return await index.get(run_id)


async def _tokens(run_id: str) -> int:
    view = await load_view(moa.load_settings(), run_id)
    return sum(s.prompt_tokens + s.completion_tokens for s in view.subtasks)


async def test_a_crashed_run_resumed_without_options_still_waits_for_approval_and_keeps_its_options() -> None:
    armed = {"on": True}

    def answer(request: GenerateRequest) -> str:
        if armed["on"] and "rude" in prompt_of(request):
            raise RuntimeError("simulated crash")
        return GOOD

    slm, llm = FakeModel(answer), FakeModel([GOOD], spec="fake:big")
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "k", "agent": "careful", "depends_on": ["a"]}]}
    started = moa.load_settings(approve=["tier:llm"], budget_tokens=100_000, cascade=["slm", "llm"], threshold=0.7, cache=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await moa.arun("rate", input=ITEMS, plan=plan, agents=[Careful()], slm=slm, llm=llm, settings=started, run_id="r1")
    armed["on"] = False

    # resumed with the settings of a fresh shell: no approval rule, no budget, the default cascade
    result = await moa.aresume("r1", agents=[Careful()], slm=slm, llm=llm)

    assert result.status == "waiting" and [a.id for a in result.pending] == ["k/1/llm", "k/2/llm"]
    assert llm.requests == []  # the llm tier was not called without the approval
    row = await _row("r1")
    assert row.options.approve == ["tier:llm"] and row.options.budget_tokens == 100_000
    assert row.options.cascade == ["slm", "llm"] and row.options.threshold == 0.7 and row.options.cache is False
    assert row.tightened == []


async def test_a_paused_run_resumed_without_options_still_counts_its_budget() -> None:
    model = FakeModel([GOOD])
    plan = {"subtasks": [{"id": "b", "agent": "sentiment"}]}
    probe = await moa.arun("rate", input=ITEMS, plan=plan, slm=model, llm=model, run_id="probe")
    budget = await _tokens(probe.run_id)  # what b costs: all the budget the run below gets
    waits = {"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}, {"id": "b", "agent": "sentiment"}]}
    waiting = await moa.arun("rate", input=ITEMS, plan=waits, slm=model, llm=model, settings=moa.load_settings(budget_tokens=budget), run_id="r2")
    assert waiting.status == "waiting" and waiting.results["b"].status == "ok"
    before = len(model.requests)

    result = await moa.aresume("r2", approve=["a"], slm=model, llm=model)  # no budget given again

    assert result.status == "stopped" and "token budget" in (result.stopped or "")
    assert len(model.requests) == before  # a was not run: the budget b used up still counts
    assert all(i.error is not None and i.error.code == ErrorCode.BUDGET_EXCEEDED for i in result.results["a"].items)
    assert (await _row("r2")).stopped == result.stopped


async def test_a_resume_may_tighten_and_the_record_says_what_it_tightened() -> None:
    model = FakeModel([GOOD])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}]}
    await moa.arun("rate", input=ITEMS, plan=plan, slm=model, llm=model, settings=moa.load_settings(budget_tokens=10_000), run_id="r3")

    result = await moa.aresume("r3", approve=["a"], slm=model, llm=model, tighten={"budget_tokens": 9_000, "approve": ["tier:llm"]})

    assert result.status == "ok"
    row = await _row("r3")
    assert row.options.budget_tokens == 9_000 and row.options.approve == ["tier:llm"]
    assert [(t.option, t.before, t.after, t.attempt) for t in row.tightened] == [("approve", [], ["tier:llm"], 2), ("budget_tokens", 10_000, 9_000, 2)]


@pytest.mark.parametrize(
    ("tighten", "needle"),
    [
        ({"budget_tokens": 20_000}, "budget_tokens=10000"),
        ({"budget_cost": None}, "budget_cost=0.5"),
        ({"approve": []}, "approve=['tier:llm']"),
        ({"on_unsure": "keep"}, "on_unsure='needs_human'"),
    ],
)
async def test_loosening_on_resume_is_refused_and_changes_nothing(tighten: dict[str, Any], needle: str) -> None:
    model = FakeModel([GOOD])
    plan = {"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}]}
    started = moa.load_settings(budget_tokens=10_000, budget_cost=0.5, approve=["tier:llm"], on_unsure="needs_human")
    await moa.arun("rate", input=ITEMS, plan=plan, slm=model, llm=model, settings=started, run_id="r4")
    before = await _row("r4")

    with pytest.raises(UserError) as info:
        await moa.aresume("r4", approve=["a"], slm=model, llm=model, tighten=tighten)

    assert info.value.code == ErrorCode.RESUME_LOOSENS and needle in info.value.message and "only tighten" in info.value.message
    assert await _row("r4") == before  # still waiting, same attempt, same options


async def test_looser_settings_at_resume_time_are_ignored_and_stricter_ones_apply() -> None:
    recorded = RunOptions(approve=["tier:llm"], budget_tokens=500, budget_cost=1.0)
    loose = moa.load_settings(budget_tokens=1_000, approve=[])  # e.g. from moa.toml at resume time
    settings, _, changes = restore("r", recorded, loose)
    assert settings.budget_tokens == 500 and settings.approve == ["tier:llm"] and changes == []
    strict = moa.load_settings(budget_cost=0.25, approve=["tools:side_effects"])
    settings, _, changes = restore("r", recorded, strict, attempt=3)
    assert settings.budget_cost == 0.25 and settings.approve == ["tier:llm", "tools:side_effects"]
    assert [(c.option, c.after, c.attempt) for c in changes] == [("approve", ["tier:llm", "tools:side_effects"], 3), ("budget_cost", 0.25, 3)]


def test_a_resume_cannot_change_other_options() -> None:
    with pytest.raises(UserError) as info:
        restore("r", RunOptions(), moa.load_settings(), tighten={"cascade": ["llm"]})
    assert info.value.code == ErrorCode.INVALID_INPUT and "cannot change cascade" in info.value.message


def test_no_secret_is_recorded() -> None:
    settings = moa.load_settings(openai_api_key="sk-secret", memory_url="http://user:pw@chroma:8000")
    recorded = RunOptions.of(settings).model_dump_json()
    assert "sk-secret" not in recorded and "pw@" not in recorded


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeModel, FakeModel]]:
    """The fake models every run of the CLI gets (slm, llm); the llm tier runs the ``careful`` agent."""
    slm, llm = FakeModel([GOOD]), FakeModel([GOOD], spec="fake:big")
    fake_tiers(monkeypatch, slm, llm)
    monkeypatch.setattr("moa.workflow.catalog.builtin_agents", lambda: {**builtin_agents(), "careful": Careful()})
    yield slm, llm


def _files(tmp_path: Path) -> tuple[str, str]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "a", "agent": "sentiment", "approve": True}, {"id": "k", "agent": "careful", "depends_on": ["a"]}]}))
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("lovely room\nrude staff\n")
    return str(plan), str(reviews)


def test_cli_resume_restores_approval_budget_and_output_and_refuses_loosening(models: tuple[FakeModel, FakeModel], tmp_path: Path) -> None:
    _, llm = models
    plan, reviews = _files(tmp_path)
    out = tmp_path / "out.json"
    first = runner.invoke(
        app, ["run", "rate", "--input", reviews, "--plan", plan, "--approval", "tier:llm", "--budget-tokens", "100000", "--no-cache", "-o", str(out), "--json"]
    )
    assert first.exit_code == 4, first.output
    run_id = json.loads(first.stdout)["run_id"]
    assert json.loads(out.read_text())["status"] == "waiting"

    looser = runner.invoke(app, ["resume", run_id, "--approve", "a", "--budget-tokens", "200000"])
    assert looser.exit_code == 2 and "resume_loosens" in looser.stderr and "budget_tokens=100000" in looser.stderr

    second = runner.invoke(app, ["resume", run_id, "--approve", "a", "--budget-tokens", "90000", "--json"])
    assert second.exit_code == 4, second.output  # k's llm calls still wait for a person
    assert [p["id"] for p in json.loads(second.stdout)["pending"]] == ["k/1/llm", "k/2/llm"] and llm.requests == []
    assert json.loads(out.read_text())["pending"][0]["id"] == "k/1/llm"  # the recorded -o is written again

    shown = runner.invoke(app, ["runs", "show", run_id])
    assert "approve tier:llm" in shown.stdout and "budget_tokens 90000" in shown.stdout and "cache False" in shown.stdout
    assert "Tightened by attempt 2: budget_tokens 100000 -> 90000" in shown.stdout
    view = json.loads(runner.invoke(app, ["runs", "show", run_id, "--json"]).stdout)
    assert view["run"]["options"]["budget_tokens"] == 90000 and view["run"]["tightened"][0]["option"] == "budget_tokens"

    done = runner.invoke(app, ["resume", run_id, "--approve", "all", "--json"])
    assert done.exit_code == 0, done.output
    assert len(llm.requests) == 2 and json.loads(out.read_text())["status"] == "ok"


def test_cli_resume_refuses_options_it_cannot_change(models: tuple[FakeModel, FakeModel], tmp_path: Path) -> None:
    plan, reviews = _files(tmp_path)
    run_id = json.loads(runner.invoke(app, ["run", "rate", "--input", reviews, "--plan", plan, "--json"]).stdout)["run_id"]
    result = runner.invoke(app, ["resume", run_id, "--cascade", "llm"])
    assert result.exit_code == 2 and "No such option" in result.output
