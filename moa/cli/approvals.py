"""The CLI side of human in the loop: answering a waiting run, showing what waits and what was handed over.

A run that pauses for approvals is answered, in this order of preference: ``--approve-all`` /
``--deny-all`` (every approval, now and later in the run); ids given to ``moa resume --approve ID
--deny ID`` (``all`` means every one); on a terminal, a y/n question per approval; otherwise the
command stops with exit code 4 and prints how to answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table

from moa.cli.output import err, out
from moa.errors import ErrorCode, UserError
from moa.routing.approvals import Approval
from moa.workflow.results import Handoff

Reply = tuple[bool | list[str], bool | list[str]]
"""``(approve, deny)`` as :func:`moa.aresume` takes them."""

EXIT_WAITING = 4
EXIT_NEEDS_HUMAN = 5


def interactive() -> bool:
    """Whether a person can be asked: stdin and stderr are terminals."""
    return sys.stdin.isatty() and err.is_terminal


@dataclass
class Answers:
    """How this command answers approvals."""

    every: bool | None = None
    """``True``: approve everything, ``False``: deny everything (``--approve-all`` / ``--deny-all``)."""
    approve: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    """Ids named on the command line (answered once, on the first resume)."""
    ask: bool = False
    """Ask on the terminal when nothing else answers."""

    @classmethod
    def of(cls, *, approve_all: bool = False, deny_all: bool = False, approve: Sequence[str] = (), deny: Sequence[str] = ()) -> Answers:
        """From the flags; ``all`` as an id means every approval. Contradictions are a ``UserError``."""
        approve_all = approve_all or "all" in approve
        deny_all = deny_all or "all" in deny
        if approve_all and deny_all:
            raise UserError(ErrorCode.INVALID_INPUT, "approve all and deny all contradict each other; answer all one way, and name the exceptions")
        every = True if approve_all else (False if deny_all else None)
        return cls(every=every, approve=[i for i in approve if i != "all"], deny=[i for i in deny if i != "all"], ask=interactive())

    def first(self) -> Reply | None:
        """The answers given on the command line (named ids win over ``all``); ``None``: none."""
        if not (self.approve or self.deny or self.every is not None):
            return None
        return (True if self.every is True else list(self.approve)), (True if self.every is False else list(self.deny))

    def reply(self, pending: Sequence[Approval], pause: Callable[[], None] = lambda: None, go_on: Callable[[], None] = lambda: None) -> Reply | None:
        """The answers to a pause of the run, or ``None`` when nobody can answer now."""
        if self.every is not None:
            return (True, []) if self.every else ([], True)
        if not self.ask:
            return None
        pause()
        try:
            return self._ask(pending)
        finally:
            go_on()

    def _ask(self, pending: Sequence[Approval]) -> Reply:
        approve: list[str] = []
        deny: list[str] = []
        err.print(f"[bold]{len(pending)} step(s) wait for your approval[/] (y: approve, n: deny, a: approve all, d: deny all)", highlight=False)
        for index, approval in enumerate(pending):
            err.print(_describe(approval), highlight=False)
            choice = Prompt.ask("approve?", choices=["y", "n", "a", "d"], console=err)
            if choice in ("a", "d"):
                self.every = choice == "a"
                rest = [a.id for a in pending[index:]]
                (approve if self.every else deny).extend(rest)
                break
            (approve if choice == "y" else deny).append(approval.id)
        return approve, deny


def _describe(approval: Approval) -> str:
    where = " · ".join(p for p in (approval.subtask and f"subtask {approval.subtask}", approval.agent and f"agent {approval.agent}") if p)
    item = f"\n  item: {escape(_short(approval.item, 160))}" if approval.item else ""
    return f"[bold]{escape(approval.id)}[/] [dim]({escape(approval.rule)}{' · ' + escape(where) if where else ''})[/]\n  {escape(approval.reason)}{item}"


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def pending_table(pending: Sequence[Approval]) -> Table:
    table = Table(title="Waiting for approval", title_justify="left")
    for col in ("id", "kind", "subtask", "rule"):
        table.add_column(col, no_wrap=True)
    for col in ("what", "item"):
        table.add_column(col, overflow="fold")
    for a in pending:
        table.add_row(escape(a.id), a.kind, a.subtask or "", escape(a.rule), escape(a.reason), escape(_short(a.item, 70)))
    return table


def how_to_answer(run_id: str) -> str:
    return f"answer with: moa resume {run_id} --approve ID|all --deny ID|all"


def render_pending(run_id: str, pending: Sequence[Approval]) -> None:
    out.print(pending_table(pending))
    out.print(how_to_answer(run_id), highlight=False)


def render_handoff(handoff: Sequence[Handoff]) -> None:
    table = Table(title="Needs a person (no answer is trusted)", title_justify="left")
    for col in ("subtask", "item", "why", "attempts"):
        table.add_column(col, overflow="fold")
    for h in handoff:
        tries = "; ".join(
            f"{a.step}: " + (f"{a.error.code}" if a.error else f"{_short(str(a.output.model_dump() if a.output else None), 60)}")
            for a in h.attempts
        )
        table.add_row(h.subtask, escape(_short(h.item, 60)), escape(h.reason), escape(tries))
    out.print(table)
