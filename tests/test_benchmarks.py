"""The runtime benchmarks' core functions at tiny sizes with fakes, so the scripts do not rot.

These check the structure of what each benchmark produces, never its timings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moa  # noqa: E402
from benchmarks import batch, budget, cache, faults, memory, overhead, parallelism  # noqa: E402
from benchmarks._common import fit, machine, table  # noqa: E402
from benchmarks.latency_server import create_app, instance, latency_of, marker  # noqa: E402
from moa.agents.sentiment import SentimentInput  # noqa: E402
from moa.agents.sentiment import agent as sentiment  # noqa: E402
from moa.models.base import Capabilities, GenerateRequest  # noqa: E402
from moa.models.cache import CachedBackend, CallCache  # noqa: E402
from moa.models.registry import Models  # noqa: E402
from moa.testing import FakeEmbedder, FakeModel  # noqa: E402

ANSWER = '{"label":"positive","confidence":0.9}'


def _rendered(module: Any, results: dict[str, Any]) -> str:
    results = {"machine": machine(), "load_after": [0.0, 0.0, 0.0], **results}
    json.dumps(results, default=str)  # what --json writes
    text: str = module.render(results)
    assert "| " in text and "machine: " in text
    return text


def test_common_fit_and_table() -> None:
    k, b = fit([10, 50, 100], [0.012, 0.052, 0.102])
    assert k == pytest.approx(0.001) and b == pytest.approx(0.002)
    assert table(["a", "b"], [["x", 1.23456]]).splitlines() == ["| a | b |", "|---|---:|", "| x | 1.23 |"]


async def test_overhead_measures_every_config_at_every_size(tmp_path: Path) -> None:
    results = await overhead.measure([2, 4], 1, tmp_path, profile=True)
    assert [(r["subtasks"], r["config"]) for r in results["rows"]] == [(n, c) for n in (2, 4) for c in overhead.CONFIGS]
    assert all(r["ms_per_subtask"] > 0 and len(r["runs_s"]) == 1 for r in results["rows"])
    assert set(results["fit"]) == set(overhead.CONFIGS)
    assert set(results["profile"]) == {"moa", "moa durable"}
    assert "ms/subtask" in _rendered(overhead, results)


def test_parallelism_shapes_know_their_paths() -> None:
    shapes = {s.name: s for s in parallelism.shapes([3], [(2, 3)], 0.5)}
    assert shapes["independent-3"].sums() == {"sequential_s": 1.5, "barrier_s": 0.5, "critical_s": 0.5}
    assert shapes["chains-2x3"].sums() == {"sequential_s": 3.0, "barrier_s": 1.5, "critical_s": 1.5}
    assert shapes["chains-2x3"].critical_path() == ["c0_0", "c0_1", "c0_2"]
    assert shapes["skewed"].sums() == {"sequential_s": 4.0, "barrier_s": 3.0, "critical_s": 2.0}
    request = parallelism.request_for(shapes["skewed"], "a1")
    assert latency_of(request.prompt or "", 9.0) == 1.5


async def test_parallelism_runs_each_shape_against_a_fake_target(tmp_path: Path) -> None:
    shapes = parallelism.shapes([3], [(2, 2)], 0.01)
    rows = await parallelism.measure(parallelism.FakeTarget(0.01), shapes, 1, tmp_path)
    assert [r["shape"] for r in rows] == ["independent-3", "chains-2x2", "skewed"]
    assert rows[0]["peak_in_flight"] == 3  # every independent subtask in flight at once
    for r in rows:
        assert {"critical_measured_s", "direct_dag_s", "moa_s", "moa_durable_s", "x_critical", "x_direct_dag"} <= r.keys()
    _rendered(parallelism, {"rows": rows, "latency": 0.01})


def test_latency_server_answers_valid_json_for_the_agents_schema() -> None:
    from fastapi.testclient import TestClient

    data = SentimentInput(text="fine", labels=["positive", "negative", marker(0)])
    caps = Capabilities(chat=False, completion=True, json_schema=True, logprobs=False)
    request = sentiment.request(data, caps)
    decode = sentiment.decode_type(data, caps)
    client = TestClient(create_app(latency=0.0))
    body = client.post("/v1/completions", json={"model": "bench", "prompt": request.prompt, "json_schema": request.json_schema}).json()
    assert decode.model_validate_json(body["choices"][0]["text"]).label == "positive"  # type: ignore[attr-defined]
    assert client.get("/stats", params={"reset": 1}).json()["requests"] == 1
    assert client.get("/stats").json()["requests"] == 0
    assert instance({"type": "object", "properties": {"n": {"type": "integer", "minimum": 2}}, "required": ["n"]}) == {"n": 2}


async def test_batch_runs_moa_and_direct_over_the_same_items(tmp_path: Path) -> None:
    model = FakeModel([ANSWER])

    async def direct(request: GenerateRequest) -> str:
        return (await model.generate(request)).text

    texts = [f"text {i}" for i in range(5)]
    results = await batch.measure(texts, ["positive"] * 4 + ["negative"], model, direct, tmp_path, configs=list(batch.CONFIGS), block=2)
    assert [r["config"] for r in results["rows"]] == list(batch.CONFIGS)
    for r in results["rows"]:
        assert (r["items"], r["answered"], r["accuracy"], len(r["block_walls_s"])) == (5, 5, 0.8, 3)
        assert "x_direct_items_per_s" in r and "x_direct_median_block" in r
    assert _rendered(batch, results).count("| moa") == 2


@pytest.mark.real  # measures real Chroma
async def test_memory_measures_embedder_and_both_ways_into_chroma(tmp_path: Path) -> None:
    chunks = [f"chunk number {i} about wings and flow" for i in range(12)]
    short = [f"query {i} on flow" for i in range(6)]
    results = await memory.measure(FakeEmbedder(), chunks, short, [40], n_queries=4, k=3, noise=0.02, tmp=tmp_path)
    assert [(r["chunks"], r["way"]) for r in results["rows"]] == [(40, "moa"), (40, "chroma")]
    assert all(0 <= r["recall_at_3"] <= 1 and 0 <= r["source_recall_at_3"] <= 1 and r["queries"] == 4 for r in results["rows"])
    assert results["embedder"]["chunks"] == 12 and results["estimate"][0]["chunks"] == 40
    _rendered(memory, {**results, "embedder_name": "hash64"})


async def test_budget_benchmark_reports_what_each_scenario_spent(tmp_path: Path) -> None:
    runs = [await budget.measure(name, budget=40 if name != "prompt-sized" else 400, concurrency=4, n=6, delay=0.0, state_dir=tmp_path / name) for name in budget.SCENARIOS]
    for r in runs:
        assert r["status"] == "stopped" and r["spent"] <= r["limit"] + r["largest_call"] and r["answered"] + r["refused"] == 6
    _rendered(budget, {"runs": runs, "args": {"n": 6, "concurrency": 4, "delay": 0.0}})


async def test_cache_benchmark_runs_cold_then_warm(tmp_path: Path) -> None:
    model = FakeModel([ANSWER])
    model.price_per_1k = (1.0, 1.0)
    settings = moa.load_settings(state_dir=tmp_path, cache=True, cascade=["slm"])
    cached = CachedBackend(model, CallCache(tmp_path / "cache.sqlite", settings.cache_ttl))
    ctx = moa.RunContext.create(settings, models=Models(settings, slm=cached, llm=model))
    try:
        results = await cache.measure(ctx, [f"text {i}" for i in range(6)], repeats=2)
    finally:
        await ctx.aclose()
        cached.cache.close()
    assert results["items_per_run"] == 3 and len(results["rounds"]) == 2
    cold, warm = results["median"]["cold"], results["median"]["warm"]
    assert (cold["calls"], cold["cached_calls"], warm["calls"], warm["cached_calls"]) == (3, 0, 3, 3)
    assert cold["cost"] > 0 and warm["cost"] == 0 and results["warm_over_cold"]["cost"] == 0
    assert len(model.requests) == 6  # 3 per cold round; the warm rounds never reach the model
    _rendered(cache, {**results, "price_per_1k": [1.0, 1.0]})


@pytest.mark.real  # the real openai / ollama clients against the fault server on 127.0.0.1
async def test_faults_benchmark_counts_tried_survived_lost() -> None:
    rows = await faults.measure("api", ("openai",), only={"not_json"})
    assert [(r["tier"], r["mode"]) for r in rows] == [(tier, "not_json") for tier in faults.TIERS]
    assert all(r["survived"] and r["lost"] == 0 for r in rows)
    total = faults.totals(rows)
    assert total["faults_tried"] == total["runs_survived"] == len(faults.TIERS) and total["results_lost"] == 0
    text = _rendered(faults, {"rows": rows, "via": "api", "protocols": ["openai"]})
    assert "| faults tried | runs survived | results lost |" in text and "not_json" in text


async def test_server_load_core(tmp_path: Path) -> None:
    from benchmarks import server_load

    app, key = server_load.app_for(tmp_path, workers=2, delay=0.0)
    with server_load.serving(app) as url:
        load = await server_load.drive(url, key, runs=4, clients=2)
    assert load["finished"] == 4 and load["lost"] == 0 and load["duplicated"] == 0
    assert "runs/s" in _rendered(server_load, {"load": load, "workers": 2})
