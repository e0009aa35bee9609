"""The CLI answering approvals: --approve-all / --deny-all, a question per approval on a terminal,
exit code 4 and how to answer when nobody can, `moa resume --approve/--deny`, `moa runs` views,
and exit code 5 for a hand-off (fake models injected into the CLI's run context)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.tiers import fake_tiers
from typer.testing import CliRunner

from moa.cli import approvals as cli_approvals
from moa.cli.main import app
from moa.testing import FakeModel

runner = CliRunner()
PLAN = {
    "subtasks": [
        {"id": "a", "agent": "sentiment", "approve": True},
        {"id": "b", "agent": "sentiment"},
        {"id": "c", "agent": "sentiment", "depends_on": ["a", "b"]},
    ]
}


@pytest.fixture
def plan(tmp_path: Path) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return str(path)


def _run(plan: str, *flags: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["run", "rate", "--input", _reviews(), "--plan", plan, *flags], input=input)


def _reviews() -> str:
    path = Path("reviews.txt")
    path.write_text("lovely room\nrude staff\n")
    return str(path.resolve())


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_approve_all_answers_every_approval_without_asking(cli_model: FakeModel, plan: str) -> None:
    result = _run(plan, "--approve-all", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["pending"] == []
    assert {k: v["status"] for k, v in payload["results"].items()} == {"a": "ok", "b": "ok", "c": "ok"}
    assert len(cli_model.requests) == 6


def test_deny_all_records_the_denial_and_skips_dependents(cli_model: FakeModel, plan: str) -> None:
    result = _run(plan, "--deny-all", "--json")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["status"] == "partial"
    assert {k: v["status"] for k, v in payload["results"].items()} == {"a": "denied", "b": "ok", "c": "skipped"}
    assert len(cli_model.requests) == 2


def test_without_a_terminal_the_run_stops_waiting_and_says_how_to_answer(cli_model: FakeModel, plan: str) -> None:
    result = _run(plan)
    assert result.exit_code == 4, result.output
    (row,) = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    run_id = row["run_id"]
    assert row["status"] == "waiting" and [p["id"] for p in row["pending"]] == ["a"]
    assert "Waiting for approval" in result.stdout and f"moa resume {run_id} --approve ID|all --deny ID|all" in result.stdout

    listed = runner.invoke(app, ["runs", "list"])
    assert "waiting (1)" in listed.stdout
    shown = runner.invoke(app, ["runs", "show", run_id])
    assert shown.exit_code == 0 and "plan: approve" in shown.stdout and f"moa resume {run_id}" in shown.stdout
    view = json.loads(runner.invoke(app, ["runs", "show", run_id, "--json"]).stdout)
    assert {s["id"]: s["status"] for s in view["subtasks"]} == {"a": "waiting", "b": "ok", "c": "pending"}

    unanswered = runner.invoke(app, ["resume", run_id])
    assert unanswered.exit_code == 2 and "awaiting_approval" in unanswered.stderr
    stale = runner.invoke(app, ["resume", run_id, "--approve", "b", "--json"])
    assert stale.exit_code == 2 and json.loads(stale.stdout)["error"]["code"] == "not_waiting"

    done = runner.invoke(app, ["resume", run_id, "--approve", "a", "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["status"] == "ok" and payload["reused"] == ["b"]


def test_json_output_of_a_waiting_run(cli_model: FakeModel, plan: str) -> None:
    result = _run(plan, "--json")
    assert result.exit_code == 4
    payload = json.loads(result.stdout)
    assert payload["status"] == "waiting" and [p["id"] for p in payload["pending"]] == ["a"]
    assert "waiting for approval: a; answer with: moa resume" in result.stderr


def test_on_a_terminal_each_approval_is_asked(cli_model: FakeModel, plan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_approvals, "interactive", lambda: True)
    result = _run(plan, "--json", input="n\n")
    assert result.exit_code == 3, result.output
    assert "wait for your approval" in result.stderr and "run sentiment on 2 item(s)" in result.stderr
    assert json.loads(result.stdout)["results"]["a"]["status"] == "denied"
    approved = _run(plan, "--json", input="y\n")
    assert approved.exit_code == 0 and json.loads(approved.stdout)["status"] == "ok"


def test_resume_on_a_terminal_asks_what_waits(cli_model: FakeModel, plan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(plan).exit_code == 4
    run_id = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)[0]["run_id"]
    monkeypatch.setattr(cli_approvals, "interactive", lambda: True)
    result = runner.invoke(app, ["resume", run_id, "--json"], input="a\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "ok"


def test_contradicting_flags_exit_2(cli_model: FakeModel, plan: str) -> None:
    result = _run(plan, "--approve-all", "--deny-all")
    assert result.exit_code == 2 and "contradict" in result.stderr
    bad_rule = _run(plan, "--approval", "everything")
    assert bad_rule.exit_code == 2 and "unknown approval rule" in bad_rule.stderr


def test_a_hand_off_exits_5_and_shows_the_items(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeModel(['{"label":"positive","confidence":0.2}'])
    fake_tiers(monkeypatch, fake)
    plan = tmp_path / "one.json"
    plan.write_text(json.dumps({"subtasks": [{"id": "s", "agent": "sentiment"}]}))
    result = runner.invoke(app, ["run", "rate", "--input", _reviews(), "--plan", str(plan), "--on-unsure", "needs_human", "--confidence", "self"])
    assert result.exit_code == 5, result.output
    assert "Needs a person" in result.stdout and "status needs_human" in result.stdout
