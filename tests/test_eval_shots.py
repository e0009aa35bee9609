"""``moa eval --shots``: worked examples drawn from the data set, never an evaluated item,
deterministic per seed, shared by the items with the same options, recorded in meta and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import moa
from moa.agent.context import RunContext
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.eval import aevaluate, prepare
from moa.eval.datasets import load_eval_set
from moa.eval.records import ResultStore
from moa.eval.shots import as_demonstration, draw
from moa.models.base import GenerateRequest
from moa.models.registry import Models
from moa.testing import FakeEmbedder, FakeModel, prompt_of

CITIES = ("Oslo", "Paris", "Rome", "Lima", "Kyiv", "Bern", "Doha", "Riga")
SONGS = ("Help", "Yesterday", "Hey Jude", "Let It Be", "Something", "Penny Lane", "Girl", "Michelle", "Rain", "Drive My Car")


def snips(tmp_path: Path) -> Path:
    """Two intents with their own slot names; a few utterances have no slot."""
    weather = [{"data": [{"text": "rain in "}, {"text": c, "entity": "city"}, {"text": " " + ("tomorrow" if i % 2 else "today"), "entity": "timeRange"}]} for i, c in enumerate(CITIES)]
    weather.append({"data": [{"text": "is it cold"}]})
    music = [{"data": [{"text": "play "}, {"text": s, "entity": "track"}]} for s in SONGS]
    path = tmp_path / "slots.json"
    path.write_text(json.dumps({"GetWeather": weather, "PlayMusic": music}))
    return path


def conll(tmp_path: Path) -> Path:
    rows = [f"{name}\tB-person\nvisited\tO\n{city}\tB-location\n" for name, city in zip(("Ana", "Bo", "Cy", "Di", "Ed", "Flo"), CITIES, strict=False)]
    path = tmp_path / "ner.conll"
    path.write_text("\n".join([*rows, "nothing\tO\nhere\tO\n"]))
    return path


def context(slm: FakeModel) -> RunContext:
    settings = moa.load_settings(confidence="self", cache=False, durable=False)
    return RunContext.create(settings, models=Models(settings, slm=slm, llm=slm), embedder=FakeEmbedder())


def item_of(prompt: str) -> str:
    return prompt.rsplit("Text: ", 1)[-1].removesuffix("\nOutput: ")


def demonstrated(prompt: str) -> list[str]:
    """The texts a completion prompt shows as worked examples (the item is the last ``Text:``)."""
    return [line.removeprefix("Text: ") for line in prompt.splitlines() if line.startswith("Text: ")][:-1]


def echo(request: GenerateRequest) -> str:
    """Answers nothing, so only the prompts matter."""
    return '{"entities":[]}'


async def test_slot_items_are_shown_examples_of_their_own_slots_never_an_evaluated_item(tmp_path: Path) -> None:
    data, out = snips(tmp_path), tmp_path / "ev"
    slm = FakeModel(echo)
    ctx = context(slm)
    prepared = prepare("extraction", data, ctx=ctx, limit=8, seed=3, shots=2)
    report = await aevaluate(prepared, out, ctx=ctx)
    evaluated = {e.text for e in prepared.examples}
    by_item = {item_of(prompt_of(r)): demonstrated(prompt_of(r)) for r in slm.requests}
    assert set(by_item) == evaluated and len(slm.requests) == 8
    for item, shown in by_item.items():
        assert len(shown) == 2 and not set(shown) & evaluated  # disjoint from every evaluated item
        assert all(("play" in s) == ("play" in item) for s in shown)  # an intent's own slots only
    weather = next(p for p in map(prompt_of, slm.requests) if "rain in" in item_of(p))
    assert "Types: city, timeRange." in weather and '"type":"timeRange"' in weather and '{"entities":[]}' not in weather
    assert "Tim Cook" not in weather  # the built-in examples show none of these slots
    meta = ResultStore(out).read_meta()
    assert sorted(len(d.ids) for d in meta.demonstrations) == [2, 2] and meta.config.shots == 2
    assert {i for d in meta.demonstrations for i in d.ids}.isdisjoint(e.id for e in prepared.examples)
    assert report.shots_per_item == 2.0 and report.demonstration_items == 4
    assert all(r.shots == 2 for r in ResultStore(out).read())
    assert "Worked examples: 2 per prompt requested (--shots), 2 shown per item on average, drawn from 4 items" in (out / "report.md").read_text()


def test_the_draw_is_deterministic_per_seed_and_prefers_examples_with_new_types(tmp_path: Path) -> None:
    dataset = load_eval_set(snips(tmp_path))
    evaluated = dataset.select(6, seed=0)
    first, again = draw(dataset, evaluated, 3, seed=0), draw(dataset, evaluated, 3, seed=0)
    assert first == again and draw(dataset, dataset.select(6, seed=1), 3, seed=1) != first
    for group in first:
        shown = [as_demonstration(next(e for e in dataset.examples if e.id == i), "slots") for i in group.ids]
        assert all(d["entities"] for d in shown)  # "is it cold" (no slot) comes last, only when nothing else is left


def test_a_larger_limit_keeps_the_demonstrations(tmp_path: Path) -> None:
    dataset = load_eval_set(conll(tmp_path))
    small, large = draw(dataset, dataset.select(2, 0), 2, 0), draw(dataset, dataset.select(3, 0), 2, 0)
    assert small == large


async def test_entity_items_show_spans_as_text(tmp_path: Path) -> None:
    slm = FakeModel(echo)
    ctx = context(slm)
    prepared = prepare("extraction", conll(tmp_path), ctx=ctx, limit=3, shots=2)
    await aevaluate(prepared, tmp_path / "ev", ctx=ctx)
    prompt = prompt_of(slm.requests[0])
    shown = demonstrated(prompt)
    assert len(shown) == 2 and not set(shown) & {e.text for e in prepared.examples}
    name, _, city = shown[0].split(" ")
    assert f'{{"entities":[{{"text":"{name}","type":"person"}},{{"text":"{city}","type":"location"}}]}}' in prompt


async def test_user_examples_come_first_then_the_drawn_ones(tmp_path: Path) -> None:
    slm = FakeModel(echo)
    ctx = context(slm)
    mine = {"text": "snow in Oslo now", "entities": [{"text": "Oslo", "type": "city"}, {"text": "now", "type": "timeRange"}]}
    prepared = prepare("extraction", snips(tmp_path), ctx=ctx, limit=2, shots=1, options={"examples": [mine]})
    await aevaluate(prepared, tmp_path / "ev", ctx=ctx)
    weather = [p for p in map(prompt_of, slm.requests) if "Types: city" in p]
    assert weather and all(demonstrated(p)[0] == mine["text"] and len(demonstrated(p)) == 2 for p in weather)


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"shots": 2}, ErrorCode.BAD_DATA, "leaves none out of slots (19 items); give a --limit below 19"),
        ({"shots": 17, "limit": 4}, ErrorCode.BAD_CONFIG, "--shots must be between 0 and 16"),
        ({"shots": 2, "limit": 4, "options": {"examples": [{"text": "x", "entities": [{"text": "y", "type": "city"}]}]}}, ErrorCode.INVALID_INPUT, "entity 'y' does not occur"),
        ({"limit": 4, "options": {"examples": "Oslo"}}, ErrorCode.INVALID_INPUT, "Input should be a valid list (at examples)"),
    ],
)
def test_bad_shots_or_examples_fail_before_any_model_call(tmp_path: Path, kwargs: dict[str, Any], code: ErrorCode, message: str) -> None:
    slm = FakeModel(echo)
    with pytest.raises(UserError) as caught:
        prepare("extraction", snips(tmp_path), ctx=context(slm), **kwargs)
    assert caught.value.code == code and message in caught.value.message and not slm.requests


def test_shots_need_an_agent_and_data_that_take_them(tmp_path: Path) -> None:
    reviews = tmp_path / "r.tsv"
    reviews.write_text("text\tlabel\ngood\tpositive\nbad\tnegative\nfine\tpositive\n")
    ctx = context(FakeModel(echo))
    with pytest.raises(UserError, match="'sentiment' takes none"):
        prepare("sentiment", reviews, ctx=ctx, limit=1, shots=1)
    with pytest.raises(UserError, match="takes none"):
        prepare("retrieval", snips(tmp_path), ctx=ctx, limit=1, shots=1)


async def test_a_grown_limit_that_reaches_the_demonstrations_is_refused(tmp_path: Path) -> None:
    data, out = conll(tmp_path), tmp_path / "ev"
    ctx = context(FakeModel(echo))
    await aevaluate(prepare("extraction", data, ctx=ctx, limit=2, shots=2), out, ctx=ctx)
    await aevaluate(prepare("extraction", data, ctx=ctx, limit=3, shots=2), out, ctx=ctx)  # the demonstrations are unchanged
    with pytest.raises(UserError, match="evaluated with other demonstrations"):
        await aevaluate(prepare("extraction", data, ctx=ctx, limit=6, shots=2), out, ctx=ctx)
    with pytest.raises(UserError, match="shots: 2 there, 1 now"):
        await aevaluate(prepare("extraction", data, ctx=ctx, limit=2, shots=1), out, ctx=ctx)


def test_cli_shots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "extraction", str(snips(tmp_path)), "--shots", "2", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "bad_data"


async def test_items_shown_fewer_examples_are_reported(tmp_path: Path) -> None:
    ctx = context(FakeModel(echo))
    report = await aevaluate(prepare("extraction", snips(tmp_path), ctx=ctx, limit=18, shots=2), tmp_path / "ev", ctx=ctx)
    assert report.demonstration_items == 1 and report.shots_per_item < 1
    assert any(n.startswith("18 of 18 items were shown fewer than 2 worked examples") for n in report.notes)
