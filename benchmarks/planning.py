"""The planning benchmark: a planner over realistic tasks, scored against the expected plan.

The set, ``benchmarks/data/planning.jsonl`` (one case a line, each in the ``dev`` or ``test``
split), and ``benchmarks/data/planning-heldout.jsonl`` (the ``heldout`` split, other phrasings and
domains written before the planners were tuned) hold one-, two- and three-step
tasks, with and without input, phrased in many ways (synonyms, polite forms, "only", "except",
negations, chains, retrieval questions with no input). Each case names the steps a right plan
has: the agent of each step, ``from``, the step whose output items it processes (the data flow;
no ``from``: the run's input, or the task text when there is no input), and the options that
matter, where the task says them:

* filtering: ``mode`` (``drop`` / ``keep``) and ``criterion`` (words, one of which the plan's
  criterion must contain);
* sentiment: ``labels`` (the exact label set, when the task names one);
* extraction: ``types`` (groups of synonyms; each group must match one of the plan's types).

A plan is scored on what it would *do*: options are taken with the agent's defaults filled in
(a filtering step with no criterion filters spam), and its ``depends_on`` must be exactly the
data flow (a spurious dependency serialises steps that could run in parallel). Per case:

* ``valid``: the planner returned a plan that passes moa's validation;
* ``agents``: the plan's agents are the expected ones (as a multiset; ``agent_f1`` gives part credit);
* ``edges``: there is a matching of plan steps to expected steps (same agent) under which every
  step takes its items from, and depends on, exactly the expected step (or the input);
* ``options``: every option the case names is right (cases that name none are not counted);
* ``score``: the mean of the four (three when the case names no option): 1.0 for a right plan.

Run::

    python benchmarks/planning.py --planner router --split dev
    python benchmarks/planning.py --planner llm --llm embedded:smollm2-135m-instruct
    python benchmarks/planning.py --planner llm --llm embedded:qwen2.5-coder-1.5b-instruct --limit 20
    python benchmarks/planning.py --report benchmarks/results/planning-router.json

The call cache is off, so latencies are real. The JSON (``--json``, default
``benchmarks/results/planning-<planner>[-<llm>].json``) keeps every plan, error and score.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, describe, finish, load, machine, parser, report, table  # noqa: E402
from moa.errors import MoaError  # noqa: E402
from moa.workflow.plan import INPUT, Plan, Subtask, plan_problems  # noqa: E402

CASES = ROOT / "benchmarks" / "data" / "planning.jsonl"
HELDOUT = ROOT / "benchmarks" / "data" / "planning-heldout.jsonl"
SPLITS = ("dev", "test", "heldout")
OPTION_AGENTS = {"mode": "filtering", "criterion": "filtering", "labels": "sentiment", "types": "extraction"}


class Step(BaseModel):
    """One step of the expected plan."""

    id: str
    agent: str
    from_: str | None = Field(None, alias="from")
    """The step whose output items this one processes; None: the run's input (or the task text)."""
    mode: Literal["drop", "keep"] | None = None
    criterion: list[str] | None = None
    """Words, one of which the filter criterion must contain (lower case)."""
    labels: list[str] | None = None
    types: list[list[str]] | None = None
    """Groups of synonyms (lower case); each group must match one of the plan's entity types."""

    def constraints(self) -> dict[str, Any]:
        return {k: v for k in OPTION_AGENTS if (v := getattr(self, k)) is not None}


class Case(BaseModel):
    id: str
    split: Literal["dev", "test", "heldout"]
    """``dev``: planners may be tuned on it; ``test`` (a third of the set, every third case of each
    step count) and ``heldout`` (``planning-heldout.jsonl``, written before the planners were
    tuned): only measured."""
    task: str
    has_input: bool
    steps: list[Step] = Field(min_length=1)

    @property
    def agents(self) -> Counter[str]:
        return Counter(s.agent for s in self.steps)

    @property
    def edges(self) -> set[tuple[str, str]]:
        """``(from step, step)`` for each step that processes another's items."""
        return {(s.from_, s.id) for s in self.steps if s.from_ is not None}

    @property
    def group(self) -> str:
        return f"{min(len(self.steps), 3)}-step"


def load_cases(path: Path = CASES) -> list[Case]:
    return [Case.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cases_of(split: str) -> list[Case]:
    """The cases of one split (``dev``, ``test``, ``heldout``) or of all three (``all``)."""
    cases = load_cases(CASES) + load_cases(HELDOUT)
    return cases if split == "all" else [c for c in cases if c.split == split]


def case_problems(case: Case, agents: Iterable[str]) -> list[str]:
    """What is wrong with a case itself (empty when it is consistent)."""
    known = set(agents)
    problems = []
    ids = [s.id for s in case.steps]
    if len(set(ids)) != len(ids):
        problems.append(f"{case.id}: step ids repeat: {ids}")
    for step in case.steps:
        if step.agent not in known:
            problems.append(f"{case.id}: step {step.id} names unknown agent {step.agent!r}")
        if step.from_ is not None and (step.from_ not in ids or step.from_ == step.id):
            problems.append(f"{case.id}: step {step.id} takes items from {step.from_!r}, which is not another step")
        for option in step.constraints():
            if OPTION_AGENTS[option] != step.agent:
                problems.append(f"{case.id}: step {step.id} ({step.agent}) constrains {option!r}, an option of {OPTION_AGENTS[option]}")
        words = [*(step.criterion or []), *(step.labels or []), *(w for group in step.types or [] for w in group)]
        if any(w != w.lower() or not w.strip() for w in words):
            problems.append(f"{case.id}: step {step.id}: option words must be lower case and non-empty")
    if not problems:
        try:
            reference_plan(case).order()
        except MoaError as exc:
            problems.append(f"{case.id}: {exc.message}")
    return problems


def reference_plan(case: Case) -> Plan:
    """A plan that does exactly what the case expects (a perfect planner's answer)."""
    subtasks = []
    for step in case.steps:
        options: dict[str, Any] = {}
        if step.mode is not None:
            options["mode"] = step.mode
        if step.criterion is not None:
            options["criterion"] = step.criterion[0]
        if step.labels is not None:
            options["labels"] = list(step.labels)
        if step.types is not None:
            options["types"] = [group[0] for group in step.types]
        subtasks.append(
            Subtask(id=step.id, agent=step.agent, options=options, items=step.from_ or INPUT, depends_on=[step.from_] if step.from_ else [])
        )
    return Plan(subtasks=subtasks)


Defaults = Mapping[str, Mapping[str, Any]]


def agent_defaults(agents: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each agent's input defaults for the options the set checks (what a step does when the plan
    leaves an option out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, agent in agents.items():
        fields = agent.input_type.model_fields
        out[name] = {k: fields[k].get_default(call_default_factory=True) for k in OPTION_AGENTS if k in fields}
    return out


def _satisfies(step: Step, options: Mapping[str, Any], defaults: Defaults) -> bool:
    effective = {**defaults.get(step.agent, {}), **options}
    if step.mode is not None and effective.get("mode") != step.mode:
        return False
    if step.criterion is not None:
        criterion = str(effective.get("criterion", "")).lower()
        if not any(word in criterion for word in step.criterion):
            return False
    if step.labels is not None:
        labels = effective.get("labels")
        if not isinstance(labels, list) or {str(label).strip().lower() for label in labels} != set(step.labels):
            return False
    if step.types is not None:
        types = effective.get("types")
        if not isinstance(types, list):
            return False
        names = [str(t).lower() for t in types]
        if not all(any(word in name for name in names for word in group) for group in step.types):
            return False
    return True


def _flows_right(case: Case, plan: Plan, match: Mapping[str, str]) -> bool:
    """Under ``match`` (plan step id -> expected step id), every plan step takes its items from,
    and depends on, exactly the expected step's source."""
    expected = {s.id: s for s in case.steps}
    for sub in plan.subtasks:
        source = expected[match[sub.id]].from_
        items = None if sub.items == INPUT else match.get(sub.items)
        if items != source or {match.get(d) for d in sub.depends_on} != ({source} if source else set()):
            return False
    return True


def _matchings(case: Case, plan: Plan) -> Iterable[dict[str, str]]:
    """Every agent-preserving one-to-one matching of plan steps to expected steps (the plan has
    the expected agents)."""
    groups = []
    for agent in sorted(case.agents):
        planned = [s.id for s in plan.subtasks if s.agent == agent]
        wanted = [s.id for s in case.steps if s.agent == agent]
        groups.append([dict(zip(planned, perm, strict=True)) for perm in itertools.permutations(wanted)])
    for combo in itertools.product(*groups):
        yield {k: v for part in combo for k, v in part.items()}


def score_plan(case: Case, plan: Plan | None, agents: Mapping[str, Any] | Sequence[str], defaults: Defaults | None = None) -> dict[str, Any]:
    """Score one plan against its case (see the module docstring). ``plan`` None: no plan came."""
    constrained = [s for s in case.steps if s.constraints()]
    names = list(agents)
    defaults = defaults if defaults is not None else (agent_defaults(agents) if isinstance(agents, Mapping) else {})
    if plan is None or plan_problems(plan, names):
        row = {"valid": False, "agents": False, "agent_f1": 0.0, "edges": False, "options": False if constrained else None}
        return {**row, "score": 0.0}
    planned = Counter(s.agent for s in plan.subtasks)
    overlap = sum((planned & case.agents).values())
    f1 = 2 * overlap / (sum(planned.values()) + sum(case.agents.values()))
    agents_ok = planned == case.agents
    edges_ok = False
    options_ok: bool | None = None
    by_id = {s.id: s for s in plan.subtasks}
    if agents_ok:
        best = (False, False)
        for match in _matchings(case, plan):
            flows = _flows_right(case, plan, match)
            back = {v: k for k, v in match.items()}
            opts = all(_satisfies(s, by_id[back[s.id]].options, defaults) for s in constrained)
            best = max(best, (flows, opts))
        edges_ok, opts_ok = best
        options_ok = opts_ok if constrained else None
    elif constrained:
        free = list(plan.subtasks)
        options_ok = True
        for step in constrained:
            hit = next((s for s in free if s.agent == step.agent and _satisfies(step, s.options, defaults)), None)
            if hit is None:
                options_ok = False
                break
            free.remove(hit)
    parts = [1.0, float(agents_ok), float(edges_ok)] + ([float(bool(options_ok))] if constrained else [])
    return {"valid": True, "agents": agents_ok, "agent_f1": round(f1, 3), "edges": edges_ok, "options": options_ok, "score": round(sum(parts) / len(parts), 4)}


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rates over scored rows: valid, agents, edges, options (constrained cases only), mean score and latency."""
    if not rows:
        return {"cases": 0}
    constrained = [r for r in rows if r["options"] is not None]
    latencies = sorted(r["latency_s"] for r in rows if r.get("latency_s") is not None)
    return {
        "cases": len(rows),
        "valid": sum(r["valid"] for r in rows) / len(rows),
        "agents": sum(r["agents"] for r in rows) / len(rows),
        "agent_f1": statistics.fmean(r["agent_f1"] for r in rows),
        "edges": sum(r["edges"] for r in rows) / len(rows),
        "options": sum(bool(r["options"]) for r in constrained) / len(constrained) if constrained else None,
        "score": statistics.fmean(r["score"] for r in rows),
        "latency_s": statistics.fmean(latencies) if latencies else None,
        "latency_p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
    }


async def run_cases(cases: Sequence[Case], plan_fn: Callable[[Case], Any], agents: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Plan every case with ``plan_fn`` (async: case -> (Plan, tokens)) and score it."""
    defaults = agent_defaults(agents)
    rows = []
    for case in cases:
        started = time.perf_counter()
        plan: Plan | None = None
        error = None
        tokens = None
        try:
            plan, tokens = await plan_fn(case)
        except MoaError as exc:
            error = f"[{exc.code}] {exc.message}"
            tokens = sum(u.tokens for u in exc.usage) or None
        latency = time.perf_counter() - started
        scored = score_plan(case, plan, agents, defaults)
        rows.append(
            {
                "id": case.id, "split": case.split, "group": case.group, "has_input": case.has_input, **scored, "latency_s": round(latency, 3), "tokens": tokens,
                "error": error, "plan": plan.model_dump(exclude_defaults=True) if plan is not None else None,
            }
        )  # fmt: skip
    return rows


async def measure(planner: str, llm: str | None, cases: Sequence[Case], *, timeout: float | None = None) -> dict[str, Any]:
    from moa.agent.context import RunContext
    from moa.models.embedded import EmbeddedBackend
    from moa.settings import Settings
    from moa.workflow.catalog import builtin_agents
    from moa.workflow.planner import HybridPlanner, LLMPlanner, Planner, RouterPlanner

    agents = builtin_agents()
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, Any] = {"llm": llm} if llm else {}
        if timeout:
            overrides["timeout"] = timeout
        settings = Settings(planner=planner, cache=False, memory_dir=Path(tmp) / "memory", state_dir=Path(tmp) / "state", **overrides)  # type: ignore[arg-type]
        ctx = RunContext.create(settings)
        chosen: Planner = {"router": RouterPlanner, "llm": LLMPlanner, "hybrid": HybridPlanner}[planner]()
        started = time.perf_counter()
        if planner != "router":  # load an embedded model before the first case's clock starts (not counted as planning)
            backend = ctx.models.tier("llm")
            if isinstance(backend, EmbeddedBackend):
                await asyncio.to_thread(backend._load)
            await RouterPlanner().plan(ctx, "warm up the embedder", agents, has_input=True, reason="benchmark warm-up")
        # one plan before the clock: the model reads the prompt's fixed prefix once (its KV cache
        # then serves every case, as in a long-running process); the router loads its embedder
        await chosen.plan(ctx, "Classify the sentiment of each message", agents, has_input=True, reason="benchmark warm-up")
        warmup_s = time.perf_counter() - started

        drafts: dict[str, Plan] = {}  # hybrid: the llm planner's own plan of each case, scored too

        async def plan_fn(case: Case) -> tuple[Plan, int | None]:
            with ctx.scope() as scope:
                if isinstance(chosen, HybridPlanner):
                    routed = await chosen.router.plan(ctx, case.task, agents, has_input=case.has_input, reason="benchmark")
                    drafted = await chosen.llm.plan(ctx, case.task, agents, has_input=case.has_input, reason="benchmark")
                    drafts[case.id] = drafted.plan
                    outcome = chosen.combine(routed, drafted)
                else:
                    outcome = await chosen.plan(ctx, case.task, agents, has_input=case.has_input, reason="benchmark")
            return outcome.plan, sum(u.tokens for u in scope.usage) or None

        try:
            rows = await run_cases(cases, plan_fn, agents)
        finally:
            await ctx.models.aclose()
    defaults = agent_defaults(agents)
    draft_rows = [
        {**r, **score_plan(case, drafts[case.id], agents, defaults), "plan": drafts[case.id].model_dump(exclude_defaults=True)}
        for case, r in zip(cases, rows, strict=True)
        if case.id in drafts
    ]
    out = {"planner": planner, "llm": llm, "timeout": settings.timeout, "warmup_s": round(warmup_s, 2), "summary": summaries(rows), "rows": rows}
    if draft_rows:
        out |= {"draft_summary": summaries(draft_rows), "draft_rows": draft_rows}
    return out


def summaries(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`summarise` over all rows, each split, each step count, and the cases with no input."""
    groups = {
        "all": rows,
        **{split: [r for r in rows if r.get("split") == split] for split in SPLITS},
        **{g: [r for r in rows if r["group"] == g] for g in ("1-step", "2-step", "3-step")},
        "no input": [r for r in rows if not r["has_input"]],
    }
    return {g: summarise(rs) for g, rs in groups.items()}


def _pct(value: float | None) -> str | float | None:
    return None if value is None else f"{100 * value:.0f}%"


def render(results: dict[str, Any]) -> str:
    who = results["planner"] + (f" ({results['llm']})" if results.get("llm") else "")
    lines = [f"machine: {describe(results['machine'])}; load after {results['load_after']}", f"planner: {who}; warm-up {results['warmup_s']} s", ""]
    header = ["cases", "n", "valid", "agents", "agent F1", "edges", "options", "score", "latency s", "p95 s"]

    def body(summary: Mapping[str, Any]) -> list[list[Any]]:
        return [
            [group, s["cases"], _pct(s["valid"]), _pct(s["agents"]), s["agent_f1"], _pct(s["edges"]), _pct(s["options"]), s["score"], s["latency_s"], s["latency_p95_s"]]
            for group, s in summary.items()
            if s.get("cases")
        ]

    lines.append(table(header, body(results["summary"])))
    if results.get("draft_summary"):
        lines += ["", "the llm planner's own plans (before the router's check; same latency):", "", table(header, body(results["draft_summary"]))]
    wrong = [r for r in results["rows"] if r["score"] < 1]
    if wrong:
        lines += ["", f"not right ({len(wrong)}):"]
        for r in wrong:
            if r["plan"] is None:
                lines.append(f"- {r['id']}: {r['error']}")
                continue
            steps = ", ".join(
                f"{s['id']}={s['agent']}" + (f"<{s['items']}" if s.get("items", INPUT) != INPUT else "") + (f" {s['options']}" if s.get("options") else "")
                for s in r["plan"]["subtasks"]
            )
            lines.append(f"- {r['id']}: {steps}")
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, "planning")
    p.add_argument("--planner", choices=["router", "llm", "hybrid"], default="router")
    p.add_argument("--llm", help="model spec of the llm tier for --planner llm, e.g. embedded:smollm2-135m-instruct")
    p.add_argument("--split", choices=[*SPLITS, "all"], default="dev", help="which cases: dev (tune on these), test, heldout, or all (default: %(default)s)")
    p.add_argument("--cases", type=Path, help="a JSONL file of cases instead of --split")
    p.add_argument("--limit", type=int, help="only the first N cases")
    p.add_argument("--only", nargs="*", help="only these case ids")
    p.add_argument("--every", type=int, help="only every K-th case (a sample across the groups; the file is ordered by group)")
    p.add_argument("--timeout", type=float, help="seconds one model call may take (MOA_TIMEOUT; default moa's)")
    args = p.parse_args()
    if args.report:
        report(args.report, render)
        return
    if args.planner != "router" and not args.llm:
        p.error(f"--planner {args.planner} needs --llm SPEC")
    cases = load_cases(args.cases) if args.cases else cases_of(args.split)
    if args.only:
        cases = [c for c in cases if c.id in set(args.only)]
    if args.every:
        cases = cases[:: args.every]
    if args.limit:
        cases = cases[: args.limit]
    if args.json == RESULTS / "planning.json":
        suffix = args.planner + (f"-{args.llm.replace(':', '_').replace('/', '_')}" if args.llm else "")
        args.json = RESULTS / f"planning-{suffix}-{args.split}.json"
    results = {"machine": machine("xllamacpp"), **asyncio.run(measure(args.planner, args.llm, cases, timeout=args.timeout))}
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    main()
