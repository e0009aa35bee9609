"""The example store: provenance of what it keeps, listing and removing it, and switching it off."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moa
from moa.agent.context import RunContext
from moa.agent.learn import task_for
from moa.cli.main import app
from moa.models.base import GenerateRequest
from moa.testing import FakeEmbedder, FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents

PLAN = {"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": ["positive", "negative"]}}]}
KEY = task_for(builtin_agents()["sentiment"], {"labels": ["positive", "negative"]}).key


def sentiment(label: str, confidence: float) -> str:
    return json.dumps({"label": label, "confidence": confidence})


def item_of(request: GenerateRequest) -> str:
    return prompt_of(request).rsplit("Text:", 1)[-1]


def models() -> tuple[FakeModel, FakeModel]:
    """An slm that is never sure, and an llm that is (every item escalates and is stored)."""
    slm = FakeModel([sentiment("positive", 0.2)])
    llm = FakeModel(lambda r: sentiment("negative" if "awful" in item_of(r) else "positive", 0.95), spec="fake:big")
    return slm, llm


def context(tmp_path: Path, **settings: object) -> tuple[RunContext, FakeModel, FakeModel]:
    s = moa.load_settings(confidence="self", state_dir=tmp_path / "state", **settings)
    slm, llm = models()
    return RunContext.create(s, models=moa.Models(s, slm=slm, llm=llm), embedder=FakeEmbedder()), slm, llm


@pytest.mark.real  # Chroma on disk
async def test_stored_examples_carry_their_provenance(tmp_path: Path) -> None:
    ctx, _, _ = context(tmp_path)
    before = time.time()
    result = await moa.arun("t", input=["an awful film", "a lovely film"], plan=PLAN, context=ctx)
    stored = await ctx.examples().stored()
    assert sorted((e.text, e.label) for e in stored) == [("a lovely film", "positive"), ("an awful film", "negative")]
    for e in stored:
        assert e.run_id == result.run_id and e.model == "fake:big" and e.agent == "sentiment" and e.key == KEY
        assert before <= e.time <= time.time() and len(e.id) == 16
    await ctx.aclose()


@pytest.mark.real  # Chroma on disk
async def test_examples_are_removed_by_id_by_run_and_all(tmp_path: Path) -> None:
    ctx, _, _ = context(tmp_path)
    first = await moa.arun("t", input=["an awful film", "a lovely film"], plan=PLAN, context=ctx)
    second = await moa.arun("t", input=["an awful dull play", "a lovely warm play", "a great book"], plan=PLAN, context=ctx)
    store = ctx.examples()
    assert len(await store.stored("sentiment")) == 5 and await store.stored("filtering") == []
    (awful,) = [e for e in await store.stored() if e.text == "an awful film"]
    assert [e.text for e in await store.remove(ids=[awful.id])] == ["an awful film"]
    assert sorted(e.text for e in await store.remove(run_id=second.run_id)) == ["a great book", "a lovely warm play", "an awful dull play"]
    assert [(e.text, e.run_id) for e in await store.stored()] == [("a lovely film", first.run_id)]
    # a removed example is no longer a demonstration in the next run
    slm = ctx.models.tier("slm")
    assert isinstance(slm, FakeModel)
    slm.requests.clear()
    await moa.arun("t", input=["an awful book"], plan=PLAN, context=ctx)
    assert "an awful film" not in prompt_of(slm.requests[0]) and "a lovely film" in prompt_of(slm.requests[0])
    assert len(await store.remove(everything=True)) == 2  # "a lovely film" and "an awful book", stored just now
    assert await store.stored() == [] and await store.count("sentiment", KEY) == 0
    await ctx.aclose()


@pytest.mark.real  # Chroma on disk
async def test_store_examples_off_stores_nothing_but_still_reads(tmp_path: Path) -> None:
    writer, _, _ = context(tmp_path)
    await writer.examples().add("sentiment", KEY, "an awful dull film", "negative", "fake:big", run_id="earlier")
    await writer.aclose()
    ctx, slm, llm = context(tmp_path, store_examples=False)
    result = await moa.arun("t", input=["an awful film", "a lovely film"], plan=PLAN, context=ctx)
    assert result.escalations.count == 2 and len(llm.requests) == 2  # answered confidently by the llm...
    assert [e.run_id for e in await ctx.examples().stored()] == ["earlier"]  # ...and not stored
    assert "an awful dull film" in prompt_of(slm.requests[0])  # reading is its own switch (shots_from_examples)
    await ctx.aclose()


async def test_examples_off_both_ways_never_touch_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: RunContext) -> None:
        raise AssertionError("the example store was opened")

    monkeypatch.setattr(RunContext, "examples", refuse)
    ctx, slm, llm = context(tmp_path, store_examples=False, shots_from_examples=0)
    result = await moa.arun("t", input=["an awful film", "a lovely film"], plan=PLAN, context=ctx)
    assert result.status == "ok" and result.escalations.count == 2 and len(slm.requests) == len(llm.requests) == 2
    assert not (tmp_path / "state" / "examples").exists()
    await ctx.aclose()


def test_cli_flags_switch_the_store_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    seen: list[moa.Settings] = []
    monkeypatch.setattr(sys.modules["moa.cli.main"], "_execute", lambda start, settings, *a, **k: seen.append(settings))
    CliRunner().invoke(app, ["run", "sentiment", "--no-store-examples", "--shots-from-examples", "0"])
    CliRunner().invoke(app, ["run", "sentiment"])
    assert [(s.store_examples, s.shots_from_examples) for s in seen] == [(False, 0), (True, 4)]


def test_store_examples_in_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moa.toml"
    config.write_text("store_examples = false\nshots_from_examples = 0\n")
    monkeypatch.setenv("MOA_CONFIG", str(config))
    settings = moa.load_settings()
    assert settings.store_examples is False and settings.shots_from_examples == 0


@pytest.mark.real  # Chroma on disk and the MiniLM embedder, through the command
def test_cli_lists_and_removes_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_STATE_DIR", str(tmp_path / "state"))
    settings = moa.load_settings()

    async def fill() -> None:
        ctx = RunContext.create(settings)
        store = ctx.examples()
        await store.add("sentiment", KEY, "an awful film", "negative", "fake:big", run_id="run1")
        await store.add("sentiment", KEY, "a lovely film", "positive", "fake:big", run_id="run2")
        await store.add("filtering", "criterion=spam", "WIN a prize now", "spam", "fake:big", run_id="run2")
        await ctx.aclose()

    import asyncio

    asyncio.run(fill())
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["examples", "list", "--json"]).stdout)
    assert sorted((e["agent"], e["text"], e["run_id"], e["model"], e["key"]) for e in listed) == [
        ("filtering", "WIN a prize now", "run2", "fake:big", "criterion=spam"),
        ("sentiment", "a lovely film", "run2", "fake:big", KEY),
        ("sentiment", "an awful film", "run1", "fake:big", KEY),
    ]
    monkeypatch.setenv("COLUMNS", "200")
    table = runner.invoke(app, ["examples", "list", "sentiment"])
    assert table.exit_code == 0 and "an awful film" in table.stdout and "run1" in table.stdout and "WIN" not in table.stdout
    missing = runner.invoke(app, ["examples", "rm", "0123456789abcdef"])
    assert missing.exit_code == 2 and "nothing was removed" in missing.stderr
    assert runner.invoke(app, ["examples", "rm"]).exit_code == 2
    by_id = next(e["id"] for e in listed if e["text"] == "an awful film")
    assert "removed 1 example" in runner.invoke(app, ["examples", "rm", by_id]).stdout
    assert json.loads(runner.invoke(app, ["examples", "rm", "--run", "run2", "--agent", "sentiment", "--json"]).stdout)["removed"] == 1
    assert [e["agent"] for e in json.loads(runner.invoke(app, ["examples", "list", "--json"]).stdout)] == ["filtering"]
    assert "removed 1 example" in runner.invoke(app, ["examples", "rm", "--all"]).stdout
    assert json.loads(runner.invoke(app, ["examples", "list", "--json"]).stdout) == []
