"""A real `moa run` on the embedded model, SIGKILLed mid-way, then `moa resume`d (subprocesses).

The run has two independent sentiment subtasks and an extraction that depends on both (the
slow part). The test waits until the extraction has saved at least one finished item (the run
ledger, so both sentiment subtasks are in the checkpoint), kills the process, and resumes: the
finished subtasks must come back from the checkpoint (their saved records unchanged, no
`subtask_started` for them in the resume's logs), the extraction's saved items are reused
(`items_reused`), and only the rest runs again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.moa_process import moa_env, run_moa

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
PLAN = {
    "subtasks": [
        {"id": "mood", "agent": "sentiment"},
        {"id": "tone", "agent": "sentiment", "options": {"labels": ["positive", "negative", "neutral"]}},
        # on the slm: the shipped entity tagger would answer in milliseconds, and this test needs a slow part
        {"id": "who", "agent": "extraction", "depends_on": ["mood", "tone"], "cascade": ["slm"]},
    ]
}


def _saved_items(db: Path, subtask: str) -> tuple[str | None, int]:
    """The run id and how many finished items of ``subtask`` the run ledger holds (0 while there is no database)."""
    if not db.exists():
        return None, 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            run = conn.execute("SELECT run_id FROM moa_runs").fetchone()
            saved = conn.execute("SELECT count(*) FROM moa_items WHERE subtask = ?", (subtask,)).fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return None, 0
    return (run[0] if run else None), int(saved[0])


def _view(tmp_path: Path, run_id: str) -> dict[str, Any]:
    shown = run_moa(tmp_path, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_a_killed_run_resumes_without_redoing_finished_subtasks_or_items(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join((ROOT / "examples" / "data" / "reviews.txt").read_text().splitlines()[:6]) + "\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    db = tmp_path / "state" / "runs.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moa", "run", "rate and extract", "--input", str(reviews), "--plan", str(plan), "--json"],
        env=moa_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        run_id, saved = _saved_items(db, "who")
        while saved == 0:
            assert proc.poll() is None, "the run ended before any item of the extraction was saved"
            time.sleep(0.2)
            run_id, saved = _saved_items(db, "who")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_id is not None

    before = _view(tmp_path, run_id)
    assert before["run"]["status"] == "interrupted"
    done_before = {s["id"]: s for s in before["subtasks"] if s["status"] != "pending"}
    assert set(done_before) == {"mood", "tone"}  # the extraction waits for both, and is the slow part
    _, reusable = _saved_items(db, "who")  # what the ledger holds once the process is dead
    assert 1 <= reusable < 6

    resumed = run_moa(tmp_path, "--log-json", "-v", "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "ok" and result["resumed"] is True
    assert sorted(result["reused"]) == sorted(done_before)
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    started = {e["subtask"] for e in events if e["event"] == "subtask_started"}
    assert started == {"mood", "tone", "who"} - set(done_before)
    assert {e["subtask"] for e in events if e["event"] == "subtask_reused"} == set(done_before)
    assert [(e["subtask"], e["items"], e["of"]) for e in events if e["event"] == "items_reused"] == [("who", reusable, 6)]
    assert len(result["results"]["who"]["items"]) == 6

    after = _view(tmp_path, run_id)
    assert after["run"]["status"] == "ok" and after["run"]["attempts"] == 2
    for row in after["subtasks"]:
        if row["id"] in done_before:  # the saved records (calls, tokens, times), not a new computation
            assert row == done_before[row["id"]]
    mermaid = run_moa(tmp_path, "runs", "show", run_id, "--mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.count(":::ok") == 3 and "n0 --> n2" in mermaid.stdout and "n1 --> n2" in mermaid.stdout
