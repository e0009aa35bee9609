"""Errors raised by moa.

Two tiers, each carrying an :class:`ErrorCode` and a message that says what to do, and typed
families below them that callers branch on::

    MoaError
    ├── UserError            a developer's or user's mistake (exit 2)
    │   ├── ConfigError      bad_config, bad_model_spec
    │   ├── InvalidPlan      invalid_plan
    │   ├── NotFound         unknown_agent, unknown_graph, unknown_tool, unknown_run
    │   └── ToolRefused      tool_refused, tool_may_have_run
    └── RunError             something failed while running (exit 3)
        ├── ModelUnavailable model_unreachable, model_timeout: the model cannot be reached now
        ├── ModelFailed      model_error: the model answered with an error or garbage
        ├── InvalidOutput    invalid_output: no valid answer after the repair (``outputs``)
        ├── BudgetExceeded   budget_exceeded
        └── ApprovalDenied   approval_denied

As with ``OSError(errno.ENOENT, ...)`` becoming ``FileNotFoundError``, constructing a tier with a
code that has a family gives that family: ``RunError(ErrorCode.MODEL_TIMEOUT, ...)`` is a
:class:`ModelUnavailable`, so ``except ModelUnavailable`` catches every timeout wherever it was
raised. Every error carries ``usage``: the model calls made before it was raised.
:class:`ErrorInfo` is an error as data (in results, checkpoints and ``--json``); its exit code comes
from the class that raised it.

Exceptions never log or do I/O when constructed; callers decide how to report them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from moa.usage import Usage


class ErrorCode(StrEnum):
    """Stable, machine-readable error codes (shown in the CLI and in ``--json``)."""

    EMPTY_TASK = "empty_task"
    TASK_TOO_LARGE = "task_too_large"
    INPUT_FILE = "input_file"
    OUTPUT_FILE = "output_file"
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
    TOOL_MAY_HAVE_RUN = "tool_may_have_run"
    """A side-effect tool call was not repeated on resume: the attempt that made it stopped while it ran."""
    NESTED_EVENT_LOOP = "nested_event_loop"
    SUBTASK_FAILED = "subtask_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    BAD_DATA = "bad_data"
    NOT_TRAINED = "not_trained"
    TOO_FEW_ITEMS = "too_few_items"
    """Too few labelled items for what was asked (e.g. choosing thresholds by cross-validation)."""
    STEP_LIMIT = "step_limit"
    RUN_EXISTS = "run_exists"
    UNKNOWN_RUN = "unknown_run"
    RUN_FINISHED = "run_finished"
    RUN_ACTIVE = "run_active"
    RUN_NOT_RESUMABLE = "run_not_resumable"
    RESUME_LOOSENS = "resume_loosens"
    STATE_LOCKED = "state_locked"
    STATE_CORRUPT = "state_corrupt"
    STATE_UNAVAILABLE = "state_unavailable"
    NOT_WAITING = "not_waiting"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVAL_DENIED = "approval_denied"
    UNAUTHORIZED = "unauthorized"
    """A server request without a valid API key (``moa serve``)."""
    REQUEST_TOO_LARGE = "request_too_large"
    """A server request body over the server's limit."""
    TOO_MANY_RUNS = "too_many_runs"
    """The server's queue, or an API key's share of it, is full: retry later."""
    RATE_LIMITED = "rate_limited"
    """An API key sent more requests than the server's per-key rate: retry after ``Retry-After`` seconds."""
    UNKNOWN_ROUTE = "unknown_route"
    """No server route at that path (or not with that method)."""
    INTERNAL_ERROR = "internal_error"
    """An unexpected exception (a bug, in moa or in a user's code): the message names it."""


class MoaError(Exception):
    """Base class of every error moa raises on purpose."""

    exit_code: ClassVar[int] = 1
    codes: ClassVar[frozenset[ErrorCode]] = frozenset()
    """The codes this class stands for (constructing a parent tier with one of them gives this class)."""

    def __new__(cls, code: ErrorCode, message: str = "", **_: Any) -> MoaError:
        family = _FAMILIES.get(code)
        if family is not None and family is not cls and issubclass(family, cls):
            cls = family
        return super().__new__(cls)

    def __init__(self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None, usage: Sequence[Usage] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.usage: list[Usage] = list(usage)
        """The model calls made before this error (already counted in the run's budget)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for code in cls.__dict__.get("codes", ()):
            _FAMILIES[code] = cls

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (multiprocessing, caches) keep the family
        return (_rebuild, (type(self), self.code, self.message, self.details))

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``--json`` output): :class:`ErrorInfo`'s fields."""
        return self.info().model_dump(mode="json")

    def info(self, **extra: Any) -> ErrorInfo:
        """This error as data (:class:`ErrorInfo`)."""
        return ErrorInfo(type=type(self).__name__, code=self.code, message=self.message, exit_code=self.exit_code, details=self.details, **extra)


_FAMILIES: dict[ErrorCode, type[MoaError]] = {}


def _rebuild(cls: type[MoaError], code: ErrorCode, message: str, details: dict[str, Any]) -> MoaError:
    return cls(code, message, details=details)


class UserError(MoaError):
    """The input, configuration or code given to moa is wrong; the message says how to fix it."""

    exit_code = 2


class RunError(MoaError):
    """A run could not complete a step (model unreachable, timed out, output invalid after repair)."""

    exit_code = 3


class ConfigError(UserError):
    """A setting, a model spec or a graph's parameters are wrong."""

    codes = frozenset({ErrorCode.BAD_CONFIG, ErrorCode.BAD_MODEL_SPEC})


class InvalidPlan(UserError):
    """A plan (from a planner, a file or the caller) does not validate; ``details["problems"]`` lists why."""

    codes = frozenset({ErrorCode.INVALID_PLAN})


class NotFound(UserError):
    """An agent, graph, tool or run of that name does not exist."""

    codes = frozenset({ErrorCode.UNKNOWN_AGENT, ErrorCode.UNKNOWN_GRAPH, ErrorCode.UNKNOWN_TOOL, ErrorCode.UNKNOWN_RUN})


class ToolRefused(UserError):
    """A tool call was not executed (not on the agent's allowlist, a person denied it, or a
    side-effect call that may already have run before a crash)."""

    codes = frozenset({ErrorCode.TOOL_REFUSED, ErrorCode.TOOL_MAY_HAVE_RUN})


class ModelUnavailable(RunError):
    """The model could not be reached in time (down, refused the connection, timed out)."""

    codes = frozenset({ErrorCode.MODEL_UNREACHABLE, ErrorCode.MODEL_TIMEOUT})


class ModelFailed(RunError):
    """The model answered, but with an error or a reply moa cannot read."""

    codes = frozenset({ErrorCode.MODEL_ERROR})


class InvalidOutput(RunError):
    """The model's answer did not validate against the output type, even after the repair."""

    codes = frozenset({ErrorCode.INVALID_OUTPUT})

    @property
    def outputs(self) -> list[str]:
        """The model's raw answers (first try, then the repair), each cut at 2,000 characters."""
        return list(self.details.get("outputs", []))


class BudgetExceeded(RunError):
    """A token, cost or time budget of the run is used up; nothing more is sent to a model."""

    codes = frozenset({ErrorCode.BUDGET_EXCEEDED})


class ApprovalDenied(RunError):
    """A person denied a step that needed approval."""

    codes = frozenset({ErrorCode.APPROVAL_DENIED})


class ErrorInfo(BaseModel):
    """An error as data: what an item, a subtask or a run failed with (results, checkpoints, ``--json``)."""

    model_config = ConfigDict(frozen=True)

    type: str
    """The class that raised it (``ModelUnavailable``, ``UserError``...)."""
    code: ErrorCode
    message: str
    exit_code: int = RunError.exit_code
    """The exit code of the class that raised it (2 a user's mistake, 3 a run error)."""
    details: dict[str, Any] = Field(default_factory=dict)
    subtask: str | None = None
    """The subtask it happened in (a run's ``errors``)."""

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        """Read the flat error dicts of runs saved before ErrorInfo (extra keys were details)."""
        if isinstance(value, dict) and "details" not in value:
            known = {"type", "code", "message", "exit_code", "subtask"}
            value = {k: v for k, v in value.items() if k in known} | {"details": {k: v for k, v in value.items() if k not in known}}
            value.setdefault("type", "RunError")
            value.setdefault("code", ErrorCode.INTERNAL_ERROR)
            value.setdefault("message", "")
            value.setdefault("exit_code", UserError.exit_code if value["type"] == "UserError" else RunError.exit_code)
        return value

    def error(self) -> MoaError:
        """The exception again (its family from the code)."""
        tier = UserError if self.exit_code == UserError.exit_code else RunError
        return tier(self.code, self.message, details=dict(self.details))


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


__all__ = [
    "ApprovalDenied",
    "BudgetExceeded",
    "ConfigError",
    "ErrorCode",
    "ErrorInfo",
    "InvalidOutput",
    "InvalidPlan",
    "ModelFailed",
    "ModelUnavailable",
    "MoaError",
    "NotFound",
    "RunError",
    "ToolRefused",
    "UserError",
    "check_no_running_loop",
]
