"""Thresholds chosen from entity data (``moa calibrate extraction DATA.conll --cascade ...``): the
k-fold chooser on hand-made entity answers scored by micro entity F1, unstratified folds, the
stored choice keyed by the entity types (runs and ``moa agents`` find it) — fakes only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.tiers import fake_tiers
from typer.testing import CliRunner

import moa
from moa.agent.cascade import cascade_steps
from moa.cli.main import app
from moa.eval.metrics import entity_prf
from moa.eval.quality import components, quality
from moa.eval.records import ItemRecord, StepRecord
from moa.eval.thresholds import choose_thresholds, folds_of
from moa.learning.store import thresholds_path
from moa.learning.tagger import types_key
from moa.learning.thresholds import Goal, ThresholdChoice
from moa.testing import FakeModel, prompt_of
from moa.usage import Usage
from moa.workflow.catalog import builtin_agents

STEPS = ["specialist", "slm"]
GOLD = [["person", 0, 5], ["location", 10, 16]]
ALL = GOLD  # both entities right
HALF = GOLD[:1]  # one of two: tp 1, fn 1
HALF_AND_WRONG = [*GOLD[:1], ["product", 20, 25]]  # tp 1, fp 1, fn 1
BOTH_AND_WRONG = [*GOLD, ["product", 20, 25]]  # tp 2, fp 1
NONE: list[list[Any]] = []  # fn 2


def step(name: str, entities: list[list[Any]], confidence: float, tokens: int) -> StepRecord:
    return StepRecord(step=name, model=name, prediction=entities, confidence=confidence, usage=[Usage(model=name, tier=name, prompt_tokens=tokens)])


def records(groups: list[tuple[int, list[list[Any]], float, list[list[Any]]]]) -> list[ItemRecord]:
    """``count`` items per group: the specialist's entities and confidence, then the slm's entities (confidence 0.9)."""
    out = []
    for count, first, confidence, second in groups:
        for _ in range(count):
            attempts = [step("specialist", first, confidence, 0), step("slm", second, 0.9, 10)]
            out.append(ItemRecord(id=str(len(out)), gold=GOLD, attempts=attempts))
    return out


def scores(chosen: Any) -> dict[str, Any]:
    return {s.name: s for s in chosen.held_out}


def test_micro_f1_of_summed_components_is_the_eval_s_entity_f1() -> None:
    rng = np.random.default_rng(0)
    spans = [["person", 0, 5], ["location", 10, 16], ["product", 20, 25], ["person", 30, 33]]
    gold = [[s for s in spans if rng.uniform() < 0.5] for _ in range(30)]
    predicted: list[list[list[Any]] | None] = [[s for s in spans if rng.uniform() < 0.5] for _ in range(29)] + [None]
    summed = np.array([components("entities", p, g) for p, g in zip(predicted, gold, strict=True)]).sum(axis=0)
    assert float(quality("entities", summed)) == pytest.approx(entity_prf(predicted, gold)["f1"])
    assert components("entities", HALF_AND_WRONG, GOLD) == (1.0, 1.0, 1.0) and components("entities", None, GOLD) == (0.0, 0.0, 2.0)


@pytest.mark.parametrize(("low", "high", "expected"), [(0.47, 0.52, 0.5), (0.77, 0.82, 0.8)])
def test_the_chooser_finds_the_threshold_with_the_best_entity_f1(low: float, high: float, expected: float) -> None:
    data = records([(60, ALL, 0.95, ALL), (20, ALL, high, NONE), (20, NONE, low, ALL)])
    chosen = choose_thresholds(data, STEPS, goal=Goal.parse("f1"), default=None, kind="entities")
    assert chosen.thresholds == {"specialist": expected} and chosen.folds == 5
    by = scores(chosen)
    assert by["chosen"].metric == "f1" and by["chosen"].accuracy is None
    assert by["chosen"].f1 == 1.0 and by["chosen"].escalated == pytest.approx(0.2)
    assert by["never escalate"].f1 == pytest.approx(round(320 / 360, 4))  # tp 160, fn 40: 2tp / (2tp + fp + fn)
    assert by["default (none)"].f1 == by["never escalate"].f1 and by["default (none)"].thresholds == {}
    assert by["always slm"].f1 == pytest.approx(round(320 / 360, 4)) and by["always slm"].escalated == 1.0


@pytest.mark.parametrize(
    ("slm", "expected"),
    [
        (BOTH_AND_WRONG, 0.5),  # F1 0.8 per item against the specialist's 0.67 (neither is exactly right): escalate
        (HALF_AND_WRONG, 0.0),  # the same entity found and a wrong one more: the slm is worse, never escalate
        (HALF, 0.0),  # the same entities: escalating gains nothing and costs tokens
    ],
)
def test_escalating_wins_only_when_the_higher_step_s_entities_are_better(slm: list[list[Any]], expected: float) -> None:
    data = records([(60, ALL, 0.95, ALL), (40, HALF, 0.45, slm)])
    chosen = choose_thresholds(data, STEPS, goal=Goal.parse("accuracy"), kind="entities")
    assert chosen.thresholds == {"specialist": expected}
    by = scores(chosen)
    assert by["chosen"].f1 == max(by["never escalate"].quality, by["always slm"].quality)


def test_within_a_margin_of_the_best_f1_picks_a_cheaper_threshold() -> None:
    data = records(
        [
            (60, ALL, 0.95, ALL),
            (30, NONE, 0.3, ALL),  # escalating at > 0.3 finds these entities...
            (5, NONE, 0.6, ALL),  # ...at > 0.6 these as well, for 5 more escalations
            (8, ALL, 0.75, NONE),  # and at > 0.75 loses these
        ]
    )
    best = choose_thresholds(data, STEPS, goal=Goal.parse("f1"), kind="entities")
    cheaper = choose_thresholds(data, STEPS, goal=Goal.parse("within=0.05"), kind="entities")
    assert best.thresholds == {"specialist": 0.65} and cheaper.thresholds == {"specialist": 0.35}
    assert cheaper.held_out[0].escalated < best.held_out[0].escalated
    assert cheaper.held_out[0].quality >= best.held_out[0].quality - 0.05
    assert Goal.parse("within=0.05").label("f1") == "within=0.05" and Goal.parse("f1").label("f1") == "f1"


def test_entity_folds_are_dealt_at_random_not_by_label() -> None:
    gold = [[["person", 0, 5]]] * 50 + [[]] * 30  # a stratified split would deal each gold list evenly
    fold = folds_of("entities", gold, 5, seed=0)
    assert np.bincount(fold).tolist() == [16] * 5
    empty = np.array([not g for g in gold])
    assert [int((empty & (fold == f)).sum()) for f in range(5)] != [6] * 5
    assert (folds_of("entities", gold, 5, seed=0) == fold).all() and not (folds_of("entities", gold, 5, seed=1) == fold).all()
    labels = ["a"] * 50 + ["b"] * 30
    assert (folds_of("classification", labels, 5, seed=0) == folds_of("classification", labels, 5, seed=0)).all()
    assert [int(((folds_of("classification", labels, 5, 0) == f) & (np.array(labels) == "b")).sum()) for f in range(5)] == [6] * 5


# --- stored: runs and moa agents find it --------------------------------------------------------

TYPES = ["creative-work", "location", "organization", "person", "product"]
KEY = types_key(TYPES)


def stored(s: moa.Settings, steps: list[str]) -> ThresholdChoice:
    made = ThresholdChoice.model_validate(
        {"agent": "extraction", "key": KEY, "steps": steps, "thresholds": {steps[0]: 0.55}, "goal": "f1", "metric": "f1", "folds": 5, "n": 100}
    )
    made.save(thresholds_path(s, "extraction", KEY, steps))
    return made


async def test_an_extraction_run_of_the_same_types_uses_the_stored_thresholds(tmp_path: Path) -> None:
    s = moa.load_settings(state_dir=tmp_path, cascade=["slm", "llm"])
    made = stored(s, ["slm", "llm"])
    agent = builtin_agents()["extraction"]
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel(spec="fake:small"), llm=FakeModel(spec="fake:big")))
    same = agent.make_input("Alice went to Paris", {"types": list(reversed(TYPES))})
    assert agent.chosen_thresholds(ctx, same, cascade_steps(agent, ctx, same)) == made
    other = agent.make_input("Alice went to Paris", {"types": ["person", "location"]})
    assert agent.chosen_thresholds(ctx, other, cascade_steps(agent, ctx, other)) is None
    await ctx.aclose()


def test_moa_agents_lists_thresholds_chosen_for_extraction() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["agents"])
    assert listed.exit_code == 0 and "extraction: none (runs use -)" in listed.stdout
    stored(moa.load_settings(), ["specialist", "slm"])
    listed = runner.invoke(app, ["agents"])
    assert "extraction (types creative-work, location, organization, person, product) specialist 0.55 → slm (goal f1, 100 items)" in listed.stdout


# --- moa eval extraction --sweep ----------------------------------------------------------------

CONLL = "Alice\tB-person\nwent\tO\nto\tO\nParis\tB-location\n\nBob\tB-person\nlikes\tO\nRome\tB-location\n"


async def test_an_extraction_eval_with_sweep_replays_every_threshold_by_entity_f1(tmp_path: Path) -> None:
    from moa.eval.report import to_markdown
    from moa.eval.runner import aevaluate, prepare

    def small(request: Any) -> str:  # finds the person only
        text = prompt_of(request).rsplit("Text: ", 1)[-1]
        return '{"entities": [{"text": "%s", "type": "person"}]}' % ("Alice" if "Alice" in text else "Bob")

    def big(request: Any) -> str:
        text = prompt_of(request).rsplit("Text: ", 1)[-1]
        found = [("Alice", "person"), ("Paris", "location")] if "Alice" in text else [("Bob", "person"), ("Rome", "location")]
        return json.dumps({"entities": [{"text": t, "type": k} for t, k in found]})

    (tmp_path / "d.conll").write_text(CONLL)
    s = moa.load_settings(state_dir=tmp_path, confidence="self")
    ctx = moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel(small, spec="fake:small"), llm=FakeModel(big, spec="fake:big")))
    report = await aevaluate(prepare("extraction", tmp_path / "d.conll", ctx=ctx, cascade=["slm", "llm"], sweep=True), tmp_path / "ev", ctx=ctx)
    await ctx.aclose()
    configs = {c.name: c for c in report.configs}
    assert configs["slm"].metrics["f1"] == pytest.approx(2 / 3) and configs["llm"].metrics["f1"] == 1.0
    assert len(report.sweep) == 21 and report.headline == "f1"
    # the fake slm's entities carry no confidence, so no threshold escalates them: the slm's F1 throughout
    assert [(p.metrics["f1"], p.top_share) for p in report.sweep] == [(pytest.approx(2 / 3), 0.0)] * 21
    assert "| threshold | share to llm | precision | recall | F1 |" in to_markdown(report)


def test_moa_calibrate_extraction_chooses_on_f1_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def small(request: Any) -> str:  # finds the person only
        text = prompt_of(request).rsplit("Text: ", 1)[-1]
        return json.dumps({"entities": [{"text": "Alice" if "Alice" in text else "Bob", "type": "person"}]})

    slm, llm = FakeModel(small, spec="fake:small"), FakeModel(['{"entities": []}'], spec="fake:big")
    fake_tiers(monkeypatch, slm, llm)
    data = tmp_path / "d.conll"
    data.write_text("\n".join([CONLL] * 20))  # 40 sentences: 2 folds of 20
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "extraction", str(data), "--cascade", "slm,llm", "--label-map", "location=place", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["key"] == "types=person,place" and body["metric"] == "f1" and body["goal"] == "f1" and body["n"] == 40 and body["folds"] == 2
    scores = {s["name"]: s for s in body["held_out"]}
    assert scores["never escalate"]["f1"] == pytest.approx(round(2 / 3, 4)) and scores["always llm"]["f1"] == 0.0
    assert scores["chosen"]["accuracy"] is None and "--option extraction.types=person,place" in body["used_by"]
    plain = runner.invoke(app, ["calibrate", "extraction", str(data), "--cascade", "slm,llm", "--label-map", "location=place", "--goal", "within=0.1"])
    assert plain.exit_code == 0, plain.output
    assert "F1" in plain.stdout and "accuracy" not in plain.stdout and "goal within=0.1" in plain.stdout
