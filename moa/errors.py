"""Errors raised by moa.

Two tiers, each carrying an :class:`ErrorCode` and a message that says what to do::

    MoaError
    ├── UserError   a developer's or user's mistake: bad task, unknown agent, bad config, bad plan
    └── RunError    something failed while running: model down or slow, invalid output after repair

Exceptions never log or do I/O when constructed; callers decide how to report them.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable, machine-readable error codes (shown in the CLI and in ``--json``)."""

    EMPTY_TASK = "empty_task"
    TASK_TOO_LARGE = "task_too_large"
    INPUT_FILE = "input_file"
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_GRAPH = "unknown_graph"
    UNKNOWN_TOOL = "unknown_tool"
    BAD_MODEL_SPEC = "bad_model_spec"
    BAD_CONFIG = "bad_config"
    INVALID_PLAN = "invalid_plan"
    INVALID_INPUT = "invalid_input"
    MODEL_UNREACHABLE = "model_unreachable"
    MODEL_TIMEOUT = "model_timeout"
    MODEL_ERROR = "model_error"
    INVALID_OUTPUT = "invalid_output"
    EMBEDDER_UNAVAILABLE = "embedder_unavailable"
    MEMORY_UNWRITABLE = "memory_unwritable"
    MEMORY_UNREACHABLE = "memory_unreachable"
    TOOL_REFUSED = "tool_refused"
    NESTED_EVENT_LOOP = "nested_event_loop"
    SUBTASK_FAILED = "subtask_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    BAD_DATA = "bad_data"
    NOT_TRAINED = "not_trained"
    STEP_LIMIT = "step_limit"
    RUN_EXISTS = "run_exists"
    UNKNOWN_RUN = "unknown_run"
    RUN_FINISHED = "run_finished"
    RUN_ACTIVE = "run_active"
    RUN_NOT_RESUMABLE = "run_not_resumable"
    STATE_LOCKED = "state_locked"
    STATE_CORRUPT = "state_corrupt"
    STATE_UNAVAILABLE = "state_unavailable"
    NOT_WAITING = "not_waiting"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVAL_DENIED = "approval_denied"


class MoaError(Exception):
    """Base class of every error moa raises on purpose."""

    exit_code: int = 1

    def __init__(self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, used by ``--json`` output and run records."""
        return {"type": type(self).__name__, "code": str(self.code), "message": self.message, **self.details}


class UserError(MoaError):
    """The input, configuration or code given to moa is wrong; the message says how to fix it."""

    exit_code = 2


class RunError(MoaError):
    """A run could not complete a step (model unreachable, timed out, output invalid after repair)."""

    exit_code = 3


def check_no_running_loop(call: str, instead: str) -> None:
    """Refuse a synchronous wrapper (``call``, e.g. ``moa.run``) inside a running event loop, where
    ``asyncio.run`` cannot work; the error says to ``await instead`` (e.g. ``moa.arun``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UserError(
        ErrorCode.NESTED_EVENT_LOOP,
        f"{call}() cannot be called from a running event loop (e.g. inside async code or Jupyter); use `await {instead}(...)`",
    )
