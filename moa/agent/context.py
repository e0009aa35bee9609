"""Run-scoped dependencies, injected into agents and graph nodes (never global).

A :class:`RunContext` holds the settings, the model backends, the shared memory and the
embedder of one run, its budget and per-tier concurrency limits, what moa learned (specialists,
calibrations, the example store), and an event sink for progress views. Everything heavy is built
lazily, so a run that uses none of it never loads it.

:meth:`RunContext.call` is the one door every model call goes through (:mod:`moa.agent.calls`):
budget and approvals before, usage, cost, events and logs after.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from moa.agent import calls
from moa.agent.calls import CallScope, Purpose
from moa.agent.ledger import Ledger
from moa.agent.results import AgentRun
from moa.errors import MoaError
from moa.learning.store import ExampleStore, Learned, calibration_path, learned_files, specialist_path, thresholds_path
from moa.logs import enabled, get_logger
from moa.models.base import GenerateRequest, Generation, ModelBackend
from moa.models.registry import Models
from moa.routing.approvals import Decisions
from moa.routing.budget import Budget
from moa.routing.policy import Policy, Step, resolve_cascade, step_of, threshold_for
from moa.settings import Settings

if TYPE_CHECKING:
    from moa.learning.calibration import Calibration
    from moa.learning.specialist import Specialist
    from moa.learning.tagger import Tagger
    from moa.learning.thresholds import ThresholdChoice
    from moa.memory.chroma import Memory
    from moa.models.embeddings import Embedder

log = get_logger(__name__)


@dataclass(frozen=True)
class Event:
    """A progress event (subtask started/finished, item done) for live views."""

    kind: str
    subtask: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


class JournalEntry(NamedTuple):
    """One finished item of an agent batch."""

    subtask: str | None
    agent: str
    position: int
    item: str
    run: AgentRun

def new_run_id() -> str:
    """A fresh run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def _ignore(_: Event) -> None:
    return None


@dataclass
class RunContext:
    """Everything one run needs. Build it with :meth:`create`."""

    settings: Settings
    models: Models
    run_id: str = field(default_factory=new_run_id)
    on_event: EventSink = _ignore
    _memory: Memory | None = None
    _embedder: Embedder | None = None
    budget: Budget = field(default_factory=Budget)
    journal: list[JournalEntry] = field(default_factory=list)
    """Every finished item, in finishing order (partial results survive an interrupted run through it)."""
    decisions: Decisions = field(default_factory=Decisions)
    """A person's answers to this run's approvals so far (:mod:`moa.routing.approvals`)."""
    ledger: Ledger | None = None
    """Where a durable run keeps its finished items and side-effect tool calls (:mod:`moa.agent.ledger`;
    set by the driver, ``None`` when the run is not durable)."""
    _cache: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)
    _slots: dict[str, asyncio.Semaphore | None] = field(default_factory=dict)
    _learned: dict[tuple[str, ...], Any] = field(default_factory=dict)
    _examples: ExampleStore | None = None
    info_logs: bool = field(default_factory=lambda: enabled(logging.INFO), init=False)
    """Whether info logs are emitted (asked once per run; per-subtask info logs are skipped otherwise)."""
    debug_logs: bool = field(default_factory=lambda: enabled(logging.DEBUG), init=False)
    """Whether debug logs are emitted (one per model call)."""

    @classmethod
    def create(
        cls,
        settings: Settings | None = None,
        *,
        models: Models | None = None,
        memory: Memory | None = None,
        embedder: Embedder | None = None,
        on_event: EventSink | None = None,
        run_id: str | None = None,
    ) -> RunContext:
        settings = settings or (models.settings if models is not None else Settings())
        return cls(
            settings=settings,
            models=models or Models(settings),
            run_id=run_id or new_run_id(),
            on_event=on_event or _ignore,
            budget=Budget.from_settings(settings),
            _memory=memory,
            _embedder=embedder,
        )

    def for_run(self, settings: Settings, run_id: str, on_event: EventSink | None) -> RunContext:
        """A context for another run that shares this one's models, memory and embedder, with
        its own budget, journal, approvals and per-run caches."""
        if self._examples is not None:
            self._examples.forget()
        return dataclasses.replace(
            self, settings=settings, run_id=run_id, on_event=on_event or self.on_event, budget=Budget.from_settings(settings),
            journal=[], decisions=Decisions(), ledger=None, _cache={}, _learned={},
        )  # fmt: skip

    def embedder(self) -> Embedder:
        if self._embedder is None:
            from moa.models.embeddings import make_embedder

            self._embedder = make_embedder(self.settings.embedder)
        return self._embedder

    def memory(self) -> Memory:
        if self._memory is None:
            from moa.memory.chroma import ChromaMemory

            s = self.settings
            if s.memory_url:
                self._memory = ChromaMemory(url=s.memory_url, embedder=self.embedder())
            else:
                self._memory = ChromaMemory(s.memory_dir, embedder=self.embedder())
        return self._memory

    async def cached(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Compute a value once per run and key, even when many tasks ask at the same time.

        Returns the value and whether this caller was the one that computed it.
        """
        future = self._cache.get(key)
        first = future is None
        if future is None:
            future = self._cache[key] = asyncio.ensure_future(compute())
        return await asyncio.shield(future), first

    def policy(self, agent: str, default_threshold: float | None, cascade: Sequence[str | ModelBackend] | None = None) -> Policy:
        """The escalation policy of ``agent`` in this run: its own ``cascade`` if given, else the
        run's (validated once per run); consecutive steps on the same model are merged."""
        cache_key = ("cascade", *(e if isinstance(e, str) else f"{e.spec}#{id(e)}" for e in cascade or ()))
        policy_key = ("policy", agent, str(default_threshold), *cache_key)
        if (known_policy := self._learned.get(policy_key)) is not None:
            return known_policy  # type: ignore[no-any-return]
        steps = self._learned.get(cache_key)
        if steps is None:
            entries: list[str] = []
            known: set[str] = set()
            for entry in cascade or self.settings.cascade:
                if isinstance(entry, ModelBackend):
                    self.models.register(entry)
                    known.add(entry.spec)
                    entry = entry.spec
                entries.append(entry)
            merged: list[Step] = []
            for step in resolve_cascade(self.settings, entries, known):
                if merged and step.spec is not None and merged[-1].spec is not None and self.backend_for(merged[-1]) is self.backend_for(step):
                    continue  # the same model twice in a row: one step
                merged.append(step)
            steps = self._learned[cache_key] = tuple(merged)
        policy = self._learned[policy_key] = Policy(steps=steps, threshold=threshold_for(self.settings, agent, default_threshold), escalate=self.settings.escalate)
        return policy

    async def call(
        self, step: Step | str, request: GenerateRequest, *, purpose: Purpose, ask_as: str | None = None, reason: str | None = None
    ) -> Generation:
        """Call the model of ``step`` (a :class:`Step`, or ``slm`` / ``llm`` / a model spec) through the
        one door: budget and approvals first, then the backend (through the cache), then usage,
        cost, the ``model_call`` event and a debug log (:mod:`moa.agent.calls`).

        Args:
            purpose: what the call is for (``agent``, ``plan``, ``synthesize``, ``answer``...), in the usage record.
            ask_as: in a graph node, the approval id to pause the run under when a rule gates this
                step (e.g. ``"plan"``); without it, a gated call raises
                :class:`~moa.routing.approvals.AwaitingApproval` for the caller to park.
            reason: what the call would do, in words, for the person who approves it.

        Raises:
            BudgetExceeded: the run's budget is used up.
            ApprovalDenied: a person denied the step.
            ModelUnavailable, ModelFailed: the backend's failures.
        """
        return await calls.call(self, self.step(step) if isinstance(step, str) else step, request, purpose=purpose, ask_as=ask_as, reason=reason)

    def approve(self, step: Step | str, *, ask_as: str, reason: str | None = None, purpose: str = "agent") -> None:
        """Ask once, in a graph node, for the approval that calls on ``step`` need here (before
        calls made concurrently; they then find the answer). Raises
        :class:`~moa.errors.ApprovalDenied` when denied; returns at once when no rule gates ``step``."""
        approval = calls.step_approval(self, self.step(step) if isinstance(step, str) else step, purpose=purpose, ask_as=ask_as, reason=reason)
        if approval is not None:
            calls.approve(self, approval, ask_as=ask_as)

    def step(self, name: str) -> Step:
        """The cascade step ``slm``, ``llm`` or a model spec (validated)."""
        return step_of(self.settings, name)

    @staticmethod
    def scope(
        *, subtask: str | None = None, agent: str | None = None, item: str | None = None, position: int | None = None, reason: str | None = None
    ) -> contextlib.AbstractContextManager[CallScope]:
        """A :class:`~moa.agent.calls.CallScope` for the calls made inside it: ``with ctx.scope() as s: ...; s.usage``."""
        return calls.open_scope(subtask=subtask, agent=agent, item=item, position=position, reason=reason)

    def backend_for(self, step: Step) -> ModelBackend:
        """The backend a model step runs on (tiers honour backends injected into :class:`Models`)."""
        if step.name in ("slm", "llm"):
            return self.models.tier(step.name)  # type: ignore[arg-type]
        return self.models.get(step.spec or step.name)

    @contextlib.asynccontextmanager
    async def slot(self, step: str) -> AsyncIterator[None]:
        """Hold one of the step's concurrency slots (``slm_concurrency`` / ``llm_concurrency``)."""
        semaphore = self.slots(step)
        if semaphore is None:
            yield
            return
        async with semaphore:
            yield

    def slots(self, step: str) -> asyncio.Semaphore | None:
        """The semaphore bounding concurrent calls on ``step`` (``None``: no limit)."""
        if step not in self._slots:
            limit = {"slm": self.settings.slm_concurrency, "llm": self.settings.llm_concurrency}.get(step)
            self._slots[step] = asyncio.Semaphore(limit) if limit is not None else None
        return self._slots[step]

    def _load_once(self, key: tuple[str, ...], where: Callable[[], Path], load: Callable[[Path], Any]) -> Any:
        """What ``load(where())`` gives, once per run; ``None`` when the file is missing or unusable."""
        if key not in self._learned:
            found = None
            path = where()
            if path.exists():
                try:
                    found = load(path)
                except MoaError as exc:
                    log.warning("learned_file_unusable", kind=key[0], agent=key[1], path=str(path), error=exc.message)
            self._learned[key] = found
        return self._learned[key]

    def specialist(self, agent: str, key: str) -> Specialist | None:
        """The trained specialist for ``agent`` on the task ``key``, if there is one (loaded once)."""
        from moa.learning.specialist import Specialist

        found = self._load_once(("specialist", agent, key), lambda: specialist_path(self.settings, agent, key), Specialist.load)
        return found if found is not None and found.key == key else None  # type: ignore[no-any-return]

    def tagger(self, path: Path) -> Tagger | None:
        """The entity tagger at ``path`` (``moa train extraction``, or one shipped with an agent), if it
        is there and readable (loaded once a run)."""
        from moa.learning.tagger import Tagger

        return self._load_once(("tagger", path.parent.name, str(path)), lambda: path, Tagger.load)  # type: ignore[no-any-return]

    def calibration(self, agent: str, model: str, key: str) -> Calibration | None:
        """The confidence calibration of ``agent`` on ``model`` for the task ``key`` (its label set;
        ``moa calibrate``), if there is one: a calibration is never applied to another label set."""
        from moa.learning.calibration import Calibration

        found = self._load_once(("calibration", agent, model, key), lambda: calibration_path(self.settings, agent, model, key), Calibration.load)
        return found if found is not None and found.key == key and found.model == model else None  # type: ignore[no-any-return]

    def thresholds(self, agent: str, key: str, steps: Sequence[str]) -> ThresholdChoice | None:
        """The thresholds chosen from data for ``agent`` on the task ``key`` and the cascade ``steps``
        (``moa calibrate --cascade``), if there are (loaded once a run)."""
        from moa.learning.thresholds import ThresholdChoice

        found = self._load_once(("thresholds", agent, key, *steps), lambda: thresholds_path(self.settings, agent, key, steps), ThresholdChoice.load)
        return found if found is not None and found.key == key and found.steps == list(steps) else None  # type: ignore[no-any-return]

    def learned(self, agent: str) -> list[Learned]:
        """Every specialist and calibration file of ``agent``, whatever its task (read once a run)."""
        key = ("learned", agent)
        if key not in self._learned:
            self._learned[key] = learned_files(self.settings, agent)
        return self._learned[key]  # type: ignore[no-any-return]

    def examples(self) -> ExampleStore:
        """The store of examples answered by higher steps."""
        if self._examples is None:
            self._examples = ExampleStore(self.settings, self.embedder())
        return self._examples

    @property
    def listening(self) -> bool:
        """Whether anyone listens to this run's events (build costly event data only then)."""
        return self.on_event is not _ignore

    def emit(self, kind: str, subtask: str | None = None, **data: Any) -> None:
        if self.on_event is not _ignore:
            self.on_event(Event(kind, subtask, data))

    async def aclose(self) -> None:
        if self._examples is not None:
            self._examples.close()
        await self.models.aclose()
