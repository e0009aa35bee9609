"""Orchestration overhead per subtask: moa's executor vs a hand-written LangGraph fan-out.

Plans of N independent subtasks (``--sizes``, default 10, 50, 100), each the sentiment agent on
one item, against a model that answers at once (``moa.testing.FakeModel(delay=0)``), so all the
time measured is orchestration. Configurations, all interleaved in one run (order rotating each
round, ``--repeats`` rounds, median reported):

* ``langgraph``: a hand-written ``StateGraph`` with a ``Send`` fan-out; each node builds the
  sentiment agent's prompt, calls the same fake and validates the JSON with a static pydantic model
  (what a user would write by hand for the same job);
* ``langgraph+sqlite``: the same graph with LangGraph's ``AsyncSqliteSaver`` (``durability="sync"``),
  the checkpointer moa uses, for comparison with durable runs;
* ``langgraph+agent``: the same fan-out, each node running moa's agent (``agent.run_batch``) — the
  agent's own cost (decode model, cascade, accounting) without moa's executor and API;
* ``moa``: ``moa.arun`` with the plan given, ``durable=False``, cache off, cascade ``slm``;
* ``moa durable``: the same with ``durable=True`` (the default: SQLite checkpoints and the run index).

Reported per N: median wall time, ms per subtask (wall / N) and the ratio to the hand-written graph;
over all N, the marginal ms per extra subtask (least-squares slope). Targets: moa ≤ 1.2× the
hand-written graph and ≤ 1 ms per subtask. ``--profile`` prints where moa's time goes (cProfile)::

    python benchmarks/overhead.py --repeats 7 --profile
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Send  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import moa  # noqa: E402
from benchmarks._common import describe, finish, fit, interleaved, load, machine, median, parser, report, table  # noqa: E402
from moa.agent.structured import output_token_limit  # noqa: E402
from moa.agents.sentiment import agent as sentiment  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.models.base import GenerateRequest  # noqa: E402
from moa.models.registry import Models  # noqa: E402
from moa.testing import FakeModel  # noqa: E402

ANSWER = '{"label":"positive","confidence":0.9}'
ITEM = "A charming and often affecting journey."
CONFIGS = ("langgraph", "langgraph+sqlite", "langgraph+agent", "moa", "moa durable")


class Decision(BaseModel):
    """The hand-written graph's output model (defined once, as a user would)."""

    label: Literal["positive", "negative", "neutral"]
    confidence: float


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class FanState(TypedDict, total=False):
    text: str
    n: int
    results: Annotated[dict[str, Any], _merge]


Work = Callable[[str, str], Awaitable[Any]]


def fan_out(work: Work) -> StateGraph:  # type: ignore[type-arg]
    """START → ``Send`` one ``work`` node per subtask → END; results merged by a reducer."""

    async def node(arg: dict[str, str]) -> dict[str, Any]:
        return {"results": {arg["sid"]: await work(arg["sid"], arg["text"])}}

    def dispatch(state: FanState) -> list[Send]:
        return [Send("work", {"sid": f"s{i}", "text": state["text"]}) for i in range(state["n"])]

    graph = StateGraph(FanState)
    graph.add_node("work", node)
    graph.add_conditional_edges(START, dispatch, ["work"])
    graph.add_edge("work", END)
    return graph


def hand_written(model: FakeModel) -> Work:
    """A node's work as a user would write it: the agent's prompt → the model → validated JSON."""
    schema = Decision.model_json_schema()

    async def work(_sid: str, text: str) -> Decision:
        prompt = sentiment.completion_prompt(sentiment.make_input(text))
        gen = await model.agenerate(GenerateRequest(prompt=prompt, json_schema=schema, max_tokens=output_token_limit(Decision)))
        return Decision.model_validate_json(gen.text)

    return work


def settings_for(state_dir: Path, n: int, *, durable: bool) -> moa.Settings:
    return moa.load_settings(state_dir=state_dir, cache=False, durable=durable, cascade=["slm"], max_steps=n + 10)


def _check(results: dict[str, Any], n: int, config: str) -> None:
    if len(results) != n:
        raise RuntimeError(f"{config}: {len(results)} results for {n} subtasks")


async def measure(sizes: list[int], repeats: int, state_dir: Path, *, profile: bool = False) -> dict[str, Any]:
    """Time every configuration at every size; return rows, marginal costs and (optionally) a profile."""
    model = FakeModel([ANSWER])
    plain = fan_out(hand_written(model)).compile()
    conn_path = state_dir / "langgraph.sqlite"
    async with AsyncSqliteSaver.from_conn_string(str(conn_path)) as saver:
        saved = fan_out(hand_written(model)).compile(checkpointer=saver)
        runs = 0

        async def run_plain(n: int) -> None:
            _check((await plain.ainvoke({"text": ITEM, "n": n}))["results"], n, "langgraph")

        async def run_saved(n: int) -> None:
            nonlocal runs
            runs += 1
            config = {"configurable": {"thread_id": f"t{runs}"}}
            _check((await saved.ainvoke({"text": ITEM, "n": n}, config, durability="sync"))["results"], n, "langgraph+sqlite")

        async def run_agent(n: int, settings: moa.Settings) -> None:
            ctx = moa.RunContext.create(settings, models=Models(settings, slm=model, llm=model))

            async def work(sid: str, text: str) -> Any:
                (run,) = await sentiment.run_batch(ctx, [sentiment.make_input(text)], subtask=sid)
                return run.output

            _check((await fan_out(work).compile().ainvoke({"text": ITEM, "n": n}))["results"], n, "langgraph+agent")

        async def run_moa(n: int, settings: moa.Settings) -> None:
            plan = {"subtasks": [{"id": f"s{i}", "agent": "sentiment"} for i in range(n)]}
            result = await moa.arun("sentiment", input=[ITEM], plan=plan, settings=settings, slm=model, llm=model)
            if result.status != "ok":
                raise RuntimeError(f"moa run failed: {result.errors[:1]}")
            _check(result.results, n, "moa")

        def configs(n: int) -> dict[str, Callable[[], Awaitable[Any]]]:
            # settings are made once, as an application would (loading them reads moa.toml and the environment)
            plain_settings, durable_settings = settings_for(state_dir, n, durable=False), settings_for(state_dir, n, durable=True)
            return {
                "langgraph": lambda: run_plain(n),
                "langgraph+sqlite": lambda: run_saved(n),
                "langgraph+agent": lambda: run_agent(n, plain_settings),
                "moa": lambda: run_moa(n, plain_settings),
                "moa durable": lambda: run_moa(n, durable_settings),
            }

        for n in sizes[:1]:  # warm up imports, graph compilation caches, SQLite files
            await interleaved(configs(n), 1)
        rows = []
        for n in sizes:
            loads = os.getloadavg()[0]
            seconds = await interleaved(configs(n), repeats)
            med = {c: median(s) for c, s in seconds.items()}
            for c in CONFIGS:
                rows.append(
                    {
                        "subtasks": n,
                        "config": c,
                        "median_s": round(med[c], 5),
                        "ms_per_subtask": round(1000 * med[c] / n, 4),
                        "x_langgraph": round(med[c] / med["langgraph"], 3),
                        "x_langgraph_sqlite": round(med[c] / med["langgraph+sqlite"], 3),
                        "runs_s": [round(s, 5) for s in seconds[c]],
                        "load_1m": round(loads, 2),
                    }
                )
            print(f"  N={n}: " + ", ".join(f"{c} {1000 * med[c] / n:.3f} ms/subtask" for c in CONFIGS), f"load {loads:.2f}", file=sys.stderr)
        last = sizes[-1]
        profiled = (
            await _profile(lambda: run_moa(last, settings_for(state_dir, last, durable=False)), lambda: run_moa(last, settings_for(state_dir, last, durable=True)))
            if profile
            else None
        )
    lines = {c: fit([r["subtasks"] for r in rows if r["config"] == c], [r["median_s"] for r in rows if r["config"] == c]) for c in CONFIGS}
    fits = {c: {"ms_per_extra_subtask": round(1000 * k, 4), "fixed_ms_per_run": round(1000 * b, 3)} for c, (k, b) in lines.items()}
    return {"sizes": sizes, "repeats": repeats, "rows": rows, "fit": fits, "profile": profiled}


async def _profile(plain: Callable[[], Awaitable[None]], durable: Callable[[], Awaitable[None]], runs: int = 3) -> dict[str, str]:
    """cProfile of a few moa runs (durable off, then on): the top functions by cumulative time."""
    out = {}
    for name, run in (("moa", plain), ("moa durable", durable)):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            await run()
        profiler.disable()
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats("cumulative").print_stats(r"moa/|agents/|pydantic|langgraph|sqlite", 30)
        out[name] = buffer.getvalue()
    return out


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"machine: {describe(m)}", f"load after: {results['load_after']}", ""]
    header = ["subtasks", "config", "median ms", "ms/subtask", "× langgraph", "× langgraph+sqlite", "load 1m"]
    rows = [[r["subtasks"], r["config"], 1000 * r["median_s"], r["ms_per_subtask"], r["x_langgraph"], r["x_langgraph_sqlite"], r["load_1m"]] for r in results["rows"]]
    lines += [table(header, rows), ""]
    fits = results["fit"]
    lines += [table(["config", "ms per extra subtask", "fixed ms per run"], [[c, f["ms_per_extra_subtask"], f["fixed_ms_per_run"]] for c, f in fits.items()])]
    if results.get("profile"):
        for name, text in results["profile"].items():
            lines += ["", f"profile of {name} at N={results['sizes'][-1]}:", text]
    return "\n".join(lines)


async def main() -> None:
    p = parser(__doc__, "overhead")
    p.add_argument("--sizes", default="10,50,100", help="subtasks per plan, comma-separated")
    p.add_argument("--repeats", type=int, default=7, help="rounds of all configurations (median reported)")
    p.add_argument("--profile", action="store_true", help="also cProfile moa's runs at the largest size")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="warning")
    results: dict[str, Any] = {"machine": machine("langgraph-checkpoint-sqlite"), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        results |= await measure([int(s) for s in args.sizes.split(",")], args.repeats, Path(tmp), profile=args.profile)
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
