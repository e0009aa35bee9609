"""What the runtime benchmarks share: the machine and versions, load averages, medians, the
interleaved measuring loop, Markdown tables and the JSON file.

Not a benchmark itself. The scripts (``overhead.py``, ``parallelism.py``, ``batch.py``,
``memory.py``, ``cache.py``) import it as ``benchmarks._common`` after putting the repository root
on ``sys.path``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "eval"

Timed = Callable[[], Awaitable[Any]]


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews wall times)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(*packages: str) -> dict[str, Any]:
    """Cores, Python, platform, the load now, and the versions of moa and ``packages``."""
    versions = {}
    for name in ("moa", "langgraph", "pydantic", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "load": load(), "versions": versions}


def describe(info: dict[str, Any]) -> str:
    """One line for the top of a printed table."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return f"{info['cores']} cores, Python {info['python']}, load {info['load']}; {versions}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through (xs, ys): (slope, intercept) — the marginal cost of one more x,
    and the fixed cost."""
    if len(xs) < 2:
        return float("nan"), float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if not den:
        return float("nan"), float("nan")
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den
    return k, my - k * mx


async def interleaved(configs: dict[str, Timed], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each config, ``repeats`` times, the order rotating each round so that a
    burst of load elsewhere hits every config alike. A garbage collection precedes each run."""
    names = list(configs)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            started = time.perf_counter()
            await configs[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "–"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "–" if value is None else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats to 3 significant digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser with ``--json PATH`` (default ``benchmarks/results/<name>.json``) and
    ``--report PATH`` (print the table of a saved JSON and exit)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=RESULTS / f"{name}.json", help="where to write the results (default: %(default)s)")
    p.add_argument("--report", type=Path, help="print the table of a saved JSON and exit")
    return p


def finish(results: dict[str, Any], render: Callable[[dict[str, Any]], str], path: Path | None) -> None:
    """Print the table (machine and load first) and write the JSON."""
    print(render(results))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwritten: {path}")


def report(path: Path, render: Callable[[dict[str, Any]], str]) -> None:
    print(render(json.loads(path.read_text())))
