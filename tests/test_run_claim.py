"""Two resumes of the same stopped run at once: exactly one runs it, the other gets ``run_active``.

Real SQLite state. In one process, two tasks are held until both have read the run's row, so the
claim itself decides; across processes, a run is SIGKILLed mid-way and two `moa resume`-like
processes start together."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import moa
from moa.errors import ErrorCode, UserError
from moa.models.base import GenerateRequest
from moa.testing import FakeModel
from moa.workflow.index import RunIndex, open_index
from moa.workflow.view import load_view

GOOD = '{"label":"positive","confidence":0.9}'
PLAN = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "b", "agent": "sentiment", "depends_on": ["a"]}]}


async def test_two_resumes_racing_in_one_process_run_the_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    armed = {"on": True}

    def answer(request: GenerateRequest) -> str:
        if armed["on"]:
            raise RuntimeError("simulated crash")
        return GOOD

    model = FakeModel(answer)
    with pytest.raises(RuntimeError):
        await moa.arun("rate", input=["x", "y"], plan=PLAN, slm=model, llm=model, run_id="race")
    armed["on"] = False
    both_read = asyncio.Barrier(2)
    claim = RunIndex.claim

    async def claim_after_both_read(self: RunIndex, *args: Any, **kwargs: Any) -> None:
        await both_read.wait()  # both resumes have checked the row: only the claim can stop one
        await claim(self, *args, **kwargs)

    monkeypatch.setattr(RunIndex, "claim", claim_after_both_read)
    before = len(model.requests)

    outcomes = await asyncio.gather(*(moa.aresume("race", slm=model, llm=model) for _ in range(2)), return_exceptions=True)

    results = [o for o in outcomes if isinstance(o, moa.RunResult)]
    refused = [o for o in outcomes if isinstance(o, UserError)]
    assert len(results) == 1 and results[0].status == "ok"
    assert len(refused) == 1 and refused[0].code == ErrorCode.RUN_ACTIVE and "another process" in refused[0].message
    assert len(model.requests) - before == 4  # a and b, once each over 2 items
    async with open_index(moa.load_settings()) as index:
        row = await index.get("race")
    assert row is not None and row.attempts == 2 and row.status == "ok"


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    import moa
    from moa.errors import MoaError
    from moa.testing import FakeModel

    role, run_id, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    plan = json.loads(sys.argv[4])

    class Gated(FakeModel):
        # answers at once for subtask a; for b, logs the call then waits until the test lets it go
        async def generate(self, request):
            text = request.prompt or " ".join(m.content for m in request.messages or [])
            if "calm, urgent" in text:
                with open(folder / "calls.log", "a") as log:
                    log.write(f"{os.getpid()}\\n")
                while not (folder / "release").exists():
                    await asyncio.sleep(0.05)
            return await super().generate(request)

    def answer(request):
        text = request.prompt or " ".join(m.content for m in request.messages or [])
        return '{"label":"calm","confidence":0.9}' if "calm, urgent" in text else '{"label":"positive","confidence":0.9}'

    model = Gated(answer)

    async def main():
        if role == "run":
            await moa.arun("rate", input=["x", "y"], plan=plan, slm=model, llm=model, run_id=run_id)
        else:
            result = await moa.aresume(run_id, slm=model, llm=model)
            print(result.status)

    try:
        asyncio.run(main())
    except MoaError as exc:
        print(exc.code, file=sys.stderr)
        sys.exit(exc.exit_code)
    """
)


def _wait_for(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow  # three moa processes: ~20 s on 2 busy cores
def test_two_resume_processes_of_a_killed_run_run_it_once(tmp_path: Path) -> None:
    plan = {"subtasks": [{"id": "a", "agent": "sentiment"}, {"id": "b", "agent": "sentiment", "options": {"labels": ["calm", "urgent"]}, "depends_on": ["a"]}]}
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    config = tmp_path / "moa.toml"
    config.write_text("")
    env = {**os.environ, "MOA_STATE_DIR": str(tmp_path / "state"), "MOA_CONFIG": str(config), "MOA_CACHE": "false"}
    args = [sys.executable, str(script)]
    calls = tmp_path / "calls.log"

    first = subprocess.Popen([*args, "run", "k1", str(tmp_path), json.dumps(plan)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: calls.exists() or first.poll() is not None, "the run to reach subtask b")  # a is saved, b hangs
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGKILL)
    first.wait()
    calls.unlink()
    view = asyncio.run(load_view(moa.load_settings(state_dir=tmp_path / "state"), "k1"))
    assert view.run.status == "interrupted" and {s.id: s.status for s in view.subtasks} == {"a": "ok", "b": "pending"}

    resumes = [subprocess.Popen([*args, "resume", "k1", str(tmp_path), json.dumps(plan)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    _wait_for(lambda: sum(p.poll() is not None for p in resumes) >= 1, "one resume to give up")
    loser = next(p for p in resumes if p.poll() is not None)
    winner = next(p for p in resumes if p is not loser)
    (tmp_path / "release").touch()
    winner_out, winner_err = winner.communicate(timeout=120)
    _, loser_err = loser.communicate()

    assert loser.returncode == 2 and "run_active" in loser_err, loser_err
    assert winner.returncode == 0 and winner_out.strip() == "ok", winner_err
    assert set(calls.read_text().split()) == {str(winner.pid)}  # only the winner called the model for b
    assert len(calls.read_text().split()) == 2  # b's two items, once each
