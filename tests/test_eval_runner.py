"""Running evals with fake models: resume, model down, sweep and report without model calls,
each kind of data end to end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import moa
from moa.agent.context import RunContext
from moa.agent.learn import task_for, train_agent
from moa.errors import ErrorCode, RunError, UserError
from moa.eval import aevaluate, prepare, rerender
from moa.eval.records import ResultStore
from moa.learning.labelled import LabelledSet
from moa.memory.chroma import Memory, Passage
from moa.models.base import GenerateRequest
from moa.models.registry import Models
from moa.testing import FakeEmbedder, FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents

POSITIVE = ("great", "lovely", "superb", "fine", "wonderful")
NEGATIVE = ("awful", "dull", "bad", "boring", "poor")


def reviews(tmp_path: Path, n: int = 12) -> Path:
    rows = [f"a {(POSITIVE if i % 2 else NEGATIVE)[i % 5]} film number {i}\t{i % 2}" for i in range(n)]
    path = tmp_path / "reviews.tsv"
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return path


def item_of(request: GenerateRequest) -> str:
    return prompt_of(request).rsplit("Text:", 1)[-1]


def oracle(request: GenerateRequest) -> str:
    """A sentiment model that is right, except on item 4 (a negative film it calls positive)."""
    item = item_of(request)
    positive = any(w in item for w in POSITIVE) or "number 4\n" in item
    return json.dumps({"label": "positive" if positive else "negative", "confidence": 0.9})


def context(slm: FakeModel, **settings: Any) -> RunContext:
    chosen = moa.load_settings(confidence="self", cache=False, durable=False, **settings)
    return RunContext.create(chosen, models=Models(chosen, slm=slm, llm=slm), embedder=FakeEmbedder())


LABELS = {"label_map": {"1": "positive", "0": "negative"}}


class Stop(Exception):
    pass


async def test_an_interrupted_eval_resumes_without_recomputing_an_item(tmp_path: Path) -> None:
    data, out = reviews(tmp_path), tmp_path / "ev"
    slm = FakeModel(oracle, max_concurrency=1)
    ctx = context(slm)

    def interrupt(done: int, total: int) -> None:
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx, on_progress=interrupt)
    assert len(slm.requests) == 5 and len(ResultStore(out).read()) == 5
    report = await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    assert len(slm.requests) == 12  # the 7 items left, once each
    assert report.items == 12 and report.metrics["accuracy"] == pytest.approx(11 / 12)
    assert report.metrics["auc"] == pytest.approx(33 / 36)  # the wrong item ties with the 6 positives (all at 0.9)
    assert report.baselines == {"always negative": pytest.approx({"accuracy": 0.5, "macro_f1": 1 / 3}), "always positive": pytest.approx({"accuracy": 0.5, "macro_f1": 1 / 3})}
    assert sorted(r.id for r in ResultStore(out).read()) == sorted(str(i) for i in range(12))
    assert report.usage.per_tier["slm"].calls == 12 and len(ResultStore(out).read_meta().sessions) == 2


async def test_a_larger_limit_only_runs_the_new_items_and_another_eval_is_refused(tmp_path: Path) -> None:
    data, out = reviews(tmp_path), tmp_path / "ev"
    slm = FakeModel(oracle)
    ctx = context(slm)
    await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], limit=4, **LABELS), out, ctx=ctx)
    await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], limit=8, **LABELS), out, ctx=ctx)
    assert len(slm.requests) == 8
    with pytest.raises(UserError, match="holds the results of another eval .*seed: 0 there, 1 now"):
        await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], seed=1, **LABELS), out, ctx=ctx)


async def test_a_model_going_down_stops_the_eval_and_keeps_what_finished(tmp_path: Path) -> None:
    data, out = reviews(tmp_path, 6), tmp_path / "ev"
    calls = 0

    def flaky(request: GenerateRequest) -> str:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RunError(ErrorCode.MODEL_UNREACHABLE, "cannot reach the model server at http://127.0.0.1:9; start it")
        return oracle(request)

    ctx = context(FakeModel(flaky, max_concurrency=1))
    with pytest.raises(RunError) as caught:
        await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    assert caught.value.code == ErrorCode.MODEL_UNREACHABLE
    assert "2 of 6 items are kept" in caught.value.message and "run the same command again" in caught.value.message
    assert len(ResultStore(out).read()) == 2 and (out / "report.md").is_file()
    healthy = FakeModel(oracle)
    ctx = context(healthy)
    report = await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    assert len(healthy.requests) == 4 and report.items == 6


async def test_a_half_written_last_line_is_dropped(tmp_path: Path) -> None:
    data, out = reviews(tmp_path, 4), tmp_path / "ev"
    ctx = context(FakeModel(oracle))
    await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    assert len(ResultStore(out).read()) == 3 and results.read_text().endswith("}\n")
    slm = FakeModel(oracle)
    ctx = context(slm)
    await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    assert len(slm.requests) == 1 and len(ResultStore(out).read()) == 4


async def train_specialist_on(ctx: RunContext, data: Path) -> None:
    agent = builtin_agents()["sentiment"]
    labelled = moa.eval.load_eval_set(data, **LABELS)
    train = LabelledSet(texts=[e.text for e in labelled.examples] * 3, labels=[e.gold for e in labelled.examples] * 3, source="train")
    await train_agent(ctx, agent, task_for(agent, {}, ["negative", "positive"]), train)  # type: ignore[arg-type]


async def test_sweep_runs_every_step_once_and_the_report_replays_the_cascade(tmp_path: Path) -> None:
    data, out = reviews(tmp_path, 10), tmp_path / "ev"
    slm = FakeModel(oracle)
    ctx = context(slm)
    await train_specialist_on(ctx, data)
    report = await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["specialist", "slm"], threshold=0.8, sweep=True, **LABELS), out, ctx=ctx)
    assert len(slm.requests) == 10  # the slm answered every item, for the sweep
    records = ResultStore(out).read()
    assert all([a.step for a in r.attempts] == ["specialist", "slm"] for r in records)
    used_slm = sum(r.attempts[1].used for r in records)
    assert used_slm == sum((r.attempts[0].confidence or 0) < 0.8 for r in records)
    assert report.usage.per_tier.get("slm", moa.usage.TierTotals()).calls == used_slm  # cost: only what the cascade used
    names = [c.name for c in report.configs]
    assert names == ["specialist", "slm", "specialist→slm @0.8"]
    assert {p.threshold for p in report.sweep} >= {0.0, 0.5, 0.8, 1.0}
    first, last = report.sweep[0], report.sweep[-1]
    assert first.top_share == 0.0 and first.metrics == report.configs[0].metrics  # t=0: the specialist alone
    assert last.metrics == report.configs[1].metrics  # t=1: everything escalates to the slm

    slm.fail_with = RunError(ErrorCode.MODEL_UNREACHABLE, "down")  # rendering again calls no model
    again = rerender(out)
    assert again.sweep == report.sweep and len(slm.requests) == 10
    assert {"cost.png", "sweep.png", "reliability.png"} <= set(again.plots)


async def test_a_plain_cascade_sweeps_only_up_to_its_threshold(tmp_path: Path) -> None:
    data, out = reviews(tmp_path, 10), tmp_path / "ev"
    ctx = context(FakeModel(oracle))
    await train_specialist_on(ctx, data)
    report = await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["specialist", "slm"], threshold=0.6, **LABELS), out, ctx=ctx)
    assert report.sweep and max(p.threshold for p in report.sweep) >= 0.6
    confident = [r for r in ResultStore(out).read() if len(r.attempts) == 1]
    top = max(r.attempts[0].confidence or 0 for r in confident)
    assert all(p.threshold <= top for p in report.sweep)  # above that, the slm answers are unknown
    assert any("--sweep" in n for n in report.notes)


async def test_report_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = reviews(tmp_path, 6), tmp_path / "ev"
    ctx = context(FakeModel(oracle))
    await aevaluate(prepare("sentiment", data, ctx=ctx, cascade=["slm"], **LABELS), out, ctx=ctx)
    md = (out / "report.md").read_text()
    assert "| accuracy | 0.8333 |" in md and "| tier | calls |" in md and "| slm | 6 |" in md
    assert "![reliability](reliability.png)" in md
    assert json.loads((out / "report.json").read_text())["metrics"]["accuracy"] == pytest.approx(5 / 6)
    png = (out / "reliability.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    monkeypatch.setattr("moa.eval.plots._pyplot", lambda: None)
    bare = rerender(out)
    assert bare.plots == [] and any("matplotlib is not installed" in n for n in bare.notes)


async def test_entities_and_slots(tmp_path: Path) -> None:
    conll = tmp_path / "d.conll"
    conll.write_text("I\tO\nlove\tO\nNew\tB-location\nYork\tI-location\n\nBob\tB-person\nsings\tO\n")

    def ner(request: GenerateRequest) -> str:
        text = prompt_of(request).rsplit("Text:", 1)[-1]
        found = [{"text": "New York", "type": "location"}] if "York" in text else [{"text": "sings", "type": "person"}]
        return json.dumps({"entities": found})

    ctx = context(FakeModel(ner))
    report = await aevaluate(prepare("extraction", conll, ctx=ctx), tmp_path / "ner", ctx=ctx)
    assert report.metrics == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    snips = tmp_path / "s.json"
    snips.write_text(json.dumps({"GetWeather": [{"data": [{"text": "rain in "}, {"text": "Oslo", "entity": "city"}]}]}))
    requests: list[str] = []

    def slots(request: GenerateRequest) -> str:
        requests.append(prompt_of(request))
        return json.dumps({"entities": [{"text": "oslo", "type": "city"}]})

    ctx = context(FakeModel(slots))
    report = await aevaluate(prepare("extraction", snips, ctx=ctx), tmp_path / "slots", ctx=ctx)
    assert report.metrics["f1"] == 1.0 and "Types: city." in requests[0]


class VectorMemory(Memory):
    """Brute-force cosine search over FakeEmbedder vectors (a stand-in for Chroma)."""

    def __init__(self) -> None:
        self.embedder = FakeEmbedder()
        self.rows: list[tuple[str, str, np.ndarray]] = []

    async def aadd(self, texts: Sequence[str], *, sources: Any = None, ids: Any = None, metadatas: Any = None) -> list[str]:
        vectors = self.embedder.embed(list(texts))
        self.rows += [(i, t, np.asarray(v)) for i, t, v in zip(ids, texts, vectors, strict=True)]
        return list(ids)

    async def aquery(self, text: str, k: int = 5) -> list[Passage]:
        q = np.asarray(self.embedder.embed([text])[0])
        ranked = sorted(self.rows, key=lambda r: -float(r[2] @ q))[:k]
        return [Passage(id=i, text=t, score=float(v @ q), source=i) for i, t, v in ranked]

    def count(self) -> int:
        return len(self.rows)


async def test_retrieval_ranks_the_corpus(tmp_path: Path) -> None:
    folder = tmp_path / "cran"
    folder.mkdir()
    (folder / "cran.all.1400").write_text(".I 1\n.T\nwing lift\n.W\nwing lift wing\n.I 2\n.T\nheat slab\n.W\nheat slab heat\n")
    (folder / "cran.qry").write_text(".I 001\n.W\nwing lift\n.I 009\n.W\nheat slab\n")
    (folder / "cranqrel").write_text("1 1 1\n1 2 -1\n2 2 2\n")
    ctx = context(FakeModel(["{}"]))
    memory = VectorMemory()
    report = await aevaluate(prepare("retrieval", folder, ctx=ctx), tmp_path / "ev", ctx=ctx, memory=memory)
    assert memory.count() == 2
    assert report.metrics == {"ndcg@10": 1.0, "recall@10": 1.0, "mrr": 1.0}
    assert [r.prediction[0] for r in ResultStore(tmp_path / "ev").read()] == ["1", "2"]


async def test_a_graph_answers_questions(tmp_path: Path) -> None:
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"id": "1", "question": "Which is deeper?", "answer": "Mariana Trench"}, {"id": "2", "question": "Which is faster?", "answer": "falcon"}]))
    ctx = context(FakeModel(["the Mariana Trench"]))
    report = await aevaluate(prepare("mixture", qa, ctx=ctx), tmp_path / "ev", ctx=ctx)
    assert report.metrics == {"exact_match": 0.5, "f1": 0.5}
    assert report.usage.calls == 2 * 7  # 3 proposers x 2 layers + the aggregator, per question


async def test_targets_that_do_not_fit_the_data(tmp_path: Path) -> None:
    ctx = context(FakeModel(["{}"]))
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"question": "q?", "answer": "a"}]))
    with pytest.raises(UserError, match="evaluated with a graph"):
        prepare("sentiment", qa, ctx=ctx)
    with pytest.raises(UserError, match="graphs are evaluated on question-answering data"):
        prepare("mixture", reviews(tmp_path), ctx=ctx, **LABELS)
    with pytest.raises(UserError, match="not a classification agent"):
        prepare("extraction", reviews(tmp_path), ctx=ctx)
    with pytest.raises(UserError, match="unknown agent or graph 'poet'"):
        prepare("poet", qa, ctx=ctx)
    with pytest.raises(UserError, match="no specialist is trained"):
        prepare("sentiment", reviews(tmp_path), ctx=ctx, cascade=["specialist", "slm"], **LABELS)
    with pytest.raises(UserError, match="--sweep needs"):
        prepare("sentiment", reviews(tmp_path), ctx=ctx, cascade=["slm"], sweep=True, **LABELS)
    with pytest.raises(UserError, match="--limit must be at least 1"):
        prepare("sentiment", reviews(tmp_path), ctx=ctx, limit=0, **LABELS)
