"""The options a run is recorded with, and what a resume may change about them.

A run's behaviour and its limits come from settings that are often given as flags (``--approval``,
``--budget-*``, ``--cascade``, ``--threshold``, ``--no-cache``, ``--memory-dir``, ``-o``). They are
recorded with the run in the run index (:class:`RunOptions`) and :func:`restore` puts them back when
the run is resumed, so a kill or an approval pause never drops an approval rule or a budget.

A resume may only *tighten* the safety options (:data:`TIGHTENABLE`): add approval rules, lower a
budget, hand weak answers to a person. A looser value given explicitly is refused
(``resume_loosens``); a looser value that merely comes from the environment or ``moa.toml`` at
resume time is ignored (the recorded one stays). Each tightening is recorded (:class:`Tightening`).

Not recorded: model specs and timeouts (a resume may use other models), credentials (API keys,
``memory_url``, which may carry a password), and where state lives (``state_dir``, ``checkpoint_url``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from moa.errors import ErrorCode, UserError
from moa.settings import ConfidenceMethod, OnUnsure, PlannerChoice, Settings, check_rule

TIGHTENABLE = ("approve", "budget_tokens", "budget_cost", "budget_seconds", "on_unsure")
"""The options a resume may change, and only towards stricter values."""


class RunOptions(BaseModel):
    """The settings a run was started with that decide what it may do and how it behaves."""

    approve: list[str] = Field(default_factory=list)
    budget_tokens: int | None = None
    budget_cost: float | None = None
    budget_seconds: float | None = None
    on_unsure: OnUnsure = "keep"
    planner: PlannerChoice = "auto"
    cascade: list[str] = Field(default_factory=list)
    threshold: float | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    escalate: bool = True
    confidence: ConfidenceMethod = "auto"
    samples: int = 5
    route_long_chars: int | None = None
    route_non_latin: float | None = None
    shots_from_examples: int = 4
    cache: bool = True
    cache_ttl: float = 7 * 24 * 3600
    memory_dir: Path | None = None
    embedder: str = "minilm"
    max_steps: int = 100
    output: Path | None = None
    """Where the result is also written as JSON (``-o``); not a setting, a resume writes there too."""

    @classmethod
    def of(cls, settings: Settings, output: Path | None = None) -> RunOptions:
        """The options ``settings`` give a run (and its ``output`` file)."""
        fields = {name: getattr(settings, name) for name in cls.model_fields if name != "output"}
        return cls.model_validate({**fields, "output": output})

    def settings_update(self) -> dict[str, Any]:
        """These options as an update of :class:`Settings` (``Settings.model_copy(update=...)``)."""
        update = {name: getattr(self, name) for name in type(self).model_fields if name != "output"}
        if self.memory_dir is None:
            del update["memory_dir"]
        return update


class Tightening(BaseModel):
    """An option a resume made stricter than the run had it."""

    option: str
    before: Any
    after: Any
    attempt: int
    """The attempt that tightened it (2 is the first resume)."""


_ON_UNSURE_ORDER = {"keep": 0, "needs_human": 1}


def _looser(option: str, recorded: Any, given: Any) -> bool:
    """Whether ``given`` would loosen ``recorded`` (a ``None`` budget is no limit)."""
    if option == "approve":
        return not set(recorded) <= set(given)
    if option == "on_unsure":
        return bool(_ON_UNSURE_ORDER[given] < _ON_UNSURE_ORDER[recorded])
    return recorded is not None and (given is None or given > recorded)


def _merge(option: str, recorded: Any, given: Any) -> Any:
    """The stricter of ``recorded`` and ``given`` (approval rules: both sets, recorded ones first)."""
    if option == "approve":
        return [*recorded, *(rule for rule in given if rule not in recorded)]
    return recorded if _looser(option, recorded, given) else given


def _check(tighten: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(tighten) - set(TIGHTENABLE))
    if unknown:
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"a resume cannot change {', '.join(unknown)}; it may only tighten {', '.join(TIGHTENABLE)} "
            "(the run's other options are kept as it was started; start a new run to change them)",
        )
    checked = dict(tighten)
    if "approve" in checked:
        try:
            checked["approve"] = [check_rule(rule) for rule in checked["approve"]]
        except ValueError as exc:
            raise UserError(ErrorCode.BAD_CONFIG, str(exc)) from exc
    if "on_unsure" in checked and checked["on_unsure"] not in _ON_UNSURE_ORDER:
        raise UserError(ErrorCode.BAD_CONFIG, f"on_unsure must be one of {', '.join(_ON_UNSURE_ORDER)}, not {checked['on_unsure']!r}")
    for name in ("budget_tokens", "budget_cost", "budget_seconds"):
        if name in checked and checked[name] is not None and not checked[name] > 0:
            raise UserError(ErrorCode.BAD_CONFIG, f"{name} must be greater than 0, not {checked[name]!r}")
    return checked


def restore(
    run_id: str, recorded: RunOptions, settings: Settings, *, tighten: Mapping[str, Any] | None = None, attempt: int = 2
) -> tuple[Settings, RunOptions, list[Tightening]]:
    """The settings to resume ``run_id`` with: ``settings`` with the recorded options put back.

    Each tightenable option is the stricter of the recorded value, the value in ``settings`` and the
    one in ``tighten``; an option in ``tighten`` that is looser than the recorded one is refused.

    Returns:
        The settings, the options now in force (to record), and what was tightened.

    Raises:
        UserError: ``resume_loosens`` for a looser value in ``tighten``; ``invalid_input`` for an
            option a resume cannot change.
    """
    given = _check(tighten or {})
    loosened = [name for name, value in given.items() if _looser(name, getattr(recorded, name), value)]
    if loosened:
        was = ", ".join(f"{name}={getattr(recorded, name)!r}" for name in loosened)
        asked = ", ".join(f"{name}={given[name]!r}" for name in loosened)
        raise UserError(
            ErrorCode.RESUME_LOOSENS,
            f"run {run_id} was started with {was}; a resume may only tighten a run's limits (more approval rules, "
            f"lower budgets), not set {asked}; resume without it, or start a new run with the looser limits",
        )
    values = recorded.model_dump()
    changes: list[Tightening] = []
    for name in TIGHTENABLE:
        before = values[name]
        after = _merge(name, before, getattr(settings, name))
        if name in given:
            after = _merge(name, after, given[name])
        if after != before:
            values[name] = after
            changes.append(Tightening(option=name, before=before, after=after, attempt=attempt))
    options = RunOptions.model_validate(values)
    return settings.model_copy(update=options.settings_update()), options, changes


def tightened(settings: Settings, given: Mapping[str, Any]) -> Settings:
    """``settings`` with the tightenable options in ``given`` applied where they are stricter (a
    caller, e.g. a server request, may add approval rules or lower budgets, never loosen them)."""
    checked = _check(given)
    update = {name: _merge(name, getattr(settings, name), value) for name, value in checked.items()}
    return settings.model_copy(update=update)
