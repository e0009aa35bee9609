"""The CLI: listing commands, error exits, JSON errors (no model calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moa.cli.main import app, main

runner = CliRunner()


def test_agents_lists_the_builtins() -> None:
    result = runner.invoke(app, ["agents"])
    assert result.exit_code == 0
    for name in ("sentiment", "extraction", "filtering", "retrieval"):
        assert name in result.stdout


def test_graphs_lists_plan_execute() -> None:
    result = runner.invoke(app, ["graphs"])
    assert result.exit_code == 0 and "plan_execute" in result.stdout


def test_empty_task_exits_2_with_json_error() -> None:
    result = runner.invoke(app, ["run", "", "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["error"]["code"] == "empty_task"


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "classify", "--input", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_unknown_graph_exits_2() -> None:
    result = runner.invoke(app, ["run", "classify", "--graph", "nope"])
    assert result.exit_code == 2 and "unknown graph" in result.stderr


def test_bad_model_spec_exits_2() -> None:
    result = runner.invoke(app, ["run", "classify", "--slm", "mystery:x", "--llm", "mystery:x"])
    assert result.exit_code == 2 and "bad_model_spec" in result.stderr


def test_unreachable_ollama_is_reported_by_models(monkeypatch: pytest.MonkeyPatch, free_port: int) -> None:
    monkeypatch.setenv("MOA_SLM", f"ollama:llama3.2:1b@http://127.0.0.1:{free_port}")
    monkeypatch.setenv("MOA_TIMEOUT", "2")
    result = runner.invoke(app, ["models", "--check"])
    assert result.exit_code == 3
    assert "model_unreachable" in result.stdout and f"127.0.0.1:{free_port}" in result.stdout.replace("\n", "")


def test_memory_dir_not_writable_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    result = runner.invoke(app, ["memory", "add", str(doc), "--memory-dir", str(blocker / "sub")])
    assert result.exit_code == 2 and "memory_unwritable" in result.stderr


def test_main_returns_exit_codes() -> None:
    assert main(["agents"]) == 0
    assert main(["run", ""]) == 2


def test_run_with_unreachable_ollama_fails_fast_with_json(monkeypatch: pytest.MonkeyPatch, free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    monkeypatch.setenv("MOA_SLM", f"ollama:llama3.2:1b@{url}")
    monkeypatch.setenv("MOA_LLM", f"ollama:llama3.2:1b@{url}")
    result = runner.invoke(app, ["run", "classify the sentiment", "--json", "--planner", "llm"])  # auto: tests/test_planner_fallback.py
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["error"]["code"] == "model_unreachable"
    assert url in payload["error"]["message"] and "ollama serve" in payload["error"]["message"] and "--planner router" in payload["error"]["message"]


@pytest.mark.real  # the real openai client against a closed port (no model is loaded)
def test_run_keeps_partial_results_when_the_slm_is_down(monkeypatch: pytest.MonkeyPatch, free_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port}/v1"
    monkeypatch.setenv("MOA_SLM", f"openai+completion:m@{url}")  # model agents: down
    monkeypatch.setenv("MOA_LLM", f"openai+completion:m@{url}")
    reviews = tmp_path / "r.txt"
    reviews.write_text("great\nawful\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "r", "agent": "retrieval"}, {"id": "s", "agent": "sentiment"}]}))
    result = runner.invoke(app, ["run", "look up and classify", "--input", str(reviews), "--plan", str(plan), "--json"])
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["status"] == "partial"
    by_agent = {r["agent"]: r for r in payload["results"].values()}
    assert by_agent["retrieval"]["status"] == "ok"  # computed before the failure, kept
    assert by_agent["sentiment"]["status"] == "failed"
    assert any(e["code"] == "model_unreachable" and url in e["message"] for e in payload["errors"])
