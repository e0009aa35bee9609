"""Approvals on the embedded default model: a plan with one subtask that needs approval pauses,
and goes on once approved — through the Python API, and through `moa run` / `moa resume` in
subprocesses without a terminal (exit code 4, then the answer on the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.moa_process import run_moa

import moa
from moa.models.embedded import EmbeddedBackend

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
PLAN = {
    "subtasks": [
        {"id": "mood", "agent": "sentiment"},
        {"id": "spam", "agent": "filtering", "options": {"criterion": "spam"}, "approve": True},
        {"id": "tone", "agent": "sentiment", "options": {"labels": ["calm", "angry"]}, "depends_on": ["spam"]},
    ]
}


def _reviews(n: int) -> list[str]:
    return (ROOT / "examples" / "data" / "reviews.txt").read_text().splitlines()[:n]


async def test_a_waiting_run_on_the_embedded_model_goes_on_once_approved(embedded: EmbeddedBackend) -> None:
    items = _reviews(3)
    waiting = await moa.arun("rate and filter", input=items, plan=PLAN, slm=embedded, llm=embedded)

    assert waiting.status == "waiting" and [a.id for a in waiting.pending] == ["spam"]
    assert waiting.results["mood"].status == "ok" and len(waiting.results["mood"].items) == 3
    assert set(waiting.results) == {"mood", "spam"}  # tone waits behind spam
    calls = waiting.summary.calls

    done = await moa.aresume(waiting.run_id, approve=["spam"], slm=embedded, llm=embedded)

    assert done.status in ("ok", "partial") and done.pending == []
    assert done.reused == ["mood"]
    assert done.results["spam"].status != "waiting" and len(done.results["spam"].items) == 3
    assert done.results["tone"].status != "skipped" and len(done.results["tone"].items) == 3
    assert {i.output.label for i in done.results["tone"].items if i.output} <= {"calm", "angry"}  # type: ignore[attr-defined]
    assert done.summary.calls > calls  # spam and tone ran after the answer; mood was not run again
    assert [u.subtask for u in done.usage].count("mood") == [u.subtask for u in waiting.usage].count("mood")


def test_the_cli_without_a_terminal_stops_waiting_and_resumes_with_the_answer(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(_reviews(2)) + "\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"subtasks": [PLAN["subtasks"][0], {**PLAN["subtasks"][2], "depends_on": ["mood"], "approve": True}]}))

    first = run_moa(tmp_path, "run", "rate", "--input", str(reviews), "--plan", str(plan), "--json")

    assert first.returncode == 4, first.stderr
    payload = json.loads(first.stdout)
    run_id = payload["run_id"]
    assert payload["status"] == "waiting" and [p["id"] for p in payload["pending"]] == ["tone"]
    assert f"moa resume {run_id} --approve ID|all --deny ID|all" in first.stderr
    shown = run_moa(tmp_path, "runs", "show", run_id)
    assert shown.returncode == 0 and "Waiting for approval" in shown.stdout and "tone" in shown.stdout

    second = run_moa(tmp_path, "resume", run_id, "--approve", "all", "--json")

    assert second.returncode in (0, 3), second.stderr
    result = json.loads(second.stdout)
    assert result["pending"] == [] and result["reused"] == ["mood"]
    assert result["results"]["tone"]["status"] in ("ok", "partial") and len(result["results"]["tone"]["items"]) == 2
    listed = json.loads(run_moa(tmp_path, "runs", "list", "--json").stdout)
    assert listed[0]["status"] == result["status"] and listed[0]["attempts"] == 2
