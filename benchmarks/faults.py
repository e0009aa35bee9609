"""Faults tried, runs survived, results lost: every fault of the test fault server against every tier.

Runs the matrix of ``tests/test_faults.py`` (:mod:`support.fault_matrix`, on
:mod:`support.fault_server`: canned answers on 127.0.0.1, no model) and counts:

- **faults tried**: cases, i.e. (protocol, tier, mode) runs with one tier pointed at a
  misbehaving server: every mode against the planner (``--planner llm``), the agents on the slm
  tier (cascade slm → llm), the sentiment agent alone on the slm tier (``--no-escalate``), the
  synthesizer and the llm step of a cascade slm → llm; a plan naming a foreign model only against
  the planner; over the OpenAI-compatible and the Ollama protocol;
- **runs survived**: cases with no problem found by :func:`support.fault_matrix.check` (documented
  exit code and no traceback; the expected error code where ``--json`` puts it; the run in the
  run index with its status; a run that stopped with an error resumed to ``ok`` once the fault is
  gone; no answerable item lost; no request to a model spec a plan named);
- **results lost**: items a healthy tier could answer (both subtasks' items; the unfaulted
  subtask's only when the faulty agent cannot escalate) that the run did not give back, after the
  resume where there was one. Must be 0.

``--via api`` (default) runs each case through :func:`moa.arun`; ``--via cli`` through the ``moa``
command in a subprocess (slower: a Python start per run, ~1.5 s of CPU)::

    python benchmarks/faults.py                 # every case in-process, ~1 minute
    python benchmarks/faults.py --via cli       # every case through the moa command
    python benchmarks/faults.py --report benchmarks/results/faults.json
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks._common import describe, finish, load, machine, parser, report, table  # noqa: E402
from moa.logs import configure_logging  # noqa: E402
from support.fault_matrix import PROTOCOLS, TIERS, Outcome, cases, expected_code, run_api, run_cli  # noqa: E402
from support.fault_server import FAULTS, Protocol, fault_server  # noqa: E402


async def measure(via: str, protocols: tuple[Protocol, ...], only: set[str] | None = None) -> list[dict[str, Any]]:
    """Every case (``only``: these modes), one after the other; the outcomes as rows."""
    rows: list[dict[str, Any]] = []
    with fault_server() as server, tempfile.TemporaryDirectory() as tmp:
        for number, (protocol, tier, mode) in enumerate(cases(protocols)):
            if only is not None and mode not in only:
                continue
            home = Path(tmp) / f"case{number}"
            outcome: Outcome
            if via == "api":
                outcome = await run_api(server, protocol, tier, mode, home)
            else:
                outcome = await asyncio.to_thread(run_cli, server, protocol, tier, mode, home)
            rows.append(outcome.row())
            status = "survived" if outcome.survived else "FAILED: " + "; ".join(outcome.problems)
            print(f"{protocol:6} {tier:11} {mode:19} exit {outcome.exit_code} {outcome.code or '-':17} {outcome.seconds:6.2f}s {status}", file=sys.stderr)
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "faults_tried": len(rows),
        "runs_survived": sum(1 for r in rows if r["survived"]),
        "results_lost": sum(r["lost"] for r in rows),
        "answerable_items": sum(r["answerable"] for r in rows),
        "tracebacks": sum(1 for r in rows if r["traceback"]),
        "exit_1": sum(1 for r in rows if r["exit_code"] == 1),
    }


def render(results: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = results["rows"]
    total = totals(rows)
    by_tier = []
    for tier in TIERS:
        mine = [r for r in rows if r["tier"] == tier]
        if mine:
            exits = Counter(r["exit_code"] for r in mine)
            by_tier.append([tier, len(mine), sum(r["survived"] for r in mine), sum(r["lost"] for r in mine),
                            ", ".join(f"{k}×{v}" for k, v in sorted(exits.items())), TIERS[tier].description])  # fmt: skip
    modes = []
    for mode in FAULTS:
        mine = [r for r in rows if r["mode"] == mode]
        if mine:
            codes = sorted({str(expected_code(r["tier"], mode) or "none (answer kept)") for r in mine})
            modes.append([mode, len(mine), sum(r["survived"] for r in mine), sum(r["lost"] for r in mine), ", ".join(codes), FAULTS[mode]])
    failed = [r for r in rows if not r["survived"]]
    lines = [
        f"machine: {describe(results['machine'])}",
        f"via {results['via']}, protocols {', '.join(results['protocols'])}; load after: {results['load_after']}",
        "",
        table(["faults tried", "runs survived", "results lost", "answerable items", "tracebacks", "exit code 1"],
              [[total["faults_tried"], total["runs_survived"], total["results_lost"], total["answerable_items"], total["tracebacks"], total["exit_1"]]]),  # fmt: skip
        "",
        table(["tier", "faults tried", "survived", "results lost", "exit codes", "where the fault is"], by_tier),
        "",
        table(["fault", "tried", "survived", "results lost", "error code", "what the server does"], modes),
    ]
    if failed:
        lines += ["", "Not survived:", *(f"- {r['protocol']} {r['tier']} {r['mode']}: {'; '.join(r['problems'])}" for r in failed)]
    return "\n".join(lines)


async def main() -> None:
    p = parser(__doc__, "faults")
    p.add_argument("--via", choices=["api", "cli"], default="api", help="moa.arun in this process, or the moa command (default %(default)s)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: openai, ollama (default %(default)s)")
    p.add_argument("--modes", help="comma-separated faults to try (default: all)")
    args = p.parse_args()
    if args.report:
        return report(args.report, render)
    configure_logging(json=False, level="error")
    protocols = tuple(x.strip() for x in args.protocols.split(",") if x.strip())
    only = {m.strip() for m in args.modes.split(",")} if args.modes else None
    results: dict[str, Any] = {"machine": machine("openai", "ollama"), "via": args.via, "protocols": protocols}
    results["rows"] = await measure(args.via, protocols, only)  # type: ignore[arg-type]
    results["totals"] = totals(results["rows"])
    results["load_after"] = load()
    finish(results, render, args.json)


if __name__ == "__main__":
    asyncio.run(main())
