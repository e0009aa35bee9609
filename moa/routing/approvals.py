"""Human in the loop: which steps wait for a person's approval, and the hand-off to a person.

**Approvals.** A step waits for approval when a rule asks for it:

* ``settings.approve`` entries: ``subtask:<id>``, ``agent:<name>``, ``tier:<step>`` (``tier:llm``:
  before any call on the ``llm`` step — an escalation, an item routed there, the llm planner and
  the synthesizer), ``tool:<name>``, ``tools:side_effects``;
* in a plan, ``Subtask.approve``; in code, ``Agent.approve`` (:meth:`moa.Agent.with_approval`)
  and ``moa.tool(approve=True)`` / ``moa.tool(side_effects=True)``.

Where a decision is needed the run pauses (a LangGraph ``interrupt``, which needs the run's
checkpoint) and returns with status ``waiting`` and its :class:`Approval` s. Each approval has an
id that stays the same until it is answered (``s2``, ``s2/3/llm``, ``s2/3/tool:refund``,
``plan``, ``synthesize``). ``moa.resume(run_id, approve=[...], deny=[...])`` answers them.

**Hand-off.** With ``on_unsure = "needs_human"``, an item whose answer stays weak (unverified) or
whose every step failed is not presented as an answer: the run ends with status ``needs_human``
and a :class:`Handoff` per item, with every attempt (outputs and errors) for a person to decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from moa.errors import ErrorCode, UserError
from moa.routing.policy import Step
from moa.settings import SIDE_EFFECTS

if TYPE_CHECKING:
    from langgraph.types import Interrupt

    from moa.settings import Settings
    from moa.usage import Usage

ApprovalKind = Literal["subtask", "step", "tool", "plan", "synthesize", "node"]
"""What waits: a subtask's start, an item's step, a tool call, or a graph node's model call
(``plan``, ``synthesize``, ``node`` for other graphs' nodes, e.g. ``aggregate``, ``answer``)."""


class Approval(BaseModel):
    """A step waiting for a person's decision."""

    id: str
    """Stable until answered: ``s2`` (a subtask), ``s2/3/llm`` (item 3 of s2 on the llm step),
    ``s2/3/tool:refund`` (a tool call of that item), ``plan``, ``synthesize``."""
    kind: ApprovalKind
    rule: str
    """The rule that asked for it: ``subtask:s2``, ``tier:llm``, ``tools:side_effects``, ``plan: approve``..."""
    reason: str
    """What would happen on approval, in words."""
    subtask: str | None = None
    agent: str | None = None
    item: str | None = None
    """The item's text (items and tools)."""
    step: str | None = None
    """The cascade step that waits (``llm``, a model spec)."""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    """The arguments the model gave the tool."""

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        """What the decision is about: (subtask, item, step or tool); the same for every copy of an item."""
        if self.kind in ("plan", "synthesize", "node"):
            return None, None, f"{self.kind}:{self.id}"  # one decision per node approval, wherever it is asked
        return self.subtask, self.item, f"tool:{self.tool}" if self.kind == "tool" else (self.step or self.kind)


class AwaitingApproval(Exception):
    """Control flow, not an error: a gated tool call needs a decision before the model step goes on.

    Raised inside a model step's tool loop; the cascade catches it and parks the item."""

    def __init__(self, approval: Approval, usage: Sequence[Usage] = ()) -> None:
        super().__init__(approval.id or approval.reason)
        self.approval = approval
        self.usage = list(usage)


@dataclass
class Decisions:
    """A run's answers so far, by what they decide (:attr:`Approval.key`). Run-scoped (in the
    :class:`moa.RunContext`); rebuilt on resume as the run replays its earlier pauses."""

    by_key: dict[tuple[str | None, str | None, str], bool] = field(default_factory=dict)

    def record(self, approval: Approval, approved: bool) -> None:
        self.by_key[approval.key] = approved

    def get(self, approval: Approval) -> bool | None:
        """``True`` approved, ``False`` denied, ``None`` not answered yet."""
        return self.by_key.get(approval.key)


def subtask_rule(settings: Settings, subtask_id: str, agent: str, flagged: bool, agent_flag: bool) -> str | None:
    """The rule that makes a subtask wait for approval before it starts (``None``: it does not)."""
    if flagged:
        return "plan: approve"
    if agent_flag:
        return f"agent {agent}: approve"
    for rule in (f"subtask:{subtask_id}", f"agent:{agent}"):
        if rule in settings.approve:
            return rule
    return None


def step_rule(settings: Settings, step: Step) -> str | None:
    """The rule that makes calls on a cascade step wait (``tier:<name>``; ``tier:llm`` also
    covers a step named by the llm tier's model spec, e.g. ``cascade = ["slm", "openai:gpt-4o"]``
    with ``llm = "openai:gpt-4o"``; never the ``slm`` step, even when both tiers share a model)."""
    if f"tier:{step.name}" in settings.approve:
        return f"tier:{step.name}"
    if "tier:llm" in settings.approve and step.name not in ("slm", "specialist") and step.spec == settings.llm:
        return "tier:llm"
    return None


def tool_rule(settings: Settings, name: str, approve: bool, side_effects: bool) -> str | None:
    """The rule that makes a tool call wait (``None``: the tool runs without asking)."""
    if approve:
        return f"tool {name}: approve"
    if f"tool:{name}" in settings.approve:
        return f"tool:{name}"
    if side_effects and SIDE_EFFECTS in settings.approve:
        return SIDE_EFFECTS
    return None


def payload(approvals: Iterable[Approval]) -> list[dict[str, Any]]:
    """What an interrupt carries (plain data, so any checkpointer stores it)."""
    return [a.model_dump(mode="json") for a in approvals]


def pending_of(interrupts: Iterable[Interrupt]) -> list[tuple[str, list[Approval]]]:
    """The approvals each of a run's open interrupts waits for: ``[(interrupt id, approvals)]``."""
    found = []
    for intr in interrupts:
        if isinstance(intr.value, list):
            found.append((intr.id, [Approval.model_validate(v) for v in intr.value]))
    return found


def ask(approvals: Sequence[Approval]) -> dict[str, bool]:
    """Pause the graph node until every approval is answered; return ``{id: approved}``.

    On the first pass this raises LangGraph's ``GraphInterrupt``; when the run is resumed the node
    runs again and the answers come back in order."""
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph.types import interrupt

    if var_child_runnable_config.get() is None:  # not in a graph: nothing can pause, nobody can answer
        rules = ", ".join(sorted({a.rule for a in approvals}))
        raise UserError(
            ErrorCode.AWAITING_APPROVAL,
            f"this call needs a person's approval ({rules}) but runs outside a moa run, where nobody can be asked; "
            "run it through moa.run / moa.arun or `moa run` (which pause and resume), or drop the rule from `approve`",
        )
    answers: dict[str, bool] = {}
    while missing := [a for a in approvals if a.id not in answers]:
        got = interrupt(payload(missing))
        answers.update({k: bool(v) for k, v in (got or {}).items() if k in {a.id for a in missing}})
    return answers


def _ids(value: Iterable[str] | bool) -> tuple[bool, list[str]]:
    return (value, []) if isinstance(value, bool) else (False, list(value))


def resolve_answers(run_id: str, pending: Sequence[Approval], approve: Iterable[str] | bool, deny: Iterable[str] | bool) -> dict[str, bool]:
    """Turn ``approve=`` / ``deny=`` (ids, or ``True`` for every pending one) into ``{id: approved}``.

    An id that is not pending is a ``not_waiting`` error; answering nothing is ``awaiting_approval``."""
    approve_all, approve_ids = _ids(approve)
    deny_all, deny_ids = _ids(deny)
    known = {a.id for a in pending}
    listing = ", ".join(sorted(known)) or "none"
    if approve_all and deny_all:
        raise UserError(ErrorCode.INVALID_INPUT, "approve=True and deny=True contradict each other; answer all one way, and name the exceptions")
    both = sorted(set(approve_ids) & set(deny_ids))
    if both:
        raise UserError(ErrorCode.INVALID_INPUT, f"{', '.join(both)} is both approved and denied; answer each approval once")
    stale = [i for i in [*approve_ids, *deny_ids] if i not in known]
    if stale:
        raise UserError(
            ErrorCode.NOT_WAITING,
            f"{', '.join(stale)} is not waiting for approval in run {run_id} (waiting: {listing}); "
            f"`moa runs show {run_id}` lists what waits",
        )
    answers = {i: True for i in approve_ids} | {i: False for i in deny_ids}
    for approval in pending:
        if approval.id not in answers and (approve_all or deny_all):
            answers[approval.id] = approve_all
    if not answers:
        raise UserError(
            ErrorCode.AWAITING_APPROVAL,
            f"run {run_id} is waiting for {len(known)} approval(s): {listing}; answer them with "
            f"`moa resume {run_id} --approve ID|all --deny ID|all` (Python: moa.resume({run_id!r}, approve=[...], deny=[...]))",
        )
    return answers


def resume_map(interrupts: Sequence[tuple[str, list[Approval]]], answers: dict[str, bool]) -> dict[str, dict[str, bool]]:
    """LangGraph's ``Command(resume=...)`` map: each open interrupt gets the answers to its own approvals."""
    out = {}
    for interrupt_id, approvals in interrupts:
        mine = {a.id: answers[a.id] for a in approvals if a.id in answers}
        if mine:
            out[interrupt_id] = mine
    return out
