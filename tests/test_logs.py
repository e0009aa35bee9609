"""moa.logs: per-run info-log switch and the subtask log context."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import structlog
from structlog.testing import LogCapture

import moa
from moa.logs import enabled, log_context
from moa.testing import FakeModel

PLAN = {"subtasks": [{"id": "s1", "agent": "sentiment"}]}


def capture(level: int) -> LogCapture:
    """Capture log entries at ``level`` and above, with the context variables merged in (as the CLI does)."""
    cap = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, cap], wrapper_class=structlog.make_filtering_bound_logger(level))
    return cap


def test_enabled_follows_the_configured_level() -> None:
    assert not enabled(logging.INFO) and enabled(logging.WARNING)  # unconfigured: a library is quiet
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    assert enabled(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    assert not enabled(logging.INFO) and enabled(logging.WARNING)
    assert not moa.RunContext.create().info_logs


def test_enabled_is_true_for_a_logger_that_cannot_tell() -> None:
    class Plain:
        def __init__(self, *args: object, **kwargs: object) -> None: ...

        def bind(self, **kw: object) -> Plain:
            return self

    structlog.configure(wrapper_class=Plain)  # type: ignore[arg-type]
    assert enabled(logging.DEBUG)


def test_log_context_binds_and_restores_what_was_there() -> None:
    structlog.contextvars.bind_contextvars(run_id="outer")
    with log_context(run_id="r1", subtask="s1"):
        assert structlog.contextvars.get_contextvars() == {"run_id": "r1", "subtask": "s1"}
    assert structlog.contextvars.get_contextvars() == {"run_id": "outer"}
    structlog.contextvars.clear_contextvars()


async def test_at_warning_level_subtask_info_logs_are_skipped_and_warnings_keep_their_ids() -> None:
    model = FakeModel(["not json at all"])  # invalid output: the agent logs a warning
    logs = capture(logging.WARNING).entries
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model)
    events = {e["event"] for e in logs}
    assert "subtask_started" not in events and "subtask_done" not in events
    warnings = [e for e in logs if e["log_level"] == "warning" and e.get("subtask") == "s1"]
    assert warnings and all(e["run_id"] == result.run_id for e in warnings)


async def test_at_info_level_each_subtask_is_logged() -> None:
    model = FakeModel(['{"label":"positive","confidence":0.9}'])
    logs = capture(logging.INFO).entries
    result = await moa.arun("t", input=["x"], plan=PLAN, slm=model, llm=model)
    started = [e for e in logs if e["event"] == "subtask_started"]
    assert len(started) == 1 and started[0]["subtask"] == "s1" and started[0]["run_id"] == result.run_id


QUIET_SCRIPT = """
import moa
from moa.testing import FakeModel
from moa.logs import get_logger
slm = FakeModel(['{"label": "positive", "confidence": 0.9}'])
result = moa.run("rate", input=["good"], plan={"subtasks": [{"id": "s", "agent": "sentiment"}]}, slm=slm, llm=FakeModel(["x"]),
                 settings=moa.load_settings(durable=False))
print("status", result.status)
get_logger("moa.test").warning("something_odd", detail=1)
"""


def test_the_library_prints_nothing_unless_configured(tmp_path: Path) -> None:
    """Used from Python without logging configured: info and debug logs go nowhere, warnings go
    to stderr, and stdout carries only what the program itself prints."""
    env = {**os.environ, "MOA_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "status ok\n"
    assert done.stderr.strip() == "[warning] moa.test: something_odd detail=1"
