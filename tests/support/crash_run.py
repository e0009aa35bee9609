"""One attempt of a run (started or resumed) in a process of its own, which SIGKILLs itself at a
chosen point: after its k-th model call, or inside its j-th call of a side-effect tool (after the
effect). For tests/test_crash_property.py.

The run: three sentiment subtasks over :data:`ITEMS` (two on the input, one on the items the first
passed on); every item first calls the side-effect tool ``record`` (which appends a line to
``effects.txt``), then answers. The fake chat model is deterministic: an answer depends only on
the request. Every model call is appended to ``calls.txt`` (process id, subtask kind, item) before
it is answered, so the test can tell which items an attempt ran.
"""

from __future__ import annotations

import os
import re
import signal
import zlib
from dataclasses import dataclass
from pathlib import Path

import moa
from moa.models.base import GenerateRequest, Generation, ToolCall
from moa.testing import FakeModel, prompt_of
from moa.workflow.catalog import builtin_agents

ITEMS = [f"review {n:02d}: the stay was {('fine', 'long', 'loud', 'quiet', 'odd')[n % 5]}" for n in range(1, 13)]
LABELS = {"mood": ["positive", "negative"], "tone": ["calm", "urgent"], "grade": ["good", "bad", "mixed"]}
PLAN = {
    "subtasks": [
        {"id": "mood", "agent": "sentiment", "options": {"labels": LABELS["mood"]}},
        {"id": "tone", "agent": "sentiment", "options": {"labels": LABELS["tone"]}},
        {"id": "grade", "agent": "sentiment", "options": {"labels": LABELS["grade"]}, "items": "mood", "depends_on": ["mood", "tone"]},
    ]
}
RUN_ID = "crashy"


@dataclass
class Attempt:
    """Where one attempt works and when it kills itself (``None``: it does not)."""

    work: Path
    resume: bool
    kill_after_call: int | None = None
    kill_in_tool: int | None = None
    model_delay: float = 0.0
    """Seconds each model call takes (0: instant, so that at any moment the items in flight are at a write)."""


_counts = {"calls": 0, "tools": 0}
_attempt: Attempt | None = None


def kind_of(prompt: str) -> str:
    """Which subtask a request is for (each has its own labels)."""
    return "grade" if "mixed" in prompt else ("tone" if "urgent" in prompt else "mood")


def item_of(prompt: str) -> str:
    found = re.search(r"review \d\d", prompt)
    assert found is not None, prompt[:300]
    return found.group(0)


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:  # one write() per line: it survives a SIGKILL right after
        f.write(line + "\n")


def answer(request: GenerateRequest) -> Generation:
    assert _attempt is not None
    prompt = prompt_of(request)
    kind, item = kind_of(prompt), item_of(prompt)
    _counts["calls"] += 1
    _append(_attempt.work / "calls.txt", f"{os.getpid()}\t{kind}\t{item}")
    if _counts["calls"] == _attempt.kill_after_call:
        os.kill(os.getpid(), signal.SIGKILL)
    if request.tools:
        if any(m.role == "tool" for m in request.messages or []):
            return Generation(text="noted", prompt_tokens=10, completion_tokens=1)
        return Generation(text="", tool_calls=[ToolCall(id="c1", name="record", arguments={"kind": kind, "item": item})], prompt_tokens=10, completion_tokens=3)
    labels = LABELS[kind]
    label = labels[zlib.crc32(f"{kind}/{item}".encode()) % len(labels)]
    return Generation(text=f'{{"label":"{label}","confidence":0.9}}', prompt_tokens=10, completion_tokens=5)


@moa.tool(side_effects=True)
def record(kind: str, item: str) -> str:
    """Record that an item was seen (a side effect: a line in a file)."""
    assert _attempt is not None
    _counts["tools"] += 1
    _append(_attempt.work / "effects.txt", f"{kind}|{item}")
    if _counts["tools"] == _attempt.kill_in_tool:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"recorded {kind} {item}"


def run_attempt(attempt: Attempt) -> None:
    """Start (or resume) the run; write its result to ``result.json`` when it ends."""
    global _attempt
    _attempt = attempt
    work = attempt.work
    (work / "moa.toml").touch()
    os.environ.update({"MOA_CONFIG": str(work / "moa.toml"), "MOA_STATE_DIR": str(work / "state"), "MOA_MEMORY_DIR": str(work / "memory")})
    settings = moa.load_settings(escalate=False, concurrency=4)
    agent = builtin_agents()["sentiment"].with_tools(record)
    models = {"slm": FakeModel(answer, chat=True, tools=True, delay=attempt.model_delay), "llm": FakeModel(spec="fake:base")}
    if attempt.resume:
        result = moa.resume(RUN_ID, agents=[agent], settings=settings, **models)
    else:
        result = moa.run("rate the reviews", input=ITEMS, plan=PLAN, agents=[agent], settings=settings, run_id=RUN_ID, **models)
    (work / "result.json").write_text(result.model_dump_json())
