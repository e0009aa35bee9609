"""`moa run` end to end in a subprocess, on the embedded default model (no server, no key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]


def _moa(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOA_MEMORY_DIR": str(tmp_path / "memory"), "MOA_TIMEOUT": "600"}
    return subprocess.run([sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)


def test_triage_run_json(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    lines = (ROOT / "examples" / "data" / "reviews.txt").read_text().splitlines()
    reviews.write_text("\n".join(lines[:3]) + "\n")
    proc = _moa("run", "Filter out spam, then give the sentiment and the entities of the rest", "--input", str(reviews), "--json", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok"
    assert result["planner"]["name"] == "router" and "base model" in result["planner"]["reason"]
    assert sorted(s["agent"] for s in result["plan"]["subtasks"]) == ["extraction", "filtering", "sentiment"]
    filt = next(r for r in result["results"].values() if r["agent"] == "filtering")
    assert len(filt["items"]) == 3
    assert result["summary"]["calls"] > 0 and result["summary"]["slm_call_share"] == 1.0
    assert all(u["model"] in ("embedded:", "specialist:extraction") and u["cost"] == 0 for u in result["usage"])
    entities = next(r for r in result["results"].values() if r["agent"] == "extraction")
    assert entities["items"] and all(i["run"]["answered_by"] == "specialist" for i in entities["items"])  # the shipped entity tagger


def test_memory_add_and_query(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Returns\n\nItems can be returned within 30 days.\n\n# Shipping\n\nWe ship to Portugal and Spain.\n")
    added = _moa("memory", "add", str(doc), tmp_path=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "added" in added.stdout
    found = _moa("memory", "query", "which countries do you ship to?", "-k", "1", "--json", tmp_path=tmp_path)
    assert found.returncode == 0, found.stderr
    (passage,) = json.loads(found.stdout)
    assert "Portugal" in passage["text"] and passage["source"].endswith("notes.md")
