"""The templates in agents/ and graphs/ work as copied, and a third-party package's entry points
register agents and graphs the way moa's own built-ins are registered."""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType

import pytest

import moa
from moa.models.base import GenerateRequest
from moa.testing import FakeModel
from moa.workflow import catalog

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """The templates installed as a third-party plugin would be: importable modules named in entry points."""
    urgency = _load(ROOT / "agents" / "urgency.py", "moa_plugin_urgency")
    triage = _load(ROOT / "graphs" / "support_triage.py", "moa_plugin_support_triage")
    real = catalog.entry_points

    def entry_points(group: str) -> list[EntryPoint]:
        extra = {
            catalog.AGENTS_GROUP: [EntryPoint("urgency", "moa_plugin_urgency:agent", group)],
            catalog.GRAPHS_GROUP: [EntryPoint("support_triage", "moa_plugin_support_triage", group)],
        }
        return [*real(group=group), *extra.get(group, [])]

    monkeypatch.setattr(catalog, "entry_points", entry_points)
    catalog._entries.cache_clear()
    yield urgency, triage
    catalog._entries.cache_clear()
    for name in ("moa_plugin_urgency", "moa_plugin_support_triage"):
        sys.modules.pop(name, None)


def answers(request: GenerateRequest) -> str:
    props = (request.json_schema or {}).get("properties", {})
    labels = props.get("label", {}).get("enum") or ["positive"]
    return json.dumps({"label": labels[0], "confidence": 0.9, "reason": "r"})


def test_entry_points_register_a_third_party_agent_and_graph_beside_the_builtins(plugin: tuple[ModuleType, ModuleType]) -> None:
    assert sorted(catalog.builtin_agents()) == ["extraction", "filtering", "retrieval", "sentiment", "urgency"]
    assert sorted(catalog.builtin_graphs()) == ["mixture", "plan_execute", "rag", "support_triage", "triage"]
    assert catalog.get_graph("support_triage") is plugin[1]


async def test_a_registered_plugin_graph_runs_by_name_with_its_agent(plugin: tuple[ModuleType, ModuleType]) -> None:
    model = FakeModel(answers)
    messages = ["card charged twice!", "WIN a cruise", "card charged twice!"]
    result = await moa.arun("triage", input=messages, graph="support_triage", slm=model, llm=model, settings=moa.load_settings(durable=False))
    assert result.graph == "support_triage" and result.status == "ok"
    assert len(result.results["spam"].items) == 2  # dedupe dropped the repeated message
    assert {r.agent for r in result.results.values()} == {"filtering", "urgency", "sentiment"}


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    real = catalog.entry_points
    monkeypatch.setattr(catalog, "entry_points", lambda group: [*real(group=group), EntryPoint("broken", "no_such_module:agent", group)])
    catalog._entries.cache_clear()
    try:
        with capture_logs() as logs:
            agents = catalog.builtin_agents()
    finally:
        catalog._entries.cache_clear()
    assert "broken" not in agents and "sentiment" in agents
    assert any(e["event"] == "plugin_not_loaded" and e["name"] == "broken" for e in logs)
