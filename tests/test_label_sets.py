"""Specialists and calibrations are kept per agent, model and label set; a run uses only those of its
own label set and says when one exists for another; runs choose their label set (fakes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moa
from moa.agent.learn import task_for, train_agent, used_by
from moa.cli.main import app
from moa.learning.calibration import Calibration
from moa.learning.labelled import LabelledSet
from moa.learning.store import _slug, agent_dir, calibration_path, learned_summary
from moa.testing import FakeEmbedder, FakeModel
from moa.workflow.catalog import builtin_agents
from moa.workflow.planner import RouterPlanner

SENTIMENT = builtin_agents()["sentiment"]
TWO = {"labels": ["positive", "negative"]}
TWO_KEY = task_for(SENTIMENT, TWO).key
THREE_KEY = task_for(SENTIMENT, {}).key
MISMATCH = "a specialist for sentiment (negative, positive) exists but this task asks for (negative, neutral, positive)"


def plan(options: dict[str, object]) -> dict[str, object]:
    return {"subtasks": [{"id": "s", "agent": "sentiment", "options": options}]}


def settings(tmp_path: Path, **kw: object) -> moa.Settings:
    return moa.load_settings(confidence="self", state_dir=tmp_path / "state", store_examples=False, **kw)


def fitted(key: str) -> Calibration:
    raw = [i / 100 for i in range(50, 100)] * 2
    return Calibration.fit(raw, [c > 0.85 for c in raw], agent="sentiment", model="fake:", key=key)


async def test_a_calibration_applies_to_its_own_label_set_only(tmp_path: Path) -> None:
    s = settings(tmp_path)
    calibration = fitted(TWO_KEY)
    calibration.save(calibration_path(s, "sentiment", "fake:", TWO_KEY))
    model = FakeModel([json.dumps({"label": "positive", "confidence": 0.7})])
    two = await moa.arun("t", input=["x"], plan=plan(TWO), slm=model, llm=model, settings=s)
    assert two.results["s"].items[0].output.confidence == pytest.approx(calibration.apply(0.7))  # type: ignore[union-attr]
    assert two.warnings == []
    three = await moa.arun("t", input=["x"], plan=plan({}), slm=model, llm=model, settings=s)
    assert three.results["s"].items[0].output.confidence == 0.7  # type: ignore[union-attr]  # raw: not calibrated
    (warning,) = three.warnings
    assert "a calibration of sentiment on fake: for (negative, positive) exists but this task asks for (negative, neutral, positive)" in warning
    assert "--option sentiment.labels=positive,negative" in warning and three.results["s"].warnings == [warning]


async def test_a_calibration_made_before_label_sets_is_refused_with_a_message(tmp_path: Path) -> None:
    s = settings(tmp_path)
    old = agent_dir(s, "sentiment") / f"calibration-{_slug('fake:')}.json"  # where moa <= 0.2 kept it, no key inside
    old.parent.mkdir(parents=True)
    old.write_text(fitted("").model_dump_json(exclude={"key"}))
    model = FakeModel([json.dumps({"label": "positive", "confidence": 0.7})])
    result = await moa.arun("t", input=["x"], plan=plan({}), slm=model, llm=model, settings=s)
    assert result.results["s"].items[0].output.confidence == 0.7  # type: ignore[union-attr]
    (warning,) = result.warnings
    assert "fitted before calibrations were kept per label set" in warning and "moa calibrate sentiment DATA --model fake:" in warning
    assert "no label set" in learned_summary(s, "sentiment")


async def _train_two_labels(s: moa.Settings, embedder: FakeEmbedder) -> None:
    texts = [f"an awful dull film number {i}" for i in range(10)] + [f"a great lovely film number {i}" for i in range(10)]
    data = LabelledSet(texts=texts, labels=["negative"] * 10 + ["positive"] * 10, source="test")
    ctx = moa.RunContext.create(s, embedder=embedder)
    await train_agent(ctx, SENTIMENT, task_for(SENTIMENT, {}, data.classes), data)
    await ctx.aclose()


async def test_a_specialist_for_another_label_set_is_not_used_and_the_run_says_so(tmp_path: Path) -> None:
    s = settings(tmp_path)
    embedder = FakeEmbedder()
    await _train_two_labels(s, embedder)
    model = FakeModel([json.dumps({"label": "neutral", "confidence": 0.9})])
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=model, llm=model), embedder=embedder)
    three = await moa.arun("t", input=["an awful dull film number 3"], plan=plan({}), context=ctx)
    assert three.results["s"].items[0].answered_by == "slm" and "specialist" not in three.summary.per_tier
    (warning,) = three.warnings
    assert warning.startswith(MISMATCH) and "--option sentiment.labels=positive,negative" in warning and "'positive or negative'" in warning
    two = await moa.arun("t", input=["an awful dull film number 3"], plan=plan(TWO), context=ctx)
    assert two.results["s"].items[0].answered_by == "specialist"
    (uncalibrated,) = two.warnings  # the specialist fits; its cascade escalates on the agent's default threshold
    assert uncalibrated.startswith("sentiment (negative, positive): no calibrated threshold for the cascade specialist → slm, using 0.7")
    without = await moa.arun("t", input=["x"], plan=plan({}), context=ctx, settings=s.model_copy(update={"cascade": ["slm"]}))
    assert without.warnings == []  # no specialist step in this run's cascade: nothing to say
    await ctx.aclose()


def test_train_and_calibrate_say_which_runs_use_the_result() -> None:
    two = used_by(SENTIMENT, task_for(SENTIMENT, {}, ["negative", "positive"]))
    assert two == (
        "used by sentiment runs that ask for (negative, positive): a run asks for it with "
        "--option sentiment.labels=positive,negative, or when the task says 'positive or negative'"
    )
    three = used_by(SENTIMENT, task_for(SENTIMENT, {}), "embedded:")
    assert three == "used by sentiment runs that ask for (negative, neutral, positive) when embedded: answers: every sentiment run that chooses no other task asks for it"
    spam = used_by(builtin_agents()["filtering"], task_for(builtin_agents()["filtering"], {"criterion": "toxic language"}))
    assert "--option filtering.criterion=toxic language" in spam


def test_the_task_wording_chooses_the_label_set() -> None:
    assert SENTIMENT.options_from_task("positive or negative sentiment of each review") == TWO
    assert SENTIMENT.options_from_task("is each review Negative, Positive or neutral?") == {"labels": ["positive", "negative", "neutral"]}
    assert SENTIMENT.options_from_task("give the sentiment of the positive reviews") == {}  # one label named: no choice made
    assert SENTIMENT.options_from_task("what is the sentiment of these reviews") == {}


def test_a_list_that_names_two_labels_brings_its_other_words() -> None:
    mixed = {"labels": ["positive", "negative", "mixed"]}
    assert SENTIMENT.options_from_task("Is each of these reviews positive, negative or mixed?") == mixed
    assert SENTIMENT.options_from_task("label each as positive/negative/mixed") == mixed
    assert SENTIMENT.options_from_task("classify them as positive, negative, neutral, or mixed")["labels"][-1] == "mixed"
    # a second conjunction ends the list, and a word that qualifies a label is not one
    assert SENTIMENT.options_from_task("sort into positive and negative and drop spam") == TWO
    assert SENTIMENT.options_from_task("rate them negative, neutral, positive or very positive") == {"labels": ["positive", "negative", "neutral"]}
    assert SENTIMENT.options_from_task("find the apples, pears or plums, positive or negative") == TWO  # a list naming no label


async def test_the_router_planner_takes_the_label_set_from_the_task(tmp_path: Path) -> None:
    ctx = moa.RunContext.create(settings(tmp_path), embedder=FakeEmbedder())
    agents = {"sentiment": SENTIMENT, "filtering": builtin_agents()["filtering"]}
    outcome = await RouterPlanner(threshold=0.0).plan(ctx, "classify the opinion of each message as positive or negative", agents, has_input=True, reason="test")
    (subtask,) = outcome.plan.subtasks
    assert subtask.agent == "sentiment" and subtask.options == TWO


async def test_agent_options_in_settings_set_the_label_set_of_every_sentiment_subtask(tmp_path: Path) -> None:
    model = FakeModel([json.dumps({"label": "negative", "confidence": 0.9})])
    s = settings(tmp_path, agent_options={"sentiment": TWO})
    result = await moa.arun("t", input=["x"], plan=plan({"labels": ["positive", "negative", "neutral", "mixed"]}), slm=model, llm=model, settings=s)
    assert result.plan is not None and result.plan.subtasks[0].options == TWO  # the run's choice wins, and the plan keeps it
    assert "one of: positive, negative." in (model.requests[0].prompt or "")
    for bad, needle in (({"poet": {"x": 1}}, "not known"), ({"sentiment": {"labels": ["only"]}}, "invalid options for agent 'sentiment'")):
        with pytest.raises(moa.UserError) as info:
            await moa.arun("t", input=["x"], plan=plan({}), slm=model, llm=model, settings=settings(tmp_path, agent_options=bad))
        assert needle in info.value.message


def test_cli_labels_and_option_choose_agent_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[moa.Settings] = []
    monkeypatch.setattr(sys.modules["moa.cli.main"], "_execute", lambda start, settings, *a, **k: seen.append(settings))
    runner = CliRunner()
    assert runner.invoke(app, ["run", "t", "--labels", "positive,negative"]).exit_code == 0
    assert runner.invoke(app, ["run", "t", "--option", "sentiment.labels=negative,positive", "--option", "filtering.criterion=toxic"]).exit_code == 0
    assert [s.agent_options for s in seen] == [{"sentiment": TWO}, {"sentiment": {"labels": ["negative", "positive"]}, "filtering": {"criterion": "toxic"}}]
    bad = runner.invoke(app, ["run", "t", "--option", "labels=a,b", "--json"])
    assert bad.exit_code == 2 and "name the agent" in json.loads(bad.stdout)["error"]["message"]
