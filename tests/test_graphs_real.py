"""The built-in graphs from the CLI on the embedded default, by name and from YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "examples" / "data" / "reviews.txt"


def _moa(*args: str, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "MOA_MEMORY_DIR": str(tmp_path / "memory"), "MOA_TIMEOUT": "600"}
    proc = subprocess.run([sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if "--json" in args else {"stdout": proc.stdout}


def test_triage_by_name(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(REVIEWS.read_text().splitlines()[:4]) + "\n")
    result = _moa("run", "Filter out spam, then give the sentiment of the rest", "-i", str(reviews), "--graph", "triage", "--json", tmp_path=tmp_path)
    gate, rest = result["plan"]["subtasks"]
    assert gate["agent"] == "filtering" and gate["cascade"] == ["specialist", "slm"] and rest["cascade"] == ["llm"]
    gated = result["results"][gate["id"]]
    assert gated["handled"] == {"slm": 4}
    rest_items = result["results"][rest["id"]]["items"]
    assert len(rest_items) == len(gated["forwarded"])
    assert result["results"][rest["id"]]["handled"] == ({"llm": len(rest_items)} if rest_items else {})


def test_mixture_from_yaml(tmp_path: Path) -> None:
    graph = tmp_path / "moa.yaml"
    graph.write_text("graph: mixture\nparams:\n  layers: 2\n  proposers: [{temperature: 0.2}, {temperature: 0.9, style: Be brief.}]\n")
    result = _moa("run", "Name one benefit of running small language models locally.", "--graph", str(graph), "--json", tmp_path=tmp_path)
    assert sorted(result["results"]) == ["L1p1", "L1p2", "L2p1", "L2p2", "aggregate"]
    assert all(r["status"] == "ok" for r in result["results"].values())
    assert result["answer"] and result["synthesizer"] == "embedded:"
    assert result["summary"]["per_tier"]["slm"]["calls"] == 4 and result["summary"]["per_tier"]["llm"]["calls"] == 1


def test_rag_from_yaml_cites_or_says_it_does_not_know(tmp_path: Path) -> None:
    _moa("memory", "add", str(ROOT / "examples" / "data" / "handbook.md"), tmp_path=tmp_path)
    questions = tmp_path / "q.txt"
    questions.write_text("How many days do I have to return an item?\nWhat is the airspeed of an unladen swallow?\n")
    result = _moa("run", "answer from the handbook", "-i", str(questions), "--graph", str(ROOT / "examples" / "graphs" / "rag.yaml"), "--json", tmp_path=tmp_path)
    returns, swallow = result["results"]["answer"]["items"]
    found = result["results"]["retrieve"]["items"][0]["run"]["output"]["passages"]
    assert found and "30 days" in found[0]["text"] and found[0]["source"].endswith("handbook.md")
    assert returns["run"]["output"]["known"] is True
    assert all(c["source"].endswith("handbook.md") for c in returns["run"]["output"]["citations"])
    assert swallow["run"]["output"] == {"answer": "I don't know: nothing relevant was found in the memory.", "known": False, "citations": []}


def test_declared_dag_from_yaml_and_graphs_show(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(REVIEWS.read_text().splitlines()[:3]) + "\n")
    graph = ROOT / "examples" / "graphs" / "review_triage.yaml"
    result = _moa("run", "triage the reviews", "-i", str(reviews), "--graph", str(graph), "--json", tmp_path=tmp_path)
    assert [s["id"] for s in result["plan"]["subtasks"]] == ["spam", "sentiment", "entities"]
    assert result["planner"]["name"] == "given" and result["status"] == "ok"
    shown = _moa("graphs", "show", str(graph), tmp_path=tmp_path)["stdout"]
    assert "plan" in shown and "execute" in shown and "synthesize" in shown


def test_triage_from_yaml_mixture_and_rag_by_name(tmp_path: Path) -> None:
    messages = tmp_path / "m.txt"
    messages.write_text("WINNER!! Claim your free prize now, text WIN to 80086\nThe hotel staff were lovely.\n")
    triaged = _moa("run", "give the sentiment of each message", "-i", str(messages), "--graph", str(ROOT / "examples" / "graphs" / "triage.yaml"), "--json", tmp_path=tmp_path)
    assert triaged["graph"].endswith("triage.yaml") and triaged["plan"]["subtasks"][0]["cascade"] == ["specialist", "slm"]
    mixed = _moa("run", "Name one benefit of local models.", "--graph", "mixture", "--json", tmp_path=tmp_path)
    assert len([k for k in mixed["results"] if k.startswith("L")]) == 6 and "aggregate" in mixed["results"]
    unknown = _moa("run", "What is the airspeed of an unladen swallow?", "--graph", "rag", "--json", tmp_path=tmp_path)
    assert unknown["results"]["answer"]["items"][0]["run"]["output"]["known"] is False  # empty memory: "I don't know", no model call
    assert unknown["summary"]["calls"] == 0
