"""The built-in graphs (triage, mixture, rag) and YAML graphs, with fake models."""

from __future__ import annotations

from pathlib import Path

import pytest

import moa
from moa.errors import ErrorCode, UserError
from moa.graphs import mixture, plan_execute, rag, triage
from moa.models.base import GenerateRequest
from moa.testing import FakeEmbedder, FakeMemory, FakeModel, prompt_of, unreachable
from moa.workflow.catalog import load_graph
from moa.workflow.plan import Plan

SELF = moa.load_settings(confidence="self")


def fake_context(slm: FakeModel, llm: FakeModel, settings: moa.Settings = SELF) -> moa.RunContext:
    """The router planner embeds the task: with the FakeEmbedder, not MiniLM."""
    return moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=llm), embedder=FakeEmbedder())


def answers(request: GenerateRequest) -> str:
    prompt = prompt_of(request)
    if "spam or ham" in prompt:
        last = prompt.rsplit("Message:", 1)[-1]
        if "WIN" in last:
            return '{"label":"spam","confidence":0.95}'
        if "maybe" in last:
            return '{"label":"spam","confidence":0.55}'
        return '{"label":"ham","confidence":0.9}'
    return '{"label":"positive","confidence":0.9}'


async def test_triage_gates_on_the_slm_and_sends_what_passes_to_the_llm() -> None:
    slm, llm = FakeModel(answers), FakeModel(answers, spec="fake:big")
    items = ["WIN a prize now", "nice hotel", "maybe spam"]
    result = await moa.arun("Filter out spam, then give the sentiment of the rest", input=items, graph="triage", context=fake_context(slm, llm))
    gate, rest = result.plan.subtasks  # type: ignore[union-attr]
    assert gate.agent == "filtering" and gate.cascade == ["specialist", "slm"] and rest.cascade == ["llm"]
    assert result.results[gate.id].handled == {"slm": 3}
    assert result.results[gate.id].forwarded == ["nice hotel", "maybe spam"]  # kept, and the unsure one
    unsure = next(i for i in result.results[gate.id].items if i.item == "maybe spam")
    assert unsure.output.unsure and unsure.output.keep  # type: ignore[union-attr]
    assert result.results[rest.id].handled == {"llm": 2}
    assert all("Message:" in prompt_of(r) for r in slm.requests) and len(llm.requests) == 2


async def test_triage_adds_a_gate_when_the_task_names_no_filter() -> None:
    model = FakeModel(answers)
    result = await moa.arun("what is the sentiment of each message", input=["WIN now", "fine"], graph=triage.build(criterion="spam"), context=fake_context(model, model))
    assert result.plan.subtasks[0].id == "gate" and result.plan.subtasks[1].items == "gate"  # type: ignore[union-attr]
    assert [i.item for i in result.results["s1"].items] == ["fine"]


def proposer_model(name: str) -> FakeModel:
    return FakeModel(lambda r: f"{name} says {len(prompt_of(r))}", spec=f"fake:{name}")


async def test_mixture_layers_see_the_previous_answers_and_the_aggregator_answers() -> None:
    slm, llm = proposer_model("small"), FakeModel(["the final answer"], spec="fake:big")
    graph = mixture.build(proposers=[{"temperature": 0.1, "style": "Be brief."}, {"temperature": 0.9}], layers=2)
    result = await moa.arun("What is moa?", graph=graph, slm=slm, llm=llm)
    assert result.status == "ok" and result.answer == "the final answer"
    assert sorted(result.results) == ["L1p1", "L1p2", "L2p1", "L2p2", "aggregate"]
    assert [r.temperature for r in slm.requests[:2]] == [0.1, 0.9]
    first = result.results["L1p1"].items[0].output.text  # type: ignore[union-attr]
    assert all(first in prompt_of(r) for r in slm.requests[2:])  # layer 2 sees layer 1
    assert "Be brief." in prompt_of(slm.requests[0])
    assert result.results["L2p2"].items[0].output.text in prompt_of(llm.requests[0])  # type: ignore[union-attr]
    assert result.summary.per_tier["slm"].calls == 4 and result.summary.per_tier["llm"].calls == 1


async def test_mixture_keeps_going_when_a_proposer_is_down() -> None:
    down = unreachable(spec="fake:down")
    graph = mixture.build(proposers=[{"model": "slm"}, {"model": "llm"}], layers=1, aggregator="slm")
    result = await moa.arun("q", graph=graph, slm=proposer_model("ok"), llm=down)
    assert result.results["L1p2"].status == "failed" and result.results["L1p1"].status == "ok"
    assert result.answer is not None and result.status == "partial"


def test_mixture_needs_proposers_and_layers() -> None:
    with pytest.raises(UserError) as info:
        mixture.build(proposers=[])
    assert info.value.code == ErrorCode.BAD_CONFIG and "at least one proposer" in info.value.message
    with pytest.raises(UserError):
        mixture.build(layers=0)


async def _memory_ctx(tmp_path: Path, slm: FakeModel, llm: FakeModel) -> moa.RunContext:
    settings = moa.load_settings(memory_dir=tmp_path / "memory")
    ctx = moa.RunContext.create(settings, models=moa.Models(settings, slm=slm, llm=llm), memory=FakeMemory(), embedder=FakeEmbedder())
    await ctx.memory().aadd(["paris is the capital of france", "bananas are yellow"], sources=["geo.md", "fruit.md"])
    return ctx


async def test_rag_answers_with_numbered_citations_or_says_it_does_not_know(tmp_path: Path) -> None:
    llm = FakeModel(["Paris [1], not bananas [2] or [9]."], spec="fake:big")
    ctx = await _memory_ctx(tmp_path, FakeModel(), llm)
    result = await moa.arun("answer", input=["what is the capital of france", "zzz qqq xxx"], graph=rag.build(k=2, min_score=0.2), context=ctx)
    known, unknown = result.results["answer"].items
    assert known.output.known and [c.n for c in known.output.citations] == [1]  # type: ignore[union-attr]  # [2], [9]: no such passage
    assert known.output.citations[0].source == "geo.md"  # type: ignore[union-attr]
    assert "[1] paris is the capital of france" in prompt_of(llm.requests[0]) and "bananas" not in prompt_of(llm.requests[0])  # below min_score
    assert not unknown.output.known and "I don't know" in unknown.output.answer  # type: ignore[union-attr]
    assert len(llm.requests) == 1  # nothing relevant: no model call
    await ctx.aclose()


async def test_rag_answer_without_markers_lists_the_passages_it_was_given(tmp_path: Path) -> None:
    ctx = await _memory_ctx(tmp_path, FakeModel(), FakeModel(["Paris."], spec="fake:big"))
    result = await moa.arun("answer", input=["what is the capital of france"], graph=rag.build(k=2, min_score=0.2), context=ctx)
    (item,) = result.results["answer"].items
    assert [(c.n, c.explicit, c.source) for c in item.output.citations] == [(1, False, "geo.md")]  # type: ignore[union-attr]
    await ctx.aclose()


GRAPH_YAML = """\
name: review-triage
description: filter spam, then sentiment of the rest
nodes:
  - id: f
    agent: filtering
    options: {criterion: spam}
    cascade: [slm]
  - id: s
    agent: sentiment
    items: f
    threshold: 0.8
"""


def _twin() -> Plan:
    return Plan.model_validate(
        {
            "subtasks": [
                {"id": "f", "agent": "filtering", "options": {"criterion": "spam"}, "cascade": ["slm"]},
                {"id": "s", "agent": "sentiment", "items": "f", "depends_on": ["f"], "threshold": 0.8},
            ]
        }
    )


def test_yaml_graph_and_its_python_twin_have_the_same_topology(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH_YAML)
    assert load_graph(path).get_graph().draw_mermaid() == plan_execute.build(plan=_twin()).get_graph().draw_mermaid()
    (tmp_path / "t.yaml").write_text("graph: triage\nparams: {criterion: toxic language, pass_unsure: 0.6}\n")
    assert load_graph(tmp_path / "t.yaml").get_graph().draw_mermaid() == triage.build(criterion="toxic language").get_graph().draw_mermaid()
    (tmp_path / "m.yaml").write_text("graph: mixture\nparams:\n  layers: 3\n  proposers: [{model: slm}, {model: llm}]\n")
    assert load_graph(tmp_path / "m.yaml").get_graph().draw_mermaid() == mixture.build(proposers=[{}, {"model": "llm"}], layers=3).get_graph().draw_mermaid()


async def test_a_yaml_graph_runs_its_declared_dag(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH_YAML)
    model = FakeModel(answers)
    result = await moa.arun("anything", input=["WIN now", "lovely"], graph=str(path), slm=model, llm=model, settings=SELF)
    assert result.graph == str(path) and result.planner.name == "given"  # type: ignore[union-attr]
    assert [s.id for s in result.plan.subtasks] == ["f", "s"]  # type: ignore[union-attr]
    assert result.plan.subtasks[1].depends_on == ["f"]  # type: ignore[union-attr]
    assert [i.item for i in result.results["s"].items] == ["lovely"]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("nodes:\n  - id: a\n    agent: poet\n", ["line 3", "unknown agent 'poet'"]),
        ("nodes:\n  - id: a\n    agent: sentiment\n    depends_on: [b]\n  - id: b\n    agent: sentiment\n    depends_on: [a]\n", ["line 2", "cycle"]),
        ("nodes:\n  - id: a\n    options: {}\n", ["line 2", "nodes.0.agent: field required"]),
        ("nodes:\n  - id: a\n    agent: sentiment\n    threshold: high\n", ["line 4", "threshold"]),
        ("graph: plan_execute\nnodez: []\n", ["line 2", "nodez: extra inputs are not permitted"]),
        ("graph: mixture\nparams: {proposers: []}\n", ["at least one proposer"]),
        ("graph: rag\nparams: {colour: red}\n", ["line 2", "bad params"]),
        ("nodes:\n  - id: a\n    agent: sentiment\nedges: ['a -> zz']\n", ["line 4", "bad edge"]),
        ("nodes: [\n", ["line 2"]),
    ],
)
def test_bad_yaml_graphs_say_which_line(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_graph(path)
    for needle in needles:
        assert needle in info.value.message, info.value.message


def test_missing_yaml_graph_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        moa.run("x", graph=str(tmp_path / "nope.yaml"), slm=FakeModel(), llm=FakeModel())
    assert info.value.code == ErrorCode.UNKNOWN_GRAPH
