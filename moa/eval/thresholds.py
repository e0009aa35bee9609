"""Choosing an agent's escalation thresholds from labelled data: ``moa calibrate AGENT DATA --cascade ...``.

:func:`acalibrate_thresholds` runs every step of the cascade on every item once (an eval with
``--sweep``, :mod:`moa.eval.runner`; resumable when given an ``out`` folder), then
:func:`choose_thresholds` replays the cascade from those answers (:func:`moa.eval.sweep.replay`,
no model call) at every combination of per-step thresholds on a grid (0, 0.05, ..., 1) and chooses
one by **k-fold cross-validation**: the items are split into ``k`` folds (stratified by label for
classification; entity data has no single label per item, so its items are dealt at random); for
each fold the rule is chosen on the other folds (by the :class:`~moa.learning.thresholds.Goal`) and
scored on that fold, so the held-out quality reported is what the choosing procedure gives on
items it did not see. The thresholds stored are the ones the same procedure chooses on all items.

The quality is accuracy for a classification agent and micro entity F1 for the extraction agent:
each rule × item carries score components that add over items (:mod:`moa.eval.quality`: correct
and 1; true positives, false positives and false negatives), and a set of items' quality is that
of their sums.

The chosen rule is compared, on the same items, with the agent's default threshold, with never
escalating (threshold 0: only failed answers climb) and with always answering on the top step.
Those have nothing fitted, so their quality on all items is already a held-out number.
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
from moa.eval.quality import METRIC, WIDTH, components, quality
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

    kind: str
    """The data kind (``classification``, ``entities``): what the score components are (:mod:`moa.eval.quality`)."""
    thresholds: list[tuple[float, ...]]
    """Per-step thresholds of each rule (all steps but the last)."""
    parts: npt.NDArray[np.float64]
    """Score components of the kept answer (rules × items × components; they add over items)."""
    climbs: npt.NDArray[np.int_]
    """Steps climbed past the first."""
    tokens: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]

    def quality(self, items: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        """Each rule's quality (accuracy, F1) over the ``items`` (a mask)."""
        return quality(self.kind, self.parts[:, items].sum(axis=1))


def _replay_all(records: Sequence[ItemRecord], n_steps: int, rules: Sequence[Sequence[float | None]], kind: str = "classification") -> Rules:
    """``rules`` (thresholds per step) replayed on ``records`` (every step recorded: ``--sweep``)."""
    shape = (len(rules), len(records))
    parts, climbs = np.zeros((*shape, WIDTH[kind])), np.zeros(shape, dtype=np.int_)
    tokens, cost = np.zeros(shape), np.zeros(shape)
    step_tokens = [[sum(u.tokens for u in a.usage) for a in r.attempts] for r in records]
    step_cost = [[sum(u.cost for u in a.usage) for a in r.attempts] for r in records]
    missing = [components(kind, None, r.gold) for r in records]
    for i, thresholds in enumerate(rules):
        for j, record in enumerate(records):
            outcome = replay(record.attempts, n_steps, list(thresholds))
            if outcome is None:  # the item has no recorded answers (it failed before any step)
                parts[i, j] = missing[j]
                continue
            parts[i, j] = components(kind, record.attempts[outcome.kept].prediction, record.gold) if outcome.kept is not None else missing[j]
            climbs[i, j] = max(outcome.tried - 1, 0)
            tokens[i, j] = sum(step_tokens[j][: outcome.tried])
            cost[i, j] = sum(step_cost[j][: outcome.tried])
    return Rules(kind, [tuple(float(t) for t in r if t is not None) for r in rules], parts, climbs, tokens, cost)


def pick(rules: Rules, items: npt.NDArray[np.bool_], goal: Goal) -> int:
    """The rule ``goal`` chooses on the ``items`` (a mask): among the rules whose quality (accuracy,
    F1) is within ``goal.within`` of the best (the best ones for ``accuracy``), the cheapest: fewest
    escalations, then fewest tokens, then the highest quality, then the lowest thresholds."""
    score = rules.quality(items)
    climbs = rules.climbs[:, items].sum(axis=1)
    tokens = rules.tokens[:, items].sum(axis=1)
    best = float(score.max())
    candidates = np.flatnonzero(score >= best - goal.within - 1e-9)
    return int(min(candidates, key=lambda i: (int(climbs[i]), float(tokens[i]), -float(score[i]), i)))


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


def folds_of(kind: str, gold: Sequence[Any], folds: int, seed: int) -> npt.NDArray[np.int_]:
    """:func:`stratified_folds` by label for classification; other kinds have no single label per
    item, so their items are shuffled and dealt round the folds."""
    return stratified_folds(gold if kind == "classification" else [""] * len(gold), folds, seed)


def _score(
    name: str,
    steps: Sequence[str],
    thresholds: Sequence[float],
    kind: str,
    parts: npt.NDArray[np.float64],
    climbs: npt.NDArray[np.int_],
    tokens: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
) -> RuleScore:
    n = max(len(climbs), 1)
    metric = METRIC[kind]
    return RuleScore.model_validate(
        {
            "name": name,
            "thresholds": {s: round(float(t), 4) for s, t in zip(steps[:-1], thresholds, strict=False)},
            "metric": metric,
            metric: round(float(quality(kind, parts.sum(axis=0))), 4),
            "escalated": round(float((climbs > 0).sum()) / n, 4),
            "tokens_per_item": round(float(tokens.sum()) / n, 2),
            "cost": round(float(cost.sum()), 6),
        }
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
    kind: str = "classification",
) -> Chosen:
    """Per-step thresholds for the cascade ``steps`` chosen from ``records`` (every step answered
    every item) by k-fold cross-validation (see the module docstring). ``kind`` is the data's:
    ``classification`` (accuracy, folds stratified by label) or ``entities`` (micro entity F1)."""
    if kind not in METRIC:
        raise UserError(
            ErrorCode.INVALID_INPUT, f"thresholds are chosen on classification or entity data, not {kind}; use a classification agent or extraction"
        )
    if len(steps) < 2:
        raise UserError(
            ErrorCode.BAD_CONFIG,
            f"a cascade of one step ({', '.join(steps)}) has no threshold to choose; give two steps or more, e.g. --cascade specialist,slm",
        )
    k = folds_for(len(records), folds)
    candidates: list[tuple[float | None, ...]] = list(itertools.product(grid, repeat=len(steps) - 1))
    rules = _replay_all(records, len(steps), candidates, kind)
    fold = folds_of(kind, [r.gold for r in records], k, seed)
    n = len(records)
    parts, climbs = np.zeros((n, rules.parts.shape[-1])), np.zeros(n, dtype=np.int_)
    tokens, cost = np.zeros(n), np.zeros(n)
    fold_thresholds = []
    for f in range(k):
        test = fold == f
        chosen = pick(rules, ~test, goal)  # chosen without the held-out fold...
        parts[test], climbs[test] = rules.parts[chosen, test], rules.climbs[chosen, test]  # ...and scored on it
        tokens[test], cost[test] = rules.tokens[chosen, test], rules.cost[chosen, test]
        fold_thresholds.append(dict(zip(steps[:-1], rules.thresholds[chosen], strict=True)))
    final = rules.thresholds[pick(rules, np.ones(n, dtype=bool), goal)]
    scores = [_score("chosen", steps, final, kind, parts, climbs, tokens, cost)]
    fixed: list[tuple[str, tuple[float | None, ...]]] = [
        (f"default ({default:g})" if default is not None else "default (none)", (default,) * (len(steps) - 1)),
        ("never escalate", (0.0,) * (len(steps) - 1)),
    ]
    for name, thresholds in fixed:
        rule = _replay_all(records, len(steps), [thresholds], kind)
        scores.append(_score(name, steps, rule.thresholds[0], kind, rule.parts[0], rule.climbs[0], rule.tokens[0], rule.cost[0]))
    top = [r.attempts[len(steps) - 1] if len(r.attempts) >= len(steps) else None for r in records]
    top_parts = np.array([components(kind, a.prediction if a is not None and a.error is None else None, r.gold) for a, r in zip(top, records, strict=True)])
    top_usage = [u for a in top if a is not None for u in a.usage]
    top_tokens, top_cost = np.array([float(sum(u.tokens for u in top_usage))]), np.array([sum(u.cost for u in top_usage)])
    scores.append(_score(f"always {steps[-1]}", [], [], kind, top_parts, np.ones(n, dtype=np.int_), top_tokens, top_cost))
    log.info("thresholds_chosen", steps=list(steps), thresholds=final, goal=str(goal), folds=k, items=n, held_out=scores[0].quality, metric=METRIC[kind])
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
    kind = prepared.dataset.kind
    if not isinstance(target, AgentTarget) or not isinstance(target.agent, ModelAgent) or kind not in METRIC or not prepared.examples:
        raise UserError(
            ErrorCode.INVALID_INPUT,
            f"thresholds are chosen for a classification agent on labelled data or for extraction on CoNLL data; {agent!r} on {prepared.dataset.name} is not",
        )
    folds_for(len(prepared.examples), folds)  # too little data: say so before any model runs
    steps = [s.name for s in target.steps]
    task = target.make_input(prepared.examples[0])  # the items' task (an entity file's types are in each item's options)
    key = target.agent.specialist_key(task) or ""
    with tempfile.TemporaryDirectory(prefix="moa-thresholds-") as scratch:
        folder = out or Path(scratch)
        await aevaluate(prepared, folder, ctx=ctx, on_progress=on_progress)
        wanted = {e.id for e in prepared.examples}
        records = [r for r in {r.id: r for r in ResultStore(folder).read()}.values() if r.id in wanted]
    chosen = choose_thresholds(records, steps, goal=goal, folds=folds, seed=seed, default=target.threshold, kind=kind)
    choice = ThresholdChoice(
        agent=agent, key=key, steps=steps, models=target.agent.step_models(ctx, task, target.steps), thresholds=chosen.thresholds,
        goal=goal.label(METRIC[kind]), metric=METRIC[kind], folds=chosen.folds, n=len(records), data=prepared.config.data, seed=seed, held_out=chosen.held_out,
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
