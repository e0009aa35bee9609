"""The model-call cache: what a repeated run costs, cold and warm, on the embedded model.

The same moa run twice with the cache on (``cache=True``, the default): first with an empty cache
(cold: every item calls the model and is stored), then again (warm: every call is answered from the
SQLite cache under ``state_dir``). The run: the sentiment agent over ``--n`` SST-2 dev sentences
(one-subtask plan, cascade ``slm``, durable on as by default), the slm tier the embedded Gemma 3
270M (``embedded:``, wrapped in the cache by moa as for any spec). Both runs share one
:class:`moa.RunContext`, so the model is loaded once, before anything is timed (a throwaway item
warms it).

Reported per run: wall time, process CPU time (the engine runs in this process), model calls,
calls served from the cache, tokens the model processed, and the cost at an illustrative price
(``--price-prompt`` / ``--price-completion`` $ per 1k tokens, default gpt-4o-mini's list price: a
local model costs $0, and a cached call costs $0 at any price). ``--repeats`` rounds, each on its
own slice of the data (so every cold run starts cold); medians and the warm ÷ cold ratios::

    python benchmarks/cache.py --n 64 --repeats 3

(On cores always shared with another llama.cpp process, ``OMP_WAIT_POLICY=PASSIVE`` helps: see ``batch.py``.)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moa  # noqa: E402
from benchmarks._common import describe, finish, load, machine, median, parser, report, table  # noqa: E402
from benchmarks.batch import LABELS, sst2  # noqa: E402
from moa.logs import configure_logging  # noqa: E402

PLAN = {"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": LABELS}}]}


async def _timed_run(ctx: moa.RunContext, texts: list[str]) -> dict[str, Any]:
    before = load()
    cpu, started = time.process_time(), time.perf_counter()
    result = await moa.arun("sentiment", input=texts, plan=PLAN, context=ctx)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.status != "ok":
        raise RuntimeError(f"the run failed: {result.errors[:1]}")
    s = result.summary
    model_calls = [u for u in result.usage if not u.cached]
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "calls": s.calls,
        "cached_calls": sum(1 for u in result.usage if u.cached),
        "model_tokens": sum(u.prompt_tokens + u.completion_tokens for u in model_calls),
        "cost": round(s.cost, 6),
        "labels": [getattr(i.output, "label", None) for i in result.results["s"].items],
        "load": before,
    }


async def measure(ctx: moa.RunContext, texts: list[str], *, repeats: int) -> dict[str, Any]:
    """``repeats`` rounds of a cold then a warm run, each round on its own slice of ``texts``."""
    n = len(texts) // repeats
    rounds = []
    for r in range(repeats):
        chunk = texts[r * n : (r + 1) * n]
        cold = await _timed_run(ctx, chunk)
        warm = await _timed_run(ctx, chunk)
        if cold.pop("labels") != warm.pop("labels"):
            raise RuntimeError("the warm run's answers differ from the cold run's")
        rounds.append({"cold": cold, "warm": warm})
        print(f"  round {r}: cold {cold['wall_s']} s, warm {warm['wall_s']} s, load {cold['load'][0]}", file=sys.stderr)
    summary = {}
    for phase in ("cold", "warm"):
        summary[phase] = {key: median([rd[phase][key] for rd in rounds]) for key in ("wall_s", "cpu_s", "calls", "cached_calls", "model_tokens", "cost")}
    ratio = {key: round(summary["warm"][key] / summary["cold"][key], 4) if summary["cold"][key] else None for key in ("wall_s", "cpu_s", "cost", "model_tokens")}
    return {"items_per_run": n, "rounds": rounds, "median": summary, "warm_over_cold": ratio}


def render(results: dict[str, Any]) -> str:
    med, ratio = results["median"], results["warm_over_cold"]
    header = ["run", "wall s", "CPU s", "calls", "from cache", "tokens the model processed", "cost $ (illustrative price)"]
    rows = [[phase, med[phase]["wall_s"], med[phase]["cpu_s"], med[phase]["calls"], med[phase]["cached_calls"], med[phase]["model_tokens"], med[phase]["cost"]] for phase in ("cold", "warm")]
    rows.append(["warm ÷ cold", ratio["wall_s"], ratio["cpu_s"], "", "", ratio["model_tokens"], ratio["cost"]])
    price = results["price_per_1k"]
    lines = [
        f"machine: {describe(results['machine'])}",
        f"{results['items_per_run']} items per run, median of {len(results['rounds'])} rounds; price ${price[0]} / ${price[1]} per 1k prompt / completion tokens; load after: {results['load_after']}",
        "",
        table(header, rows),
    ]
    return "\n".join(lines)


async def main() -> None:
    p = parser(__doc__, "cache")
    p.add_argument("--n", type=int, default=64, help="items per run")
    p.add_argument("--repeats", type=int, default=3, help="rounds of cold + warm runs, each on new items")
    p.add_argument("--price-prompt", type=float, default=0.00015, help="$ per 1k prompt tokens (default %(default)s)")
    p.add_argument("--price-completion", type=float, default=0.0006, help="$ per 1k completion tokens (default %(default)s)")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="warning")
    texts, _ = sst2(args.n * args.repeats + 1)
    results: dict[str, Any] = {"machine": machine("xllamacpp"), "args": {k: str(v) for k, v in vars(args).items()}}
    results["price_per_1k"] = [args.price_prompt, args.price_completion]
    with tempfile.TemporaryDirectory() as tmp:
        prices = {"embedded:": {"prompt": args.price_prompt, "completion": args.price_completion}}
        settings = moa.load_settings(state_dir=Path(tmp), slm="embedded:", llm="embedded:", cache=True, cascade=["slm"], prices=prices)
        ctx = moa.RunContext.create(settings)
        try:
            await moa.arun("sentiment", input=texts[-1:], plan=PLAN, context=ctx)  # load and warm the engine
            results |= await measure(ctx, texts[:-1], repeats=args.repeats)
        finally:
            await ctx.aclose()
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
