"""Choosing an agent's escalation thresholds from labelled data: ``moa calibrate AGENT DATA --cascade ...``.

:func:`acalibrate_thresholds` runs every step of the cascade on every item once (an eval with
``--sweep``, :mod:`moa.eval.runner`; resumable when given an ``out`` folder), then
:func:`choose_thresholds` replays the cascade from those answers (:func:`moa.eval.sweep.replay`,
no model call) at every combination of per-step thresholds on a grid (0, 0.05, ..., 1) and chooses
one by **k-fold cross-validation**: the items are split into ``k`` folds stratified by label; for
each fold the rule is chosen on the other folds (by the :class:`~moa.learning.thresholds.Goal`) and
scored on that fold, so the held-out accuracy reported is what the choosing procedure gives on
items it did not see. The thresholds stored are the ones the same procedure chooses on all items.

The chosen rule is compared, on the same items, with the agent's default threshold, with never
escalating (threshold 0: only failed answers climb) and with always answering on the top step.
Those have nothing fitted, so their accuracy on all items is already a held-out number.
:func:`calibrate_thresholds` is the synchronous wrapper, with a run context of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from moa.agent.base import Agent
from moa.agent.context import RunContext
from moa.agent.model import ModelAgent
from moa.errors import ErrorCode, UserError, check_no_running_loop
from moa.eval.records import ItemRecord, ResultStore
from moa.eval.runner import aevaluate, prepare
from moa.eval.sweep import SWEEP_THRESHOLDS, replay
from moa.eval.targets import AgentTarget
from moa.learning.store import thresholds_path
from moa.learning.thresholds import DEFAULT_FOLDS, MIN_PER_FOLD, Goal, RuleScore, ThresholdChoice
from moa.logs import get_logger
from moa.settings import Settings, load_settings
from moa.workflow.catalog import agent_catalog

log = get_logger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Rules:
    """Every candidate rule replayed on every item: rows are rules, columns items."""

    thresholds: list[tuple[float, ...]]
    """Per-step thresholds of each rule (all steps but the last)."""
    correct: npt.NDArray[np.bool_]
    climbs: npt.NDArray[np.int_]
    """Steps climbed past the first."""
    tokens: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]


def _replay_all(records: Sequence[ItemRecord], n_steps: int, rules: Sequence[Sequence[float | None]]) -> Rules:
    """``rules`` (thresholds per step) replayed on ``records`` (every step recorded: ``--sweep``)."""
    shape = (len(rules), len(records))
    correct, climbs = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.int_)
    tokens, cost = np.zeros(shape), np.zeros(shape)
    step_tokens = [[sum(u.tokens for u in a.usage) for a in r.attempts] for r in records]
    step_cost = [[sum(u.cost for u in a.usage) for a in r.attempts] for r in records]
    for i, thresholds in enumerate(rules):
        for j, record in enumerate(records):
            outcome = replay(record.attempts, n_steps, list(thresholds))
            if outcome is None:  # the item has no recorded answers (it failed before any step)
                continue
            if outcome.kept is not None:
                correct[i, j] = record.attempts[outcome.kept].prediction == record.gold
            climbs[i, j] = max(outcome.tried - 1, 0)
            tokens[i, j] = sum(step_tokens[j][: outcome.tried])
            cost[i, j] = sum(step_cost[j][: outcome.tried])
    return Rules([tuple(float(t) for t in r if t is not None) for r in rules], correct, climbs, tokens, cost)


def pick(rules: Rules, items: npt.NDArray[np.bool_], goal: Goal) -> int:
    """The rule ``goal`` chooses on the ``items`` (a mask): among the rules whose accuracy is within
    ``goal.within`` of the best (the best ones for ``accuracy``), the cheapest: fewest escalations,
    then fewest tokens, then the highest accuracy, then the lowest thresholds."""
    accuracy = rules.correct[:, items].mean(axis=1)
    climbs = rules.climbs[:, items].sum(axis=1)
    tokens = rules.tokens[:, items].sum(axis=1)
    best = float(accuracy.max())
    candidates = np.flatnonzero(accuracy >= best - goal.within - 1e-9)
    return int(min(candidates, key=lambda i: (int(climbs[i]), float(tokens[i]), -float(accuracy[i]), i)))


def stratified_folds(gold: Sequence[Any], folds: int, seed: int) -> npt.NDArray[np.int_]:
    """A fold number per item: each label's items shuffled (``seed``) and dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(gold), dtype=np.int_)
    position = 0
    for label in sorted({str(g) for g in gold}):
        members = np.flatnonzero(np.array([str(g) == label for g in gold]))
        for index in members[rng.permutation(len(members))]:
            fold[index] = position % folds
            position += 1
    return fold


def _score(
    name: str,
    steps: Sequence[str],
    thresholds: Sequence[float],
    correct: npt.NDArray[np.bool_],
    climbs: npt.NDArray[np.int_],
    tokens: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
) -> RuleScore:
    n = max(len(correct), 1)
    return RuleScore(
        name=name,
        thresholds={s: round(float(t), 4) for s, t in zip(steps[:-1], thresholds, strict=False)},
        accuracy=round(float(correct.sum()) / n, 4),
        escalated=round(float((climbs > 0).sum()) / n, 4),
        tokens_per_item=round(float(tokens.sum()) / n, 2),
        cost=round(float(cost.sum()), 6),
    )


@dataclass(frozen=True)
class Chosen:
    """What :func:`choose_thresholds` found."""

    thresholds: dict[str, float]
    held_out: list[RuleScore]
    fold_thresholds: list[dict[str, float]]
    folds: int


def folds_for(n: int, folds: int | None) -> int:
    """The folds to use for ``n`` items (at most :data:`DEFAULT_FOLDS` unless asked, each with at
    least :data:`MIN_PER_FOLD` items); a :class:`UserError` when ``n`` is too small."""
    k = folds if folds is not None else min(DEFAULT_FOLDS, n // MIN_PER_FOLD)
    if folds is not None and folds < 2:
        raise UserError(ErrorCode.BAD_CONFIG, f"--folds must be at least 2 (choose on some folds, score on another), got {folds}")
    if k < 2 or n < k * MIN_PER_FOLD:
        need = max(k, 2) * MIN_PER_FOLD
        raise UserError(
            ErrorCode.TOO_FEW_ITEMS,
            f"choosing thresholds by {max(k, 2)}-fold cross-validation needs at least {need} labelled items ({MIN_PER_FOLD} per held-out fold), "
            f"got {n}; give more labelled data (or a larger --limit){' or fewer --folds' if folds is not None and folds > 2 else ''}",
        )
    return k


def choose_thresholds(
    records: Sequence[ItemRecord],
    steps: Sequence[str],
    *,
    goal: Goal,
    folds: int | None = None,
    seed: int = 0,
    default: float | None = 0.7,
    grid: Sequence[float] = SWEEP_THRESHOLDS,
) -> Chosen:
    """Per-step thresholds for the cascade ``steps`` chosen from ``records`` (every step answered
    every item) by k-fold cross-validation (see the module docstring)."""
    if len(steps) < 2:
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"a cascade of one step ({', '.join(steps)}) has no threshold to choose; give two steps or more, e.g. --cascade specialist,slm",
        )
    k = folds_for(len(records), folds)
    candidates: list[tuple[float | None, ...]] = list(itertools.product(grid, repeat=len(steps) - 1))
    rules = _replay_all(records, len(steps), candidates)
    fold = stratified_folds([r.gold for r in records], k, seed)
    n = len(records)
    correct, climbs = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int_)
    tokens, cost = np.zeros(n), np.zeros(n)
    fold_thresholds = []
    for f in range(k):
        test = fold == f
        chosen = pick(rules, ~test, goal)  # chosen without the held-out fold...
        correct[test], climbs[test] = rules.correct[chosen, test], rules.climbs[chosen, test]  # ...and scored on it
        tokens[test], cost[test] = rules.tokens[chosen, test], rules.cost[chosen, test]
        fold_thresholds.append(dict(zip(steps[:-1], rules.thresholds[chosen], strict=True)))
    final = rules.thresholds[pick(rules, np.ones(n, dtype=bool), goal)]
    scores = [_score("chosen", steps, final, correct, climbs, tokens, cost)]
    fixed: list[tuple[str, tuple[float | None, ...]]] = [
        (f"default ({default:g})" if default is not None else "default (none)", (default,) * (len(steps) - 1)),
        ("never escalate", (0.0,) * (len(steps) - 1)),
    ]
    for name, thresholds in fixed:
        rule = _replay_all(records, len(steps), [thresholds])
        scores.append(_score(name, steps, rule.thresholds[0], rule.correct[0], rule.climbs[0], rule.tokens[0], rule.cost[0]))
    top = [r.attempts[len(steps) - 1] if len(r.attempts) >= len(steps) else None for r in records]
    scores.append(
        RuleScore(
            name=f"always {steps[-1]}",
            accuracy=round(sum(a is not None and a.error is None and a.prediction == r.gold for a, r in zip(top, records, strict=True)) / n, 4),
            escalated=1.0,
            tokens_per_item=round(sum(u.tokens for a in top if a is not None for u in a.usage) / n, 2),
            cost=round(sum(u.cost for a in top if a is not None for u in a.usage), 6),
        )
    )
    log.info("thresholds_chosen", steps=list(steps), thresholds=final, goal=str(goal), folds=k, items=n, held_out=scores[0].accuracy)
    return Chosen(thresholds=dict(zip(steps[:-1], final, strict=True)), held_out=scores, fold_thresholds=fold_thresholds, folds=k)


async def acalibrate_thresholds(
    agent: str,
    data: str | Path,
    *,
    ctx: RunContext,
    cascade: Sequence[str],
    goal: Goal | str = "accuracy",
    folds: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    label_map: Mapping[str, str] | None = None,
    out: Path | None = None,
    agents: Sequence[Agent[Any, Any]] = (),
    on_progress: Progress | None = None,
) -> tuple[ThresholdChoice, Path]:
    """Run every step of ``cascade`` on every item of ``data`` (kept in ``out`` when given, so a
    second call with another goal calls no model), choose the thresholds and store them for the
    agent, its task and the cascade. Returns the choice and where it is stored."""
    goal = goal if isinstance(goal, Goal) else Goal.parse(goal)
    found = agent_catalog(agents).get(agent)
    if isinstance(found, ModelAgent) and cascade:
        merged = found.with_policy(cascade=list(cascade)).policy(ctx).steps
        if len(merged) < 2:
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"the cascade {','.join(cascade)} runs on one model here ({', '.join(s.spec or s.name for s in merged)}): there is no threshold to choose; "
                "give steps on different models, e.g. --cascade specialist,slm after `moa train`",
            )
    prepared = prepare(agent, data, ctx=ctx, limit=limit, seed=seed, options=options, label_map=label_map, cascade=list(cascade), sweep=True, agents=agents)
    target = prepared.target
    if not isinstance(target, AgentTarget) or not isinstance(target.agent, ModelAgent) or prepared.dataset.kind != "classification":
        raise UserError(
            ErrorCode.INVALID_INPUT, f"thresholds are chosen for a classification agent on labelled data; {agent!r} on {prepared.dataset.name} is not"
        )
    folds_for(len(prepared.examples), folds)  # too little data: say so before any model runs
    steps = [s.name for s in target.steps]
    key = target.agent.specialist_key(target.agent.make_input("x", target.options)) or ""
    with tempfile.TemporaryDirectory(prefix="moa-thresholds-") as scratch:
        folder = out or Path(scratch)
        await aevaluate(prepared, folder, ctx=ctx, on_progress=on_progress)
        wanted = {e.id for e in prepared.examples}
        records = [r for r in {r.id: r for r in ResultStore(folder).read()}.values() if r.id in wanted]
    chosen = choose_thresholds(records, steps, goal=goal, folds=folds, seed=seed, default=target.threshold)
    choice = ThresholdChoice(
        agent=agent, key=key, steps=steps, models=target.agent.step_models(ctx, target.agent.make_input("x", target.options), target.steps), thresholds=chosen.thresholds,
        goal=str(goal), folds=chosen.folds, n=len(records), data=prepared.config.data, seed=seed, held_out=chosen.held_out,
        fold_thresholds=chosen.fold_thresholds,
    )  # fmt: skip
    path = thresholds_path(ctx.settings, agent, key, steps)
    choice.save(path)
    return choice, path


def calibrate_thresholds(
    agent: str, data: str | Path, *, cascade: Sequence[str], goal: Goal | str = "accuracy", settings: Settings | None = None, **options: Any
) -> tuple[ThresholdChoice, Path]:
    """Synchronous :func:`acalibrate_thresholds` in a run context of its own (``settings``, else the
    loaded ones); ``options`` go to it (``folds``, ``limit``, ``seed``, ``options``, ``label_map``,
    ``out``, ``agents``). Refuses to run inside an event loop."""
    check_no_running_loop("moa.eval.calibrate_thresholds", "moa.eval.acalibrate_thresholds")

    async def go() -> tuple[ThresholdChoice, Path]:
        ctx = RunContext.create(settings or load_settings())
        try:
            return await acalibrate_thresholds(agent, data, ctx=ctx, cascade=cascade, goal=goal, **options)
        finally:
            await ctx.aclose()

    return asyncio.run(go())
