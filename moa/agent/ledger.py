"""What a durable run keeps of its work inside a subtask, as the agent layer sees it: its finished
items, and its calls of tools with side effects.

A subtask's result is saved when the subtask finishes (:mod:`moa.workflow.scheduler`); a
:class:`Ledger` keeps what happens before that, so that a run killed in the middle of a subtask
neither redoes the items that had finished nor repeats a side effect:

* **items**: :meth:`Agent.run_batch <moa.agent.base.Agent.run_batch>` saves each finished item of
  a subtask as it finishes (its :class:`~moa.agent.results.AgentRun`), and a resumed run gets the
  saved ones back instead of running them again;
* **side-effect tool calls**: :func:`~moa.agent.tools.run_tool_loop` records a call of a tool with
  ``side_effects=True`` *before* it runs (:meth:`Ledger.begin_call`) and its result after
  (:meth:`Ledger.end_call`). A resumed run that makes the same call again gets the recorded result
  without calling the tool; a call recorded without a result (killed while it ran) may have had its
  effect, and is refused instead of being repeated.

The run context holds the run's ledger (``ctx.ledger``; ``None`` when the run is not durable: then
nothing is saved and tools are called as asked). :mod:`moa.workflow.ledger` keeps it in SQLite.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from moa.agent.results import AgentRun
from moa.errors import ErrorCode, ErrorInfo, MoaError, ModelUnavailable


@dataclass(frozen=True)
class CallKey:
    """One call of a side-effect tool in a run: where it was made, what it asked, and how many
    times the same call had been made there before (``occurrence``, from 1)."""

    subtask: str
    position: int
    """The item's position in its subtask (from 1; 0 outside an item)."""
    tool: str
    arguments: str
    """The arguments as canonical JSON (sorted keys)."""
    occurrence: int


class RecordedCall(BaseModel):
    """A side-effect call recorded by an earlier attempt of the run."""

    done: bool
    """Its result was recorded (``False``: the attempt stopped while the tool ran)."""
    result: Any = None
    error: ErrorInfo | None = None


def canonical(arguments: dict[str, Any]) -> str:
    """Arguments as canonical JSON: the same call gives the same text whatever the key order."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def worth_saving(run: AgentRun) -> bool:
    """Whether an item's run is its final word: not parked for approval, and not stopped by a
    condition a resume may lift (the budget, a model that could not be reached)."""
    if run.waiting is not None:
        return False
    return run.error is None or run.error.code != ErrorCode.BUDGET_EXCEEDED and run.error.code not in ModelUnavailable.codes


class Ledger(ABC):
    """A run's saved items and recorded side-effect calls (see the module docstring). One per
    attempt of the run: :meth:`key` counts the calls made in this attempt."""

    def __init__(self) -> None:
        self._made: Counter[tuple[str, int, str, str]] = Counter()

    def key(self, subtask: str | None, position: int | None, tool: str, arguments: dict[str, Any]) -> CallKey:
        """The key of a call about to be made (counted: the next identical call gets the next occurrence)."""
        where = (subtask or "", position or 0, tool, canonical(arguments))
        self._made[where] += 1
        return CallKey(*where, occurrence=self._made[where])

    @abstractmethod
    async def saved_items(self, subtask: str, items: Sequence[tuple[int, str]]) -> list[AgentRun | None]:
        """The saved run of each ``(position, item text)`` of ``subtask`` (``None``: not saved)."""

    @abstractmethod
    async def save_item(self, subtask: str, position: int, item: str, run: AgentRun) -> None:
        """Save a finished item's run (committed when this returns)."""

    @abstractmethod
    async def begin_call(self, key: CallKey) -> RecordedCall | None:
        """Record that the call ``key`` is about to run (committed when this returns), or return
        what an earlier attempt recorded of it (then nothing is written and the call must not run)."""

    @abstractmethod
    async def end_call(self, key: CallKey, result: Any = None, error: MoaError | None = None) -> None:
        """Record the result (or the error) of the call ``key``."""
