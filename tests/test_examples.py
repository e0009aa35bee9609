"""Each example runs on the embedded default model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.real

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_review_triage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (EXAMPLES / "data" / "reviews.txt").read_text().splitlines()
    small = tmp_path / "reviews.txt"
    small.write_text("\n".join(lines[:3]) + "\n")
    result = _load("review_triage").main(small)
    assert result.status == "ok"
    assert {r.agent for r in result.results.values()} == {"filtering", "sentiment", "extraction"}
    assert "| item |" in capsys.readouterr().out


def test_custom_agent_and_graph(capsys: pytest.CaptureFixture[str]) -> None:
    module = _load("custom_agent_graph")
    result = module.main(module.MESSAGES[:4])
    assert result.graph == "support_triage"
    assert len(result.results["spam"].items) == 3  # the repeated message was dropped by `dedupe`
    for item in result.results["urgency"].items:
        assert isinstance(item.output.urgent, bool)  # type: ignore[union-attr]
    assert "urgency" in capsys.readouterr().out


def test_memory_retrieval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _load("memory_retrieval").main(tmp_path / "memory")
    (sub,) = [r for r in result.results.values() if r.agent == "retrieval"]
    answers = {i.item: i.output.passages[0].text for i in sub.items}  # type: ignore[union-attr]
    assert "30 days" in answers["how many days do I have to return an item?"]
    assert "Portugal" in answers["which countries do you ship to?"]
    assert "handbook.md" in capsys.readouterr().out


def test_graphs_tour(tmp_path: Path) -> None:
    tour = _load("graphs_tour")
    triage = tour.run_triage()
    gate = triage.plan.subtasks[0]  # type: ignore[union-attr]
    assert gate.agent == "filtering" and triage.results[gate.id].handled.get("slm") == triage.input_items
    rag = tour.run_rag(tmp_path / "memory")
    returns, swallow = rag.results["answer"].items
    assert returns.output.known and not swallow.output.known  # type: ignore[union-attr]
