"""Batch throughput: N short texts through the sentiment agent on the embedded engine, vs the
same prompts sent to the engine directly.

Texts: SST-2 dev sentences (``../shared/eval/sentiment/sst2_dev.tsv``), cycled to ``--n`` (default
1,000; a cycled copy gets a `` #k`` suffix so no two items are the same — moa runs duplicates once).
Labels positive/negative. Configurations, each over all N items:

* ``direct``: the agent's own completion prompt and decode schema (``agent.request``) sent as the
  body ``EmbeddedBackend`` builds straight to ``xllamacpp.Server.handle_completions``, from as many
  threads as moa keeps requests in flight (the agent's batch width: the engine's 2 slots);
* ``moa``: ``moa.arun`` with a one-subtask plan (sentiment over the input), the same engine
  instance as ``slm``, cache off, cascade ``slm`` (no escalation), ``durable=False``;
* ``moa durable``: the same with ``durable=True`` (the default).

The engine is loaded and warmed (its few-shot prefix cached) before anything is timed. A run of
1,000 items takes minutes on 2 cores: by default each configuration runs once over all items, one
after the other; ``--block B`` interleaves them instead, B items at a time with a rotating order
(moa then makes one run per block), which keeps the ratio fair when the load of the machine
changes; the median over blocks of each block's ratio resists bursts of load best. The table
gives each configuration's wall time, items/s, process CPU time per item (the engine runs in this
process), accuracy against the SST-2 labels, and the range of the load average. Target: moa ≥
0.9× the direct items/s::

    python benchmarks/batch.py --n 1000 --block 50                # interleaved
    python benchmarks/batch.py --n 100 --configs direct,moa       # a quick look

When another llama.cpp process shares the cores, OpenMP's default busy-waiting makes every
request many times slower; moa's embedded backend sets ``GOMP_SPINCOUNT=1000`` unless
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set (measurements in ``benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import moa  # noqa: E402
from benchmarks._common import DATA, describe, finish, load, machine, median, parser, report, table  # noqa: E402
from moa.agents.sentiment import agent as sentiment  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from moa.models.base import GenerateRequest, ModelBackend  # noqa: E402
from moa.models.registry import Models  # noqa: E402

LABELS = ["positive", "negative"]
CONFIGS = ("direct", "moa", "moa durable")

Direct = Callable[[GenerateRequest], Awaitable[str]]
"""Send one request to the engine, bypassing moa; return the answer's text."""


def sst2(n: int, path: Path = DATA / "sentiment" / "sst2_dev.tsv") -> tuple[list[str], list[str]]:
    """``n`` texts (cycled, copies suffixed ``#k``) and their gold labels."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = [r for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:] if len(r) >= 2]
    texts, labels = [], []
    for i in range(n):
        text, label = rows[i % len(rows)][:2]
        copy = i // len(rows)
        texts.append(" ".join(text.split()) + (f" #{copy + 1}" if copy else ""))
        labels.append("positive" if label.strip() == "1" else "negative")
    return texts, labels


def embedded_direct(backend: Any, width: int) -> tuple[Direct, Callable[[], None]]:
    """Requests straight to the xllamacpp server inside ``backend`` (an ``EmbeddedBackend``),
    as ``EmbeddedBackend.generate`` would send them, from ``width`` threads; and a closer."""
    from moa.models.embedded import engine_schema

    server = backend._load()
    pool = ThreadPoolExecutor(width, thread_name_prefix="direct")

    def call(request: GenerateRequest) -> str:
        body: dict[str, Any] = {"n_predict": request.max_tokens, "temperature": request.temperature, "prompt": request.prompt}
        if request.top_logprobs:
            body["n_probs"] = request.top_logprobs
        if request.json_schema is not None:
            body["json_schema"] = engine_schema(request.json_schema)
        response = server.handle_completions(body)
        return str(response["choices"][0]["text"])

    async def direct(request: GenerateRequest) -> str:
        return await asyncio.get_running_loop().run_in_executor(pool, call, request)

    return direct, lambda: pool.shutdown(wait=True)


async def run_direct(direct: Direct, requests: list[GenerateRequest], width: int) -> list[str | None]:
    """Every request through ``width`` workers (each waits for its answer before taking the next)."""
    answers: list[str | None] = [None] * len(requests)
    pending = iter(enumerate(requests))

    async def worker() -> None:
        for i, request in pending:
            text = await direct(request)
            try:
                answers[i] = str(json.loads(text)["label"])
            except (ValueError, KeyError, TypeError):
                answers[i] = None

    await asyncio.gather(*(worker() for _ in range(width)))
    return answers


async def measure(
    texts: list[str], gold: list[str], slm: ModelBackend, direct: Direct, state_dir: Path, *, configs: list[str], block: int | None = None
) -> dict[str, Any]:
    """Run each configuration over ``texts``, block by block (``block`` items; default all at
    once), the order of the configurations rotating from block to block."""

    def settings(durable: bool) -> moa.Settings:
        return moa.load_settings(state_dir=state_dir, cache=False, cascade=["slm"], durable=durable, max_items=max(len(texts), 10_000))

    ctx = moa.RunContext.create(settings(False), models=Models(settings(False), slm=slm, llm=slm))
    width = sentiment.batch_width(ctx)
    await ctx.aclose()
    caps = await slm.acapabilities()
    requests = [sentiment.request(sentiment.make_input(t, {"labels": LABELS}), caps) for t in texts]
    plan = {"subtasks": [{"id": "s", "agent": "sentiment", "options": {"labels": LABELS}}]}
    await run_direct(direct, requests[:4], width)  # warm: the model loaded, the few-shot prefix cached

    async def via_moa(lo: int, hi: int, durable: bool) -> list[str | None]:
        result = await moa.arun("sentiment", input=texts[lo:hi], plan=plan, settings=settings(durable), slm=slm, llm=slm)
        return [getattr(i.output, "label", None) for i in result.results["s"].items]

    runs: dict[str, Callable[[int, int], Awaitable[list[str | None]]]] = {
        "direct": lambda lo, hi: run_direct(direct, requests[lo:hi], width),
        "moa": lambda lo, hi: via_moa(lo, hi, False),
        "moa durable": lambda lo, hi: via_moa(lo, hi, True),
    }
    size = block or len(texts)
    totals = {c: {"wall_s": 0.0, "cpu_s": 0.0, "labels": [], "block_walls_s": [], "loads": []} for c in configs}
    for b, lo in enumerate(range(0, len(texts), size)):
        hi = min(lo + size, len(texts))
        shift = b % len(configs)
        for name in configs[shift:] + configs[:shift]:
            total = totals[name]
            total["loads"].append(load()[0])
            cpu, started = time.process_time(), time.perf_counter()
            total["labels"] += await runs[name](lo, hi)
            wall = time.perf_counter() - started
            total["wall_s"] += wall
            total["cpu_s"] += time.process_time() - cpu
            total["block_walls_s"].append(wall)
        print(f"  items {lo}-{hi}: " + ", ".join(f"{c} {totals[c]['block_walls_s'][-1]:.3f} s" for c in configs), f"load {load()[0]}", file=sys.stderr)
    rows = []
    for name, t in totals.items():
        rows.append(
            {
                "config": name,
                "items": len(texts),
                "wall_s": round(t["wall_s"], 3),
                "items_per_s": round(len(texts) / t["wall_s"], 3),
                "cpu_s": round(t["cpu_s"], 3),
                "cpu_ms_per_item": round(1000 * t["cpu_s"] / len(texts), 2),
                "answered": sum(1 for x in t["labels"] if x is not None),
                "accuracy": round(sum(1 for x, g in zip(t["labels"], gold, strict=True) if x == g) / len(texts), 4),
                "load_min_max": [min(t["loads"]), max(t["loads"])],
                "block_walls_s": [round(w, 4) for w in t["block_walls_s"]],
            }
        )
    if "direct" in totals:
        ref = next(r for r in rows if r["config"] == "direct")
        direct_walls = totals["direct"]["block_walls_s"]
        for r in rows:
            r["x_direct_items_per_s"] = round(r["items_per_s"] / ref["items_per_s"], 3)
            r["x_direct_cpu_per_item"] = round(r["cpu_ms_per_item"] / ref["cpu_ms_per_item"], 3)
            # each block's ratio compares runs minutes apart at most: the median resists bursts of load
            walls = totals[r["config"]]["block_walls_s"]
            r["x_direct_median_block"] = round(median([d / w for d, w in zip(direct_walls, walls, strict=True) if w > 0]), 3)
    return {"width": width, "block": size, "rows": rows}


def render(results: dict[str, Any]) -> str:
    header = ["config", "items", "wall s", "items/s", "× direct items/s", "median of blocks' × direct", "CPU ms/item", "× direct CPU", "answered", "accuracy"]
    header += ["load 1m min–max"]
    rows = [
        [r["config"], r["items"], r["wall_s"], r["items_per_s"], r.get("x_direct_items_per_s"), r.get("x_direct_median_block"), r["cpu_ms_per_item"], r.get("x_direct_cpu_per_item")]
        + [r["answered"], r["accuracy"]]
        + [f"{r['load_min_max'][0]}–{r['load_min_max'][1]}"]
        for r in results["rows"]
    ]
    blocks = f"blocks of {results['block']} items, configurations interleaved" if results["block"] < results["rows"][0]["items"] else "one run per configuration"
    lines = [f"machine: {describe(results['machine'])}", f"in flight: {results['width']} (the agent's batch width); {blocks}; load after: {results['load_after']}"]
    return "\n".join([*lines, "", table(header, rows)])


async def main() -> None:
    p = parser(__doc__, "batch")
    p.add_argument("--n", type=int, default=1000, help="items (default %(default)s)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    p.add_argument("--block", type=int, help="interleave the configurations in blocks of this many items (default: one run each over all items)")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="warning")
    from moa.models.embedded import EmbeddedBackend

    settings = moa.load_settings()
    backend = EmbeddedBackend(n_ctx=settings.embedded_ctx, parallel=settings.embedded_parallel, threads=settings.embedded_threads)
    texts, gold = sst2(args.n)
    results: dict[str, Any] = {"machine": machine("xllamacpp"), "args": {k: str(v) for k, v in vars(args).items()}}
    results["engine"] = {"parallel": settings.embedded_parallel, "threads": settings.embedded_threads, "n_ctx": settings.embedded_ctx}
    direct, close = embedded_direct(backend, settings.embedded_parallel)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results |= await measure(texts, gold, backend, direct, Path(tmp), configs=args.configs.split(","), block=args.block)
    finally:
        close()
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
