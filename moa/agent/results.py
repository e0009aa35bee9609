"""What one agent call produces, in one direction: attempts and escalations inside an
:class:`AgentRun`, which the workflow layer wraps (never copies back) in its item results.

* :class:`Attempt` — one cascade step's try at an item: output or error, confidence, cost.
* :class:`Escalation` — an item climbing from one step to the next, and why.
* :class:`ToolCallRecord` — a tool call the model asked for, and what happened to it.
* :class:`AgentRun` — the outcome of one agent call on one item.
* :class:`StoredOutput` — an output read back from a checkpoint before its agent's type is applied.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from moa.errors import ErrorInfo
from moa.routing.approvals import Approval
from moa.usage import Usage


class ToolCallRecord(BaseModel):
    """A tool call an agent's model made, and what happened to it."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    allowed: bool
    result: Any = None
    error: ErrorInfo | None = None


WeakReason = Literal["low_confidence", "invalid_output", "model_error"]


class StoredOutput(BaseModel):
    """An agent output read back from a checkpoint, before its agent's output type is applied.

    Its fields are the saved ones (``output.label`` works); :func:`moa.workflow.results.revive_results`
    turns it back into the agent's own output model.
    """

    model_config = ConfigDict(extra="allow")


def stored_output(value: Any) -> Any:
    """Validator: a saved output (a dict) becomes a :class:`StoredOutput`."""
    return StoredOutput.model_validate(value) if isinstance(value, dict) else value


class Attempt(BaseModel):
    """One step's try at an item: its answer or error, confidence, and cost."""

    step: str
    """Cascade step: ``specialist``, ``slm``, ``llm`` or a model spec."""
    model: str
    output: SerializeAsAny[BaseModel] | None = None
    error: ErrorInfo | None = None
    confidence: float | None = None
    raw_confidence: float | None = None
    """The confidence before per-model calibration (``moa calibrate``), when one was applied."""
    weak: WeakReason | None = None
    """Why this answer escalated (or would have)."""
    tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0

    _stored = field_validator("output", mode="before")(stored_output)

    @classmethod
    def priced(cls, step: str, model: str, usage: list[Usage], **fields: Any) -> Attempt:
        return cls(
            step=step,
            model=model,
            tokens=sum(u.tokens for u in usage),
            cost=sum(u.cost for u in usage),
            latency_s=round(sum(u.latency_s for u in usage), 4),
            **fields,
        )


class Escalation(BaseModel):
    """An item climbing from one step to the next."""

    from_step: str
    to_step: str
    reason: WeakReason


class AgentRun(BaseModel):
    """The outcome of one agent call: an output or an error, and what it cost."""

    output: SerializeAsAny[BaseModel] | None = None
    error: ErrorInfo | None = None
    """Why the call failed (no step gave an answer)."""
    usage: list[Usage] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    answered_by: str | None = None
    """The cascade step whose answer was kept (``specialist``, ``slm``, ``llm`` or a model spec)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every step's try, in order, with its confidence and cost."""
    escalations: list[Escalation] = Field(default_factory=list)
    unverified: str | None = None
    """Why a weak answer was kept without a stronger check (``no higher step``, ``budget: ...``,
    ``llm failed: ...``); ``None`` when the answer met the threshold."""
    deduplicated: bool = False
    """The same input appeared earlier in the batch; this is that item's result (no extra call)."""
    routed: str | None = None
    """Why the item skipped the cheap steps up front (``route_long_chars``, ``route_non_latin``)."""
    waiting: Approval | None = None
    """The item is parked: its next step waits for a person's approval (the id is set by the subtask)."""

    _stored = field_validator("output", mode="before")(stored_output)

    @property
    def ok(self) -> bool:
        return self.output is not None
