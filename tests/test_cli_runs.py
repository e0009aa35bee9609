"""`moa graphs show`, `moa runs list/show`, `moa resume`: runs made with fake models, real SQLite state."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.testing import FakeModel
from moa.workflow.index import state_path

runner = CliRunner()

PLAN_EXECUTE_MERMAID = """\
---
config:
  flowchart:
    curve: linear
---
graph TD;
\t__start__([<p>__start__</p>]):::first
\tplan(plan)
\texecute(execute)
\tsynthesize(synthesize)
\t__end__([<p>__end__</p>]):::last
\t__start__ --> plan;
\texecute --> synthesize;
\tplan --> execute;
\tsynthesize --> __end__;
\tclassDef default fill:#f2f0ff,line-height:1.2
\tclassDef first fill-opacity:0
\tclassDef last fill:#bfb6fc
"""

PLAN = {
    "subtasks": [
        {"id": "f", "agent": "filtering", "options": {"criterion": "spam"}},
        {"id": "s", "agent": "sentiment", "items": "f", "depends_on": ["f"]},
        {"id": "end", "agent": "sentiment", "depends_on": ["f", "s"]},
    ]
}


def _answers(request: moa.GenerateRequest) -> str:
    from moa.testing import prompt_of

    prompt = prompt_of(request)
    if "spam or ham" in prompt:
        return '{"label":"spam","confidence":0.9}' if "WIN" in prompt.rsplit("Message:", 1)[-1] else '{"label":"ham","confidence":0.9}'
    return '{"label":"positive","confidence":0.9}'


@pytest.fixture
def finished_run() -> moa.RunResult:
    model = FakeModel(_answers)
    return moa.run("triage", input=["WIN a prize now", "Lovely hotel"], plan=PLAN, slm=model, llm=model)


def test_graphs_show_prints_the_plan_execute_topology() -> None:
    result = runner.invoke(app, ["graphs", "show", "plan_execute"])
    assert result.exit_code == 0
    assert result.stdout == PLAN_EXECUTE_MERMAID


def test_graphs_show_of_an_unknown_graph_exits_2() -> None:
    result = runner.invoke(app, ["graphs", "show", "nope"])
    assert result.exit_code == 2 and "unknown_graph" in result.stderr


def test_runs_list(finished_run: moa.RunResult) -> None:
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert (row["run_id"], row["task"], row["status"], row["items"], row["graph"]) == (finished_run.run_id, "triage", "ok", 2, "plan_execute")
    table = runner.invoke(app, ["runs", "list"])
    assert table.exit_code == 0 and finished_run.run_id in table.stdout


def test_runs_show_json_has_per_subtask_status_models_tokens(finished_run: moa.RunResult) -> None:
    shown = runner.invoke(app, ["runs", "show", finished_run.run_id, "--json"])
    assert shown.exit_code == 0
    view = json.loads(shown.stdout)
    assert view["run"]["status"] == "ok"
    rows = {s["id"]: s for s in view["subtasks"]}
    assert {sid: (r["status"], r["items"], r["calls"]) for sid, r in rows.items()} == {"f": ("ok", 2, 2), "s": ("ok", 1, 1), "end": ("ok", 2, 2)}
    assert rows["s"]["models"] == ["fake:"] and rows["s"]["prompt_tokens"] > 0
    assert rows["end"]["depends_on"] == ["f", "s"]
    assert view["summary"]["calls"] == 5
    text = runner.invoke(app, ["runs", "show", finished_run.run_id])
    assert text.exit_code == 0 and "filtering" in text.stdout


def test_runs_show_mermaid_draws_the_executed_dag(finished_run: moa.RunResult) -> None:
    shown = runner.invoke(app, ["runs", "show", finished_run.run_id, "--mermaid"])
    assert shown.exit_code == 0
    nodes_and_edges = [line for line in shown.stdout.splitlines() if "classDef" not in line]
    assert nodes_and_edges == [
        "flowchart TD",
        '    n0["f: filtering<br/>ok · 2 items"]:::ok',
        '    n1["s: sentiment<br/>ok · 1 items"]:::ok',
        '    n2["end: sentiment<br/>ok · 2 items"]:::ok',
        "    n0 --> n1",
        "    n0 --> n2",
        "    n1 --> n2",
    ]


def test_runs_show_of_an_unknown_run_exits_2() -> None:
    result = runner.invoke(app, ["runs", "show", "nope", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "unknown_run"


def test_resume_errors_exit_2(finished_run: moa.RunResult) -> None:
    unknown = runner.invoke(app, ["resume", "nope"])
    assert unknown.exit_code == 2 and "unknown_run" in unknown.stderr
    finished = runner.invoke(app, ["resume", finished_run.run_id, "--json"])
    assert finished.exit_code == 2
    assert json.loads(finished.stdout)["error"]["code"] == "run_finished"


def test_runs_list_on_a_corrupt_state_database_exits_2() -> None:
    path = state_path(moa.load_settings())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage " * 512)
    result = runner.invoke(app, ["runs", "list"])
    assert result.exit_code == 2
    assert "state_corrupt" in result.stderr and ".bad" in result.stderr
