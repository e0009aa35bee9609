"""DAG parallelism: moa's wall time vs the sequential sum and the critical path, on a real HTTP server.

A tiny OpenAI-compatible server (``benchmarks/latency_server.py``, FastAPI + uvicorn in a
subprocess on 127.0.0.1) waits an injected latency per request and answers valid JSON for the
agent's schema. moa reaches it through the official ``openai`` client
(``openai+completion:bench@http://127.0.0.1:PORT/v1``), concurrency high enough for every subtask.
Each subtask is the sentiment agent on one item; its label set carries the latency the server
waits for it (``latency-0.5s``), so subtasks can differ. Plan shapes:

* ``independent-N``: N independent subtasks (``--sizes``), latency L (``--latency``);
* ``chains-KxD``: K independent chains of D dependent subtasks (``--chains``);
* ``skewed``: two chains of two, one slow then fast (3L → L), the other fast then slow
  (L → 3L): a superstep barrier waits for the slow one at each layer (6L), per-subtask
  scheduling does not (critical path 4L).

Per shape: the sequential sum of latencies, what a layer-by-layer barrier would take, the
critical path, the critical path measured (its requests sent one after the other with the same
``openai`` client and the agents' own prompts: the least any scheduler can take), a hand-written
``asyncio`` DAG sending every request through the same client as soon as its dependencies are
answered ("direct DAG": the client's own cost at that concurrency), and moa's wall time with
``durable`` off and on. The target ratio is moa ÷ the measured critical path ≤ 1.1.
Configurations interleaved, ``--repeats`` rounds, medians::

    python benchmarks/parallelism.py --latency 0.5 --sizes 10,50 --chains 4x5 --repeats 5
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import moa  # noqa: E402
from benchmarks._common import describe, finish, interleaved, load, machine, median, parser, report, table  # noqa: E402
from benchmarks.latency_server import latency_of, marker, serve  # noqa: E402
from moa.agents.sentiment import agent as sentiment  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.models.base import Capabilities, GenerateRequest  # noqa: E402
from moa.models.registry import Models  # noqa: E402
from moa.testing import FakeModel, prompt_of  # noqa: E402
from moa.workflow.plan import Plan  # noqa: E402

ITEM = "A charming and often affecting journey."
CAPS = Capabilities(chat=False, completion=True, json_schema=True, logprobs=True)  # an openai+completion backend's


@dataclass
class Shape:
    """A plan and the latency of each of its subtasks."""

    name: str
    latencies: dict[str, float]
    depends_on: dict[str, list[str]] = field(default_factory=dict)

    def plan(self) -> dict[str, Any]:
        subtasks = []
        for sid, seconds in self.latencies.items():
            deps = self.depends_on.get(sid, [])
            options = {"labels": ["positive", "negative", marker(seconds)]}
            subtasks.append({"id": sid, "agent": "sentiment", "options": options, "depends_on": deps, **({"items": deps[0]} if deps else {})})
        return {"subtasks": subtasks}

    def critical_path(self) -> list[str]:
        """The subtasks of the longest chain of latencies, in order."""
        best: dict[str, tuple[float, list[str]]] = {}
        for layer in Plan.model_validate(self.plan()).order():
            for sid in layer:
                before = max((best[d] for d in self.depends_on.get(sid, [])), default=(0.0, []), key=lambda b: b[0])
                best[sid] = (before[0] + self.latencies[sid], [*before[1], sid])
        return max(best.values(), key=lambda b: b[0])[1]

    def sums(self) -> dict[str, float]:
        layers = Plan.model_validate(self.plan()).order()
        return {
            "sequential_s": sum(self.latencies.values()),
            "barrier_s": sum(max(self.latencies[s] for s in layer) for layer in layers),
            "critical_s": sum(self.latencies[s] for s in self.critical_path()),
        }


def shapes(sizes: list[int], chains: list[tuple[int, int]], latency: float) -> list[Shape]:
    out = [Shape(f"independent-{n}", {f"s{i}": latency for i in range(n)}) for n in sizes]
    for k, d in chains:
        lat = {f"c{c}_{j}": latency for c in range(k) for j in range(d)}
        deps = {f"c{c}_{j}": [f"c{c}_{j - 1}"] for c in range(k) for j in range(1, d)}
        out.append(Shape(f"chains-{k}x{d}", lat, deps))
    slow = 3 * latency
    out.append(Shape("skewed", {"a1": slow, "a2": latency, "b1": latency, "b2": slow}, {"a2": ["a1"], "b2": ["b1"]}))
    return out


def request_for(shape: Shape, sid: str) -> GenerateRequest:
    """The request moa's agent sends for subtask ``sid`` (the agent's own prompt and schema)."""
    options = next(s["options"] for s in shape.plan()["subtasks"] if s["id"] == sid)
    return sentiment.request(sentiment.make_input(ITEM, options), CAPS)


class Target(Protocol):
    """Where the requests go: moa's model for the slm tier, a direct call, the server's peak concurrency."""

    spec: str

    def models(self, settings: moa.Settings) -> Models: ...

    async def call(self, request: GenerateRequest) -> None: ...

    async def peak(self) -> int:
        """Most requests in flight at once since the last call."""
        ...


class HttpTarget:
    """The latency server over HTTP: moa through its ``openai+completion:`` spec, direct calls through ``openai``."""

    def __init__(self, url: str) -> None:
        import openai

        self.url = url
        self.spec = f"openai+completion:bench@{url}"
        self.client = openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0)

    def models(self, settings: moa.Settings) -> Models:
        return Models(settings)

    async def call(self, request: GenerateRequest) -> None:
        await self.client.completions.create(
            model="bench",
            prompt=request.prompt or "",
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            logprobs=request.top_logprobs or None,
            extra_body={"json_schema": request.json_schema},
        )

    async def peak(self) -> int:
        async with httpx.AsyncClient() as client:
            stats = (await client.get(self.url.removesuffix("/v1") + "/stats", params={"reset": 1})).json()
        return int(stats["max_in_flight"])


class FakeTarget:
    """No server: ``FakeModel`` sleeping each prompt's latency (for tests of this script)."""

    spec = "fake:"

    def __init__(self, default_latency: float) -> None:
        self.model = FakeModel(lambda _r: '{"label":"positive"}', logprobs=True, delay=lambda r: latency_of(prompt_of(r), default_latency), max_concurrency=1000)

    def models(self, settings: moa.Settings) -> Models:
        return Models(settings, slm=self.model, llm=self.model)

    async def call(self, request: GenerateRequest) -> None:
        await self.model.generate(request)

    async def peak(self) -> int:
        peak, self.model.max_in_flight = self.model.max_in_flight, 0
        return peak


async def measure(target: Target, shape_list: list[Shape], repeats: int, state_dir: Path) -> list[dict[str, Any]]:
    """Interleave moa (durable off / on) and the direct critical path for each shape; medians."""
    concurrency = max(len(s.latencies) for s in shape_list) + 1
    contexts = {}
    for durable in (False, True):
        settings = moa.load_settings(
            state_dir=state_dir, slm=target.spec, llm=target.spec, cache=False, durable=durable, cascade=["slm"], concurrency=concurrency, max_steps=concurrency + 10
        )
        contexts[durable] = moa.RunContext.create(settings, models=target.models(settings))
    rows = []
    peaks: dict[str, list[int]] = {}
    try:
        for shape in shape_list:
            plan = shape.plan()
            critical = [request_for(shape, sid) for sid in shape.critical_path()]

            async def run_moa(durable: bool, shape: Shape = shape, plan: dict[str, Any] = plan) -> None:
                result = await moa.arun("sentiment", input=[ITEM], plan=plan, context=contexts[durable])
                if result.status != "ok" or len(result.results) != len(shape.latencies):
                    raise RuntimeError(f"{shape.name}: moa run {result.status}: {result.errors[:1]}")
                peaks.setdefault(shape.name, []).append(await target.peak())

            async def run_direct(critical: list[GenerateRequest] = critical) -> None:
                for request in critical:
                    await target.call(request)
                await target.peak()

            async def run_dag(shape: Shape = shape) -> None:
                done = {sid: asyncio.Event() for sid in shape.latencies}

                async def one(sid: str) -> None:
                    for dep in shape.depends_on.get(sid, []):
                        await done[dep].wait()
                    await target.call(request_for(shape, sid))
                    done[sid].set()

                await asyncio.gather(*(one(sid) for sid in shape.latencies))
                await target.peak()

            configs: dict[str, Callable[[], Awaitable[Any]]] = {
                "critical path measured": run_direct,
                "direct DAG": run_dag,
                "moa": lambda: run_moa(False),
                "moa durable": lambda: run_moa(True),
            }
            before = load()
            seconds = await interleaved(configs, repeats)
            med = {c: median(s) for c, s in seconds.items()}
            row = {
                "shape": shape.name,
                "subtasks": len(shape.latencies),
                **{k: round(v, 4) for k, v in shape.sums().items()},
                "critical_measured_s": round(med["critical path measured"], 4),
                "direct_dag_s": round(med["direct DAG"], 4),
                "moa_s": round(med["moa"], 4),
                "moa_durable_s": round(med["moa durable"], 4),
                "x_critical": round(med["moa"] / med["critical path measured"], 3),
                "x_critical_durable": round(med["moa durable"] / med["critical path measured"], 3),
                "x_direct_dag": round(med["moa"] / med["direct DAG"], 3),
                "peak_in_flight": max(peaks.get(shape.name, [0])),
                "runs_s": {c: [round(x, 4) for x in s] for c, s in seconds.items()},
                "load": before,
            }
            rows.append(row)
            print(f"  {shape.name}: moa {row['moa_s']} s, durable {row['moa_durable_s']} s, critical {row['critical_measured_s']} s, load {before[0]}", file=sys.stderr)
    finally:
        for ctx in contexts.values():
            await ctx.aclose()
    return rows


def render(results: dict[str, Any]) -> str:
    header = ["shape", "subtasks", "sequential s", "barrier s", "critical path s", "critical measured s", "direct DAG s", "moa s", "moa durable s"]
    header += ["× critical", "× critical (durable)", "× direct DAG", "peak in flight", "load 1m"]
    rows = [
        [r["shape"], r["subtasks"], r["sequential_s"], r["barrier_s"], r["critical_s"], r["critical_measured_s"], r["direct_dag_s"], r["moa_s"], r["moa_durable_s"]]
        + [r["x_critical"], r["x_critical_durable"], r["x_direct_dag"], r["peak_in_flight"], r["load"][0]]
        for r in results["rows"]
    ]
    return "\n".join([f"machine: {describe(results['machine'])}", f"latency {results['latency']} s; load after: {results['load_after']}", "", table(header, rows)])


async def main() -> None:
    p = parser(__doc__, "parallelism")
    p.add_argument("--latency", type=float, default=0.5, help="seconds per request (default %(default)s)")
    p.add_argument("--sizes", default="10,50", help="independent subtasks per plan, comma-separated")
    p.add_argument("--chains", default="4x5", help="KxD: K chains of D dependent subtasks, comma-separated")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="warning")
    chains = [tuple(int(x) for x in c.split("x")) for c in args.chains.split(",") if c]
    shape_list = shapes([int(s) for s in args.sizes.split(",") if s], chains, args.latency)  # type: ignore[arg-type]
    results: dict[str, Any] = {"machine": machine("openai", "fastapi", "uvicorn", "httpx"), "args": {k: str(v) for k, v in vars(args).items()}, "latency": args.latency}
    with serve(args.latency) as url, tempfile.TemporaryDirectory() as tmp:
        results["rows"] = await measure(HttpTarget(url), shape_list, args.repeats, Path(tmp))
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
