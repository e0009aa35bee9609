"""One short run of each shipped instruct model on the embedded engine: load time, prompt and
generation tokens/s, peak memory.

Not a long benchmark: for each model it loads the engine exactly as moa does
(:class:`moa.models.embedded.EmbeddedBackend`, one slot, the GGUF's chat template), then sends
one chat request (a ~300-token prompt, 64 tokens generated, temperature 0) and reads llama.cpp's
own timings. Each model runs in a subprocess, so its peak RSS is its own. Models that are not
installed are listed as such::

    python benchmarks/shipped_models.py                     # every installed shipped model
    python benchmarks/shipped_models.py --models smollm2-135m-instruct
    python benchmarks/shipped_models.py --report benchmarks/results/shipped_models.json

The first use of a chunked model assembles it (seconds per GB); that time is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import describe, finish, load, machine, parser, report, table  # noqa: E402

PROMPT = (
    "Here are three customer reviews of a hotel.\n"
    "1. The room was spotless and the staff at the front desk were friendly and helpful. Breakfast had a good choice of "
    "fresh fruit, eggs and pastries, and the coffee was excellent. We will come back next summer.\n"
    "2. We waited forty minutes to check in, the air conditioning in our room did not work, and nobody came to fix it "
    "although we asked twice. The pool was closed for cleaning during our whole stay.\n"
    "3. The location is great: ten minutes on foot to the old town and the station. The rooms are small but quiet, and "
    "the beds are comfortable. Parking is expensive.\n"
    "Summarise what the guests liked and what they did not like, in a few sentences."
)


def run_one(name: str, threads: int) -> dict[str, Any]:
    """Load one shipped model and answer one chat request (in this process)."""
    import moa
    from moa.models.registry import create_backend
    from moa.models.shipped import SHIPPED, model_file

    settings = moa.load_settings(embedded_parallel=1, embedded_threads=threads, cache=False)
    backend = create_backend(f"embedded:{name}", settings)
    started = time.perf_counter()
    path = model_file(SHIPPED[name], settings.model_cache_dir)  # assembled and verified (first use), or its stamp checked
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    server = backend._load()  # type: ignore[attr-defined]
    load_s = time.perf_counter() - started
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64, "temperature": 0.0, "ignore_eos": True}
    started = time.perf_counter()
    response = server.handle_chat_completions(body)
    wall_s = time.perf_counter() - started
    timings = response.get("timings", {})
    answer = response["choices"][0]["message"]["content"]
    asyncio.run(backend.aclose())
    return {
        "model": name,
        "file_mb": round(path.stat().st_size / 1e6),
        "prepare_s": round(prepare_s, 2),
        "load_s": round(load_s, 2),
        "prompt_tokens": timings.get("prompt_n"),
        "prompt_tok_s": round(timings.get("prompt_per_second", 0.0), 1),
        "gen_tokens": timings.get("predicted_n"),
        "gen_tok_s": round(timings.get("predicted_per_second", 0.0), 1),
        "request_s": round(wall_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "answer": answer,
    }


def measure(names: list[str], threads: int) -> dict[str, Any]:
    from moa.models.shipped import SHIPPED, shipped_status

    rows = []
    for name in names:
        status = shipped_status(SHIPPED[name])
        if status.installed < len(SHIPPED[name].parts):
            rows.append({"model": name, "status": status.summary})
            continue
        before = load()
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--threads", str(threads)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            rows.append({"model": name, "status": f"failed: {out.stderr.strip().splitlines()[-1:]}"})
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({**row, "status": "ok", "load_before": before})
    return {"threads": threads, "rows": rows}


def render(results: dict[str, Any]) -> str:
    header = ["model", "file MB", "assemble/verify s", "load s", "prompt tok", "prompt tok/s", "gen tok", "gen tok/s", "peak RSS MB", "status"]
    keys = ["model", "file_mb", "prepare_s", "load_s", "prompt_tokens", "prompt_tok_s", "gen_tokens", "gen_tok_s", "peak_rss_mb", "status"]
    lines = [f"machine: {describe(results['machine'])}; {results['threads']} threads; load after {results['load_after']}", ""]
    lines.append(table(header, [[r.get(k) for k in keys] for r in results["rows"]]))
    for r in results["rows"]:
        if r.get("answer"):
            lines += ["", f"{r['model']}: {' '.join(r['answer'].split())[:300]}"]
    return "\n".join(lines)


def main() -> None:
    from moa.models.shipped import SHIPPED

    p = parser(__doc__, "shipped_models")
    p.add_argument("--models", nargs="*", default=list(SHIPPED), choices=list(SHIPPED))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)  # the worker subprocess of one model
    args = p.parse_args()
    if args.report:
        report(args.report, render)
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.threads)))
        return
    results = {"machine": machine("xllamacpp"), **measure(args.models, args.threads)}
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    main()
