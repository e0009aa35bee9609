"""Thresholds chosen from data: the k-fold chooser on hand-made answers, storage, runs that use
them (or say they have none), ``moa agents`` and ``moa calibrate --cascade`` — fakes only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.tiers import fake_tiers
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.eval.records import ItemRecord, StepRecord
from moa.eval.sweep import SWEEP_THRESHOLDS, cascade_at
from moa.eval.thresholds import choose_thresholds, stratified_folds
from moa.learning.store import learned_files, thresholds_path, thresholds_summary
from moa.learning.thresholds import Goal, ThresholdChoice
from moa.models.base import GenerateRequest
from moa.testing import FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents

LABELS = ["negative", "positive"]
KEY = "labels=negative,neutral,positive"  # the sentiment agent's task when a run sets no labels
PLAN = {"subtasks": [{"id": "s", "agent": "sentiment"}]}


def answer(step: str, label: str, confidence: float, tokens: int = 0) -> StepRecord:
    from moa.usage import Usage

    return StepRecord(step=step, model=step, prediction=label, confidence=confidence, usage=[Usage(model=step, tier=step, prompt_tokens=tokens)])


def other(label: str) -> str:
    return "negative" if label == "positive" else "positive"


def records(groups: list[tuple[int, list[tuple[bool, float]]]], steps: tuple[str, ...] = ("specialist", "slm")) -> list[ItemRecord]:
    """``count`` items per group; each step answers right or wrong with a confidence (the last step's confidence is 0.9)."""
    out = []
    for count, answers in groups:
        for _ in range(count):
            gold = LABELS[len(out) % 2]
            attempts = [
                answer(step, gold if right else other(gold), confidence, tokens=10 * index)
                for index, (step, (right, confidence)) in enumerate(zip(steps, answers, strict=True))
            ]
            out.append(ItemRecord(id=str(len(out)), gold=gold, attempts=attempts))
    return out


def best_at(low: float, high: float) -> list[ItemRecord]:
    """The specialist is right at ``high`` where the slm is wrong, wrong at ``low`` where the slm is
    right: escalating below a threshold in (low, high] is best."""
    return records([(60, [(True, 0.95), (True, 0.9)]), (20, [(True, high), (False, 0.9)]), (20, [(False, low), (True, 0.9)])])


# --- choosing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high", "expected"), [(0.47, 0.52, 0.5), (0.77, 0.82, 0.8)])
def test_the_chooser_finds_the_best_threshold(low: float, high: float, expected: float) -> None:
    chosen = choose_thresholds(best_at(low, high), ["specialist", "slm"], goal=Goal.parse("accuracy"), default=0.7)
    assert chosen.thresholds == {"specialist": expected} and chosen.folds == 5
    assert all(f == {"specialist": expected} for f in chosen.fold_thresholds)
    scores = {s.name: s for s in chosen.held_out}
    assert scores["chosen"].accuracy == 1.0 and scores["chosen"].escalated == pytest.approx(0.2)
    assert scores["never escalate"].accuracy == pytest.approx(0.8) and scores["never escalate"].escalated == 0.0
    assert scores["always slm"].accuracy == pytest.approx(0.8) and scores["always slm"].escalated == 1.0
    # the constant 0.7 escalates the specialist's right answers on one data set, keeps its wrong ones on the other
    assert scores["default (0.7)"].accuracy == pytest.approx(0.8) and scores["default (0.7)"].escalated == pytest.approx(0.4 if expected == 0.5 else 0.0)


def test_within_a_margin_of_the_best_picks_a_cheaper_threshold() -> None:
    data = records(
        [
            (60, [(True, 0.95), (True, 0.9)]),
            (30, [(False, 0.3), (True, 0.9)]),  # escalating at > 0.3 fixes these...
            (2, [(False, 0.6), (True, 0.9)]),  # ...at > 0.6 these two as well, for 2 more escalations
            (8, [(True, 0.75), (False, 0.9)]),  # and at > 0.75 breaks these
        ]
    )
    best = choose_thresholds(data, ["specialist", "slm"], goal=Goal.parse("accuracy"))
    cheaper = choose_thresholds(data, ["specialist", "slm"], goal=Goal.parse("within=0.05"))
    assert best.thresholds == {"specialist": 0.65} and cheaper.thresholds == {"specialist": 0.35}
    assert cheaper.held_out[0].escalated < best.held_out[0].escalated
    assert cheaper.held_out[0].accuracy >= best.held_out[0].accuracy - 0.05


def test_each_step_of_three_gets_its_own_threshold() -> None:
    steps = ("specialist", "slm", "llm")
    data = records(
        [
            (40, [(True, 0.95), (True, 0.95), (True, 0.9)]),
            (20, [(True, 0.52), (False, 0.5), (False, 0.9)]),  # the specialist's 0.52 is right: keep it (t <= 0.5)
            (20, [(False, 0.47), (True, 0.82), (False, 0.9)]),  # its 0.47 is wrong; the slm's 0.82 is right (t <= 0.8)
            (20, [(False, 0.3), (False, 0.77), (True, 0.9)]),  # the slm's 0.77 is wrong: the llm is right (t > 0.75)
        ],
        steps,
    )
    chosen = choose_thresholds(data, list(steps), goal=Goal.parse("accuracy"))
    assert chosen.thresholds == {"specialist": 0.5, "slm": 0.8}
    assert chosen.held_out[0].accuracy == 1.0
    replayed = cascade_at(data, list(steps), (0.5, 0.8, 0.7), LABELS)
    assert replayed.metrics["accuracy"] == 1.0 and replayed.name == "specialist→slm→llm @0.5,0.8,0.7"


def test_the_held_out_score_is_not_the_score_on_the_data_it_was_chosen_on() -> None:
    """On answers that are right by chance, the best in-sample threshold looks better than chance;
    scored on folds it was not chosen on, it does not."""
    rng = np.random.default_rng(3)
    data = records([(1, [(bool(rng.uniform() < 0.5), round(float(rng.uniform()), 3)), (bool(rng.uniform() < 0.5), 0.9)]) for _ in range(200)])
    chosen = choose_thresholds(data, ["specialist", "slm"], goal=Goal.parse("accuracy"))
    in_sample = cascade_at(data, ["specialist", "slm"], chosen.thresholds["specialist"], LABELS).metrics["accuracy"]
    assert in_sample == max(cascade_at(data, ["specialist", "slm"], t, LABELS).metrics["accuracy"] for t in SWEEP_THRESHOLDS)
    assert chosen.held_out[0].accuracy < in_sample - 0.03  # 0.44 against 0.495 in sample


def test_folds_are_stratified_and_seeded() -> None:
    gold = ["a"] * 50 + ["b"] * 30
    fold = stratified_folds(gold, 5, seed=0)
    assert [int(((fold == f) & (np.array(gold) == "b")).sum()) for f in range(5)] == [6] * 5
    assert np.bincount(fold).tolist() == [16] * 5
    assert (stratified_folds(gold, 5, seed=0) == fold).all() and not (stratified_folds(gold, 5, seed=1) == fold).all()


@pytest.mark.parametrize(
    ("n", "folds", "needle"),
    [(30, None, "at least 40 labelled items"), (90, 5, "at least 100 labelled items"), (100, 1, "--folds must be at least 2")],
)
def test_too_little_data_is_refused(n: int, folds: int | None, needle: str) -> None:
    with pytest.raises(UserError) as info:
        choose_thresholds(best_at(0.47, 0.52)[:n], ["specialist", "slm"], goal=Goal.parse("accuracy"), folds=folds)
    assert needle in info.value.message


def test_goals() -> None:
    assert Goal.parse("accuracy") == Goal(kind="accuracy") and str(Goal.parse(" within=0.01 ")) == "within=0.01"
    for bad in ("cheap", "within=1.5", "within=", "within=-0.1"):
        with pytest.raises(UserError) as info:
            Goal.parse(bad)
        assert info.value.code == ErrorCode.BAD_CONFIG and "--goal accuracy" in info.value.message and "within=0.01" in info.value.message


# --- storing ------------------------------------------------------------------------------------


def choice(thresholds: dict[str, float], steps: tuple[str, ...] = ("slm", "llm"), key: str = KEY, **kw: object) -> ThresholdChoice:
    return ThresholdChoice.model_validate(
        {"agent": "sentiment", "key": key, "steps": list(steps), "thresholds": thresholds, "goal": "accuracy", "folds": 5, "n": 100, **kw}
    )


def test_stored_thresholds_round_trip_per_task_and_cascade(tmp_path: Path) -> None:
    s = moa.load_settings(state_dir=tmp_path)
    path = thresholds_path(s, "sentiment", KEY, ["specialist", "slm"])
    made = choice({"specialist": 0.55}, ("specialist", "slm"), models={"slm": "fake:"})
    made.save(path)
    assert ThresholdChoice.load(path) == made
    assert path != thresholds_path(s, "sentiment", "labels=negative,positive", ["specialist", "slm"])
    assert path != thresholds_path(s, "sentiment", KEY, ["specialist", "slm", "llm"])
    (learned,) = learned_files(s, "sentiment")
    assert learned.kind == "thresholds" and learned.key == KEY
    assert thresholds_summary(s, "sentiment") == ["(negative, neutral, positive) specialist 0.55 → slm (goal accuracy, 100 items)"]
    path.write_text("{not json")
    with pytest.raises(UserError) as info:
        ThresholdChoice.load(path)
    assert info.value.code == ErrorCode.INPUT_FILE and "moa calibrate" in info.value.message


# --- runs ---------------------------------------------------------------------------------------


def slm_at(confidence: float) -> FakeModel:
    return FakeModel([json.dumps({"label": "positive", "confidence": confidence})], spec="fake:small")


LLM = FakeModel([json.dumps({"label": "negative", "confidence": 0.95})], spec="fake:big")


def settings(tmp_path: Path, **kw: object) -> moa.Settings:
    return moa.load_settings(confidence="self", state_dir=tmp_path, store_examples=False, **kw)


async def run(s: moa.Settings, plan: dict[str, object] = PLAN, agents: list[moa.Agent] | None = None) -> moa.RunResult:  # type: ignore[type-arg]
    return await moa.arun("t", input=["an item"], plan=plan, slm=slm_at(0.6), llm=LLM, settings=s, agents=agents or [])


async def test_a_run_uses_the_stored_threshold_and_explicit_thresholds_win(tmp_path: Path) -> None:
    s = settings(tmp_path)
    before = await run(s)
    assert before.results["s"].items[0].answered_by == "llm"  # 0.6 < the agent's 0.7: escalates
    (warning,) = before.warnings
    assert warning == (
        "sentiment (negative, neutral, positive): no calibrated threshold for the cascade slm → llm, using 0.7; "
        "run `moa calibrate sentiment DATA --cascade slm,llm` to choose one from your data"
    )
    choice({"slm": 0.55}, models={"slm": "fake:small", "llm": "fake:big"}).save(thresholds_path(s, "sentiment", KEY, ["slm", "llm"]))
    after = await run(s)
    assert after.results["s"].items[0].answered_by == "slm" and after.warnings == []  # 0.6 >= the stored 0.55
    for explicit in (settings(tmp_path, threshold=0.7), settings(tmp_path, thresholds={"sentiment": 0.7})):
        assert (await run(explicit)).results["s"].items[0].answered_by == "llm"
    planned = {"subtasks": [{"id": "s", "agent": "sentiment", "threshold": 0.7}]}
    assert (await run(s, planned)).results["s"].items[0].answered_by == "llm"
    coded = builtin_agents()["sentiment"].with_policy(threshold=0.7)
    assert (await run(s, agents=[coded])).results["s"].items[0].answered_by == "llm"


async def test_thresholds_of_another_task_cascade_or_model_are_not_used_and_the_run_says_so(tmp_path: Path) -> None:
    s = settings(tmp_path)
    choice({"slm": 0.55}, key="labels=negative,positive").save(thresholds_path(s, "sentiment", "labels=negative,positive", ["slm", "llm"]))
    other_task = await run(s)
    assert other_task.results["s"].items[0].answered_by == "llm"
    assert "no calibrated threshold for the cascade slm → llm, using 0.7" in other_task.warnings[0]
    choice({"slm": 0.55}, models={"slm": "ollama:qwen2.5:7b"}).save(thresholds_path(s, "sentiment", KEY, ["slm", "llm"]))
    other_model = await run(s)
    assert other_model.results["s"].items[0].answered_by == "llm"
    (warning,) = other_model.warnings
    assert "its steps changed (slm ollama:qwen2.5:7b then, fake:small now)" in warning and "choose them again" in warning
    choice({"specialist": 0.5, "slm": 0.55}, ("specialist", "slm", "llm")).save(thresholds_path(s, "sentiment", KEY, ["specialist", "slm", "llm"]))
    thresholds_path(s, "sentiment", KEY, ["slm", "llm"]).unlink()
    other_cascade = await run(s)
    assert other_cascade.results["s"].items[0].answered_by == "llm"
    assert "thresholds are stored for another cascade: specialist 0.5 → slm 0.55 → llm" in other_cascade.warnings[0]


async def test_the_warning_comes_once_per_agent_and_task_and_not_for_one_step(tmp_path: Path) -> None:
    s = settings(tmp_path)
    twice = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "b", "agent": "sentiment"}]}
    result = await run(s, twice)
    assert len(result.warnings) == 1 and "no calibrated threshold" in result.warnings[0]
    assert (await run(settings(tmp_path, cascade=["slm"]))).warnings == []  # one step: nothing to choose
    assert (await run(settings(tmp_path, escalate=False))).warnings == []
    assert (await run(settings(tmp_path, threshold=0.6))).warnings == []  # the run chose its threshold


# --- CLI ----------------------------------------------------------------------------------------

runner = CliRunner()


def test_moa_agents_shows_the_stored_thresholds_or_none(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["agents"])
    assert listed.exit_code == 0 and "sentiment: none (runs use 0.7)" in listed.stdout
    s = moa.load_settings()
    choice({"specialist": 0.55}, ("specialist", "slm")).save(thresholds_path(s, "sentiment", KEY, ["specialist", "slm"]))
    listed = runner.invoke(app, ["agents"])
    assert listed.exit_code == 0
    assert "sentiment (negative, neutral, positive) specialist 0.55 → slm (goal accuracy, 100 items)" in listed.stdout
    assert "filtering: none" in listed.stdout


def item_of(request: GenerateRequest) -> str:
    return prompt_of(request).rsplit("Text:", 1)[-1]


@pytest.fixture
def two_models(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeModel, FakeModel]:
    """An slm that is right on 'plain' items and unsure (0.55) and wrong on 'tricky' ones, and an llm
    that is always right, on every run context the CLI creates."""

    def small(request: GenerateRequest) -> str:
        text = item_of(request)
        gold = "positive" if "good" in text else "negative"
        if "tricky" in text:
            return json.dumps({"label": other(gold), "confidence": 0.55})
        return json.dumps({"label": gold, "confidence": 0.62 if "close" in text else 0.95})

    def big(request: GenerateRequest) -> str:
        text = item_of(request)
        wrong = "close" in text  # the llm is wrong where the slm's 0.62 was right
        gold = "positive" if "good" in text else "negative"
        return json.dumps({"label": other(gold) if wrong else gold, "confidence": 0.9})

    slm, llm = FakeModel(small, spec="fake:small"), FakeModel(big, spec="fake:big")
    fake_tiers(monkeypatch, slm, llm)
    monkeypatch.setenv("MOA_CONFIDENCE", "self")
    return slm, llm


def labelled(path: Path, n: int) -> Path:
    kinds = ["plain"] * 6 + ["tricky"] * 2 + ["close"] * 2
    rows = [f"a {'good' if i % 2 else 'bad'} {kinds[i % 10]} film {i}\t{'positive' if i % 2 else 'negative'}" for i in range(n)]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    return path


def test_calibrate_cascade_chooses_stores_and_a_run_uses_it(tmp_path: Path, two_models: tuple[FakeModel, FakeModel]) -> None:
    data = labelled(tmp_path / "d.tsv", 100)
    out = tmp_path / "answers"
    result = runner.invoke(
        app, ["calibrate", "sentiment", str(data), "--cascade", "slm,llm", "--option", "labels=positive,negative", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["thresholds"] == {"slm": 0.6} and body["steps"] == ["slm", "llm"] and body["key"] == "labels=negative,positive"
    assert body["models"] == {"slm": "fake:small", "llm": "fake:big"} and body["n"] == 100 and body["folds"] == 5
    scores = {s["name"]: s for s in body["held_out"]}
    assert scores["chosen"]["accuracy"] == 1.0 and scores["default (0.7)"]["accuracy"] == 0.8 and scores["never escalate"]["accuracy"] == 0.8
    assert Path(body["path"]).is_file() and (out / "results.jsonl").is_file()
    # choosing again with another goal answers from the kept answers: no model call
    slm, llm = two_models
    calls = len(slm.requests) + len(llm.requests)
    again = runner.invoke(
        app, ["calibrate", "sentiment", str(data), "--cascade", "slm,llm", "--option", "labels=positive,negative", "--out", str(out), "--goal", "within=0.3"]
    )
    assert again.exit_code == 0, again.output
    assert len(slm.requests) + len(llm.requests) == calls
    assert "chose slm 0 → llm" in again.stdout  # within 0.3 of the best, never escalating is cheapest
    runner.invoke(app, ["calibrate", "sentiment", str(data), "--cascade", "slm,llm", "--option", "labels=positive,negative", "--out", str(out)])
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    (tmp_path / "items.txt").write_text("a bad close film\n")
    ran = runner.invoke(
        app,
        [
            "run",
            "t",
            "--plan",
            str(tmp_path / "plan.json"),
            "--input",
            str(tmp_path / "items.txt"),
            "--labels",
            "positive,negative",
            "--no-store-examples",
            "--json",
        ],
    )
    assert ran.exit_code == 0, ran.output
    record = json.loads(ran.stdout)
    (item,) = record["results"]["s"]["items"]
    assert item["run"]["answered_by"] == "slm" and record["warnings"] == []  # 0.62 >= the chosen 0.6 (the default 0.7 would escalate)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--goal", "cheap"], "bad_config", "--goal accuracy"),
        (["--limit", "30"], "too_few_items", "at least 40 labelled items"),
        (["--cascade", "specialist,slm"], "not_trained", "moa train sentiment"),
        (["--model", "slm"], "bad_config", "not both"),
    ],
)
def test_calibrate_cascade_errors_say_what_to_do(tmp_path: Path, two_models: tuple[FakeModel, FakeModel], args: list[str], code: str, needle: str) -> None:
    data = labelled(tmp_path / "d.tsv", 100)
    cascade = [] if "--cascade" in args else ["--cascade", "slm,llm"]
    result = runner.invoke(app, ["calibrate", "sentiment", str(data), "--option", "labels=positive,negative", *cascade, *args, "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == code and needle in error["message"]
    slm, llm = two_models
    assert slm.requests == [] and llm.requests == []  # refused before any model ran


def test_calibrate_cascade_on_one_model_has_nothing_to_choose(tmp_path: Path, cli_model: FakeModel) -> None:
    result = runner.invoke(app, ["calibrate", "sentiment", str(labelled(tmp_path / "d.tsv", 100)), "--cascade", "slm,llm", "--json"])
    assert result.exit_code == 2 and "runs on one model" in json.loads(result.stdout)["error"]["message"]


async def test_an_eval_of_the_cascade_replays_the_thresholds_its_runs_use(tmp_path: Path) -> None:
    from moa.eval.runner import aevaluate, prepare

    s = settings(tmp_path)
    slm = FakeModel(lambda r: json.dumps({"label": "positive" if "good" in item_of(r) else "negative", "confidence": 0.6}), spec="fake:small")
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=slm, llm=LLM))
    data = labelled(tmp_path / "d.tsv", 20)
    options = {"labels": ["positive", "negative"]}
    choice({"slm": 0.55}, key="labels=negative,positive").save(thresholds_path(s, "sentiment", "labels=negative,positive", ["slm", "llm"]))
    report = await aevaluate(prepare("sentiment", data, ctx=ctx, options=options), tmp_path / "ev", ctx=ctx)
    assert report.answered_by == {"slm": 20} and report.metrics["accuracy"] == 1.0  # 0.6 >= 0.55: no item escalated
    cascade = next(c for c in report.configs if "→" in c.name)
    assert cascade.name == "slm→llm @0.55,0.7" and cascade.metrics["accuracy"] == 1.0 and cascade.top_share == 0.0
    assert any("thresholds chosen from data" in note and "slm 0.55" in note for note in report.notes)
    explicit = await aevaluate(prepare("sentiment", data, ctx=ctx, options=options, threshold=0.7), tmp_path / "ev-explicit", ctx=ctx)
    assert explicit.answered_by == {"llm": 20}  # --threshold wins
    await ctx.aclose()


async def test_the_synchronous_wrapper_refuses_to_run_inside_an_event_loop(tmp_path: Path) -> None:
    from moa.eval import calibrate_thresholds

    with pytest.raises(UserError) as info:
        calibrate_thresholds("sentiment", labelled(tmp_path / "d.tsv", 100), cascade=["slm", "llm"])
    assert info.value.code == ErrorCode.NESTED_EVENT_LOOP and "acalibrate_thresholds" in info.value.message


async def test_thresholds_chosen_for_a_specialist_since_retrained_are_not_used(tmp_path: Path) -> None:
    from moa.agent.cascade import cascade_steps
    from moa.agent.learn import task_for, train_agent
    from moa.learning.labelled import LabelledSet
    from moa.testing import FakeEmbedder

    s = settings(tmp_path, cascade=["specialist", "slm"])
    agent = builtin_agents()["sentiment"]
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=slm_at(0.6), llm=LLM), embedder=FakeEmbedder())
    texts = [f"an awful dull film number {i}" for i in range(10)] + [f"a great lovely film number {i}" for i in range(10)]
    data = LabelledSet(texts=texts, labels=["negative"] * 10 + ["positive"] * 10, source="test")
    task = task_for(agent, {}, data.classes)
    await train_agent(ctx, agent, task, data)
    item = agent.make_input("a great film", task.options)
    steps = cascade_steps(agent, ctx, item)
    assert [x.name for x in steps] == ["specialist", "slm"]
    models = agent.step_models(ctx, item, steps)
    assert models["slm"] == "fake:small" and models["specialist"].startswith("trained 20")
    path = thresholds_path(s, "sentiment", task.key, ["specialist", "slm"])
    choice({"specialist": 0.5}, ("specialist", "slm"), key=task.key, models=models).save(path)
    assert agent.chosen_thresholds(ctx, item, steps) is not None and agent.threshold_warning(ctx, item) is None
    stale = {**models, "specialist": "trained 2000-01-01T00:00:00+00:00"}
    choice({"specialist": 0.5}, ("specialist", "slm"), key=task.key, models=stale).save(path)
    fresh = moa.RunContext.create(s, models=moa.Models(s, slm=slm_at(0.6), llm=LLM), embedder=FakeEmbedder())
    assert agent.chosen_thresholds(fresh, item, steps) is None
    warning = agent.threshold_warning(fresh, item)
    assert warning is not None and "its steps changed (specialist trained 2000-01-01T00:00:00+00:00 then, trained 20" in warning
    await ctx.aclose()
    await fresh.aclose()
