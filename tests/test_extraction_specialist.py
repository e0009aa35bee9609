"""The extraction agent's specialist: an entity tagger first in the cascade (unit tests).

A tiny tagger is trained on synthetic sentences with the fake hashing embedder, stored where ``moa
train extraction`` stores it, and used by the agent through a run context; the slm is a fake. The
shipped tagger is never used here: it was made with MiniLM, and these contexts embed with the fake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_tagger import corpus
from typer.testing import CliRunner

import moa
from moa.agent.learn import tags_entities, train_tagging_agent
from moa.agents.extraction import SHIPPED_TAGGER, ExtractionInput
from moa.agents.extraction import agent as extraction
from moa.cli.main import app
from moa.learning.store import describe_key, learned_files, tagger_path
from moa.learning.tagger import Tagger
from moa.testing import FakeEmbedder, FakeModel

PEOPLE_AND_PLACES = ["person", "location"]
SLM_ANSWER = json.dumps({"entities": [{"text": "Zelda", "type": "person"}]})


def context(tmp_path: Path, slm: FakeModel | None = None, **settings: Any) -> moa.RunContext:
    chosen = moa.load_settings(state_dir=tmp_path / "state", **settings)
    fake = slm or FakeModel([SLM_ANSWER])
    return moa.RunContext.create(chosen, models=moa.Models(chosen, slm=fake, llm=fake), embedder=FakeEmbedder())


async def trained(tmp_path: Path, label_map: dict[str, str] | None = None) -> Tagger:
    ctx = context(tmp_path)
    sentences = [(t, [[(label_map or {}).get(str(k), k), s, e] for k, s, e in spans]) for t, spans in corpus()]
    tagger, _, path = await train_tagging_agent(ctx, extraction, sentences, source="synthetic", label_map=label_map)
    assert path == tagger_path(ctx.settings, "extraction", tagger.key) and path.is_file()
    await ctx.aclose()
    return tagger


def conll(path: Path, sentences: list[tuple[str, list[list[object]]]], rename: dict[str, str] | None = None) -> Path:
    """Write ``(text, [(type, start, end)])`` sentences as CoNLL (one-token entities: each gets ``B-``), types renamed."""
    lines = []
    for text, spans in sentences:
        starts = {start: (rename or {}).get(str(kind), str(kind)) for kind, start, _ in spans}
        offset = 0
        for token in text.split(" "):
            lines.append(f"{token}\t{'B-' + starts[offset] if offset in starts else 'O'}")
            offset += len(token) + 1
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def item(types: list[str], text: str = "yesterday Zelda flew to Perth again") -> ExtractionInput:
    return extraction.make_input(text, {"types": types})


def test_key_and_serving_rule() -> None:
    assert extraction.specialist_key(item(["person", "location"])) == "types=location,person"
    assert extraction.specialist_key(item(["location", "person"])) == "types=location,person"  # order does not matter
    assert extraction.serves_key("types=location,person", item(["person"]))
    assert extraction.serves_key("types=location,person", item(["person", "date"]))  # dates come from the recogniser
    assert not extraction.serves_key("types=location,person", item(["person", "product"]))
    assert not extraction.serves_key("labels=a,b", item(["person"]))
    assert extraction.options_for_key("types=location,person") == {"types": ["location", "person"]}
    assert describe_key("types=location,person") == "types location, person"
    assert tags_entities(extraction) and not tags_entities(moa.kit.builtin_agents()["sentiment"])


async def test_the_tagger_answers_first_with_exact_spans_and_dates(tmp_path: Path) -> None:
    await trained(tmp_path)
    ctx = context(tmp_path)
    text = "yesterday Zelda flew to Perth again on Monday"
    run = await extraction.run(ctx, item(["person", "location", "date"], text))
    assert run.answered_by == "specialist" and run.attempts[0].model == "specialist:extraction"
    found = {(e.type, e.text) for e in run.output.entities}
    assert ("location", "Perth") in found and ("date", "Monday") in found and ("date", "yesterday") in found
    assert all(text[e.start : e.end] == e.text for e in run.output.entities)
    only_places = await extraction.run(ctx, item(["location"], text))
    assert {e.type for e in only_places.output.entities} == {"location"}  # types not requested are left out
    await ctx.aclose()


async def test_a_weak_tagger_answer_escalates_to_the_slm(tmp_path: Path) -> None:
    await trained(tmp_path)
    slm = FakeModel([SLM_ANSWER])
    ctx = context(tmp_path, slm=slm, thresholds={"extraction": 1.0})  # nothing is sure enough
    run = await extraction.run(ctx, item(["person", "location"]))
    assert [a.step for a in run.attempts] == ["specialist", "slm"] and run.answered_by == "slm"
    assert run.attempts[0].confidence is not None and run.attempts[0].confidence < 1.0
    assert [e.text for e in run.output.entities] == ["Zelda"] and len(slm.requests) == 1
    await ctx.aclose()


async def test_types_the_tagger_lacks_go_to_the_slm_and_say_why(tmp_path: Path) -> None:
    await trained(tmp_path)
    ctx = context(tmp_path)
    data = item(["person", "product"])
    assert extraction.specialist_for(ctx, data) is None
    run = await extraction.run(ctx, data)
    assert [a.step for a in run.attempts] == ["slm"]
    [warning] = extraction.learned_warnings(ctx, data)
    assert "(types location, person) exists but this task asks for (types person, product), so it is not used" in warning
    assert "--option extraction.types=location,person" in warning
    assert extraction.learned_warnings(ctx, item(["person"])) == []
    await ctx.aclose()


async def test_an_exactly_keyed_tagger_comes_before_a_wider_one(tmp_path: Path) -> None:
    wide = await trained(tmp_path)
    narrow = await trained(tmp_path, label_map={"location": "place"})
    assert wide.key != narrow.key
    ctx = context(tmp_path)
    assert extraction.specialist_for(ctx, item(["person", "place"])).key == narrow.key  # type: ignore[union-attr]
    assert extraction.specialist_for(ctx, item(["person", "location"])).key == wide.key  # type: ignore[union-attr]
    assert {i.key for i in learned_files(ctx.settings, "extraction")} == {wide.key, narrow.key}
    await ctx.aclose()


def test_moa_agents_names_the_shipped_tagger_unless_it_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("MOA_SHIPPED_SPECIALISTS", "1")
    said = extraction.shipped_learned(moa.load_settings())
    assert said == "shipped entity tagger (types creative-work, location, organization, person, product; date by rules)"
    shown = CliRunner().invoke(app, ["agents"])
    assert shown.exit_code == 0 and "shipped entity tagger (types" in shown.output, shown.output
    monkeypatch.setenv("MOA_SHIPPED_SPECIALISTS", "0")
    assert "shipped entity tagger" not in CliRunner().invoke(app, ["agents"]).output


def test_the_shipped_tagger_is_small_and_documented() -> None:
    assert SHIPPED_TAGGER.is_file() and SHIPPED_TAGGER.stat().st_size < 5_000_000
    provenance = json.loads(SHIPPED_TAGGER.with_suffix(".json").read_text())
    assert provenance["licence"] == "CC BY 4.0" and len(provenance["data_sha256"]) == 64 and "moa train extraction" in provenance["command"]
    tagger = Tagger.load(SHIPPED_TAGGER)
    assert tagger.serves(list(moa.agents.extraction.DEFAULT_TYPES), ["date"]) and tagger.embedder == "minilm"


def test_cli_trains_a_tagger_with_a_label_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = conll(tmp_path / "d.conll", corpus(), rename={"person": "corporation"})
    create = moa.RunContext.create
    monkeypatch.setattr(moa.RunContext, "create", lambda settings, **kw: create(settings, embedder=FakeEmbedder(), **kw))
    result = CliRunner().invoke(app, ["train", "extraction", str(data), "--label-map", "corporation=organization", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["key"] == "types=location,organization" and report["entities"] == {"location": 24, "organization": 24}
    assert "--option extraction.types=location,organization" in report["used_by"] and Path(report["path"]).is_file()
    wrong = CliRunner().invoke(app, ["train", "extraction", str(tmp_path / "x.tsv")])
    assert wrong.exit_code != 0 and "CoNLL" in wrong.output


async def test_a_tagger_that_cannot_embed_passes_the_item_to_the_slm(tmp_path: Path) -> None:
    from moa.errors import ErrorCode, UserError

    await trained(tmp_path)

    class Broken(FakeEmbedder):
        async def aembed(self, texts: Any) -> list[list[float]]:
            raise UserError(ErrorCode.EMBEDDER_UNAVAILABLE, "the embedder is not installed")

    chosen = moa.load_settings(state_dir=tmp_path / "state")
    fake = FakeModel([SLM_ANSWER])
    ctx = moa.RunContext.create(chosen, models=moa.Models(chosen, slm=fake, llm=fake), embedder=Broken())
    run = await extraction.run(ctx, item(["person", "location"], "we met Zoran near Oslo today"))
    assert [a.step for a in run.attempts] == ["specialist", "slm"] and run.answered_by == "slm"
    assert run.attempts[0].error is not None and run.attempts[0].error.code == ErrorCode.EMBEDDER_UNAVAILABLE
    await ctx.aclose()


async def test_eval_scores_the_tagger_alone_and_with_escalation(tmp_path: Path) -> None:
    from moa.eval import aevaluate, prepare

    await trained(tmp_path)
    data = conll(tmp_path / "dev.conll", corpus()[:8])
    slm = FakeModel([json.dumps({"entities": []})])
    ctx = context(tmp_path, slm=slm, confidence="self", durable=False)
    alone = await aevaluate(prepare("extraction", data, ctx=ctx, cascade=["specialist"]), tmp_path / "ev1", ctx=ctx)
    assert alone.metrics["f1"] > 0.9 and slm.requests == []  # its own training sentences: nearly all right
    both = await aevaluate(prepare("extraction", data, ctx=ctx, cascade=["specialist", "slm"], threshold=1.0), tmp_path / "ev2", ctx=ctx)
    assert len(slm.requests) == 8 and both.metrics["f1"] == 0.0  # every item escalated to an slm that finds nothing
    await ctx.aclose()
