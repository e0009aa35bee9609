"""Every fault of :mod:`support.fault_server` against every tier a run uses, and what a run must
show when it meets one. Shared by ``tests/test_faults.py`` and ``benchmarks/faults.py``.

A *case* is (protocol, tier, mode). Its run is ``moa run TASK`` over :data:`ITEMS` with
``--planner llm`` (so the llm tier plans) and the built-in catalog; the healthy plan has two
independent subtasks, ``s1`` sentiment and ``s2`` extraction. The tier under test points at the
fault server in ``mode`` for its ``target``; everything else gets healthy answers (:data:`TIERS`).
A case is run in-process through :func:`moa.arun` (:func:`run_api`) or as the ``moa`` command in a
subprocess (:func:`run_cli`), and :func:`check` lists every way the outcome falls short of what
moa promises (an empty list: the run *survived*):

- it ends with the documented exit code (0 or 3; 2 for ``invalid_plan``), never 1, and without a
  Python traceback;
- the expected error code is where ``--json`` puts it (the run's error, an item's attempt, the
  subtask's items, or the synthesizer's note);
- every item a healthy tier can answer is in the run's result (*results lost* counts those that
  are not);
- the run is in the run index with its status. Only a planner fault stops a run: such a run is
  recorded as ``error``, resumed once the fault is gone, and must then give back every item.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from moa.errors import ErrorCode, MoaError
from moa.settings import Settings, load_settings
from moa.workflow.driver import aresume, arun
from moa.workflow.results import RunResult
from moa.workflow.view import list_runs
from support.fault_server import FAULTS, FaultServer, Protocol

TASK = "Give the sentiment and the entities of each review"
ITEMS = ("I love this hotel, great staff", "Terrible food, cold and late", "The parcel came on Monday from Acme in Paris")
SUBTASKS = ("s1", "s2")
TIMEOUT = 2.0
"""Seconds per model call (``hang`` costs this much per wave of calls)."""
PROTOCOLS: tuple[Protocol, ...] = ("openai", "ollama")

Via = Literal["api", "cli"]


@dataclass(frozen=True)
class Tier:
    """Where a fault is injected, and what must survive it."""

    name: str
    description: str
    faulty: Literal["slm", "llm"]
    """The tier setting that points at the faulty path."""
    target: str
    """The fault server's target on that path (see :mod:`support.fault_server`)."""
    answerable: tuple[str, ...] = SUBTASKS
    """Subtasks whose items a healthy tier can still answer (after a resume when the run stopped)."""
    slm_mode: str = "ok"
    """The mode of the slm tier when it is not the faulty one (``weak``: every sentiment answer escalates)."""
    escalate: bool = True
    exit_code: int = 0
    """The exit code when the fault hits (3: the run, or a subtask, failed)."""


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("planner", "the llm tier plans (`--planner llm`)", "llm", "plan", exit_code=3),
        Tier("agent", "the agents on the slm tier (cascade slm → llm)", "slm", "agent"),
        Tier("agent_alone", "the sentiment agent on the slm tier, no escalation (`--no-escalate`)", "slm", "SentimentDecision",
             answerable=("s2",), escalate=False, exit_code=3),
        Tier("synthesizer", "the llm tier writes the answer", "llm", "synthesize"),
        Tier("escalation", "the llm step of a cascade slm → llm (weak slm answers escalate)", "llm", "agent", slm_mode="weak"),
    )
}

CODES: dict[str, ErrorCode] = {
    "http_500": ErrorCode.MODEL_ERROR,
    "not_json": ErrorCode.MODEL_ERROR,
    "html": ErrorCode.MODEL_ERROR,
    "off_protocol": ErrorCode.MODEL_ERROR,
    "off_schema": ErrorCode.INVALID_OUTPUT,
    "truncated": ErrorCode.INVALID_OUTPUT,
    "hang": ErrorCode.MODEL_TIMEOUT,
    "close_mid_body": ErrorCode.MODEL_UNREACHABLE,
    "close_before_answer": ErrorCode.MODEL_UNREACHABLE,
    "unknown_tool": ErrorCode.INVALID_OUTPUT,
    "foreign_cascade": ErrorCode.INVALID_PLAN,
}
"""The error code each fault gives a structured call (an agent's, the planner's)."""


def expected_code(tier: str, mode: str) -> ErrorCode | None:
    """The code the case must report (``None``: the fault is not an error there)."""
    if tier == "synthesizer":  # prose: any text is an answer; none at all is a model error
        return {"off_schema": None, "truncated": None, "unknown_tool": ErrorCode.MODEL_ERROR}.get(mode, CODES[mode])
    if tier == "planner" and CODES[mode] == ErrorCode.INVALID_OUTPUT:  # the planner reads the answer itself: no usable plan
        return ErrorCode.INVALID_PLAN
    return CODES[mode]


def cases(protocols: tuple[Protocol, ...] = PROTOCOLS) -> list[tuple[Protocol, str, str]]:
    """Every (protocol, tier, mode) that injects a fault: every mode against every tier; a
    foreign cascade only where a plan is made."""
    return [
        (protocol, tier, mode)
        for protocol in protocols
        for tier in TIERS
        for mode in FAULTS
        if mode != "foreign_cascade" or tier == "planner"
    ]


@dataclass
class Outcome:
    """What one case showed (see :func:`check`)."""

    protocol: str
    tier: str
    mode: str
    via: Via
    exit_code: int | None = None
    code: str | None = None
    """The expected code where it was found (``None``: not found, or none expected)."""
    traceback: bool = False
    recorded: str | None = None
    """The run's status in the run index."""
    resumed: str | None = None
    """The status of the resumed run, when the run stopped with an error."""
    kept: int = 0
    """Answerable items with an answer at the end (after the resume)."""
    answerable: int = 0
    foreign_requests: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.answerable - self.kept

    @property
    def survived(self) -> bool:
        return not self.problems

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost, "survived": self.survived}


def specs(server: FaultServer, protocol: Protocol, tier: str, mode: str) -> dict[str, str]:
    """The slm and llm specs of a case."""
    t = TIERS[tier]
    healthy = {"slm": server.spec(protocol, t.slm_mode), "llm": server.spec(protocol)}
    return {**healthy, t.faulty: server.spec(protocol, mode, t.target)}


def settings_of(server: FaultServer, protocol: Protocol, tier: str, mode: str, home: Path, **overrides: Any) -> Settings:
    """The settings of a case. The shipped entity tagger is off: it would answer the extraction
    items before the faulty model is called (the matrix injects faults into model calls)."""
    tiers = specs(server, protocol, tier, mode)
    return load_settings(
        slm=tiers["slm"], llm=tiers["llm"], planner="llm", timeout=TIMEOUT, escalate=TIERS[tier].escalate,
        state_dir=home / "state", memory_dir=home / "memory", shipped_specialists=False, **overrides,
    )  # fmt: skip


def healthy_settings(server: FaultServer, protocol: Protocol, home: Path) -> Settings:
    """The same folders with both tiers healthy: what a resume after the fault runs with."""
    return load_settings(
        slm=server.spec(protocol), llm=server.spec(protocol), planner="llm", timeout=TIMEOUT, state_dir=home / "state", memory_dir=home / "memory",
        shipped_specialists=False,
    )


# -- reading an outcome ---------------------------------------------------------------------------


def _kept(results: Mapping[str, Any], answerable: tuple[str, ...]) -> int:
    """Answerable items with an output, from a run's ``results`` as ``--json`` gives them."""
    return sum(1 for sid in answerable for item in (results.get(sid) or {}).get("items", []) if item["run"].get("output") is not None)


def _attempt_codes(result: Mapping[str, Any], sid: str, step: int) -> list[str | None]:
    """The error code of attempt ``step`` (0 first, -1 last) of every item of ``sid``."""
    codes: list[str | None] = []
    for item in (result.get("results", {}).get(sid) or {}).get("items", []):
        attempts = item["run"]["attempts"]
        error = attempts[step]["error"] if attempts else item["run"].get("error")
        codes.append(error and error["code"])
    return codes


def _found_code(tier: str, expected: ErrorCode, result: Mapping[str, Any]) -> str | None:
    """Where the tier's fault shows in a finished run's ``--json``; the code, if it is there."""
    want = str(expected)
    if tier == "agent":  # every agent call failed on slm; the llm answered
        ok = all(c == want for sid in SUBTASKS for c in _attempt_codes(result, sid, 0))
    elif tier == "agent_alone":
        items = result["results"]["s1"]["items"]
        ok = result["results"]["s1"]["status"] == "failed" and all(i["run"]["error"]["code"] == want for i in items)
    elif tier == "escalation":  # the sentiment items escalated; their llm attempt failed
        ok = all(c == want for c in _attempt_codes(result, "s1", -1))
    elif tier == "synthesizer":
        ok = result.get("answer") is None and f"[{want}]" in (result.get("synthesizer") or "")
    else:
        ok = False
    return want if ok else None


def check(outcome: Outcome, result: Mapping[str, Any] | None, error: Mapping[str, Any] | None, stderr: str = "") -> Outcome:
    """Fill ``outcome`` from a run's ``--json`` (``result``, or ``error`` when the run stopped) and
    list its problems. ``outcome.recorded`` / ``resumed`` / ``kept`` must be set before."""
    tier, mode = TIERS[outcome.tier], outcome.mode
    expected = expected_code(outcome.tier, mode)
    problems = outcome.problems
    wanted_exit = 2 if expected == ErrorCode.INVALID_PLAN else tier.exit_code if expected is not None else 0
    if outcome.exit_code != wanted_exit:
        problems.append(f"exit code {outcome.exit_code}, expected {wanted_exit}")
    if outcome.traceback or "Traceback" in stderr:
        outcome.traceback = True
        problems.append("a Python traceback")
    if outcome.tier == "planner":
        got = (error or {}).get("code")
        outcome.code = got if expected is not None and got == str(expected) else None
        if outcome.code is None:
            problems.append(f"run error {got!r}, expected {expected}")
        if outcome.recorded != "error":
            problems.append(f"run recorded as {outcome.recorded!r}, expected 'error' (resumable)")
        if outcome.resumed != "ok":
            problems.append(f"the resumed run ended {outcome.resumed!r}, expected 'ok'")
    else:
        if result is None:
            problems.append(f"the run stopped: {error}")
        elif expected is not None:
            outcome.code = _found_code(outcome.tier, expected, result)
            if outcome.code is None:
                problems.append(f"{expected} not reported where --json puts it for {outcome.tier}")
        elif outcome.tier == "synthesizer" and result is not None:
            if not result.get("answer"):
                problems.append("no answer although the synthesizer's text is usable")
            if mode == "truncated" and "cut at max_tokens" not in (result.get("synthesizer") or ""):
                problems.append("a cut answer is not marked as cut")
        if result is not None and outcome.recorded != result.get("status"):
            problems.append(f"run recorded as {outcome.recorded!r}, the result says {result.get('status')!r}")
    if outcome.lost:
        problems.append(f"{outcome.lost} of {outcome.answerable} answerable items lost")
    if outcome.foreign_requests:
        problems.append(f"{outcome.foreign_requests} request(s) reached the foreign model spec a plan named")
    return outcome


# -- running a case -------------------------------------------------------------------------------


def _stops(tier: str) -> bool:
    """Whether a fault there stops the run (then it is resumed once the fault is gone, and its
    items are counted after the resume); elsewhere the run's own result must keep them."""
    return tier == "planner"


async def _record(settings: Settings) -> tuple[str | None, str | None]:
    runs = await list_runs(settings, 5)
    return (runs[0].run_id, runs[0].status) if runs else (None, None)


async def run_api(server: FaultServer, protocol: Protocol, tier: str, mode: str, home: Path) -> Outcome:
    """One case through :func:`moa.arun` (then :func:`moa.aresume` when it stopped)."""
    outcome = Outcome(protocol, tier, mode, "api", answerable=len(TIERS[tier].answerable) * len(ITEMS))
    started, foreign = time.perf_counter(), len(server.to("foreign"))
    settings = settings_of(server, protocol, tier, mode, home)
    result: RunResult | None = None
    error: dict[str, Any] | None = None
    try:
        result = await arun(TASK, input=list(ITEMS), settings=settings)
        outcome.exit_code = result.exit_code
    except MoaError as exc:
        error, outcome.exit_code = exc.to_dict(), exc.exit_code
    except Exception as exc:  # what the CLI would print as a traceback
        outcome.traceback, outcome.exit_code = True, 1
        error = {"code": None, "message": f"{type(exc).__name__}: {exc}"}
    run_id, outcome.recorded = await _record(settings)
    final = result
    if _stops(tier) and result is None and run_id is not None and outcome.recorded == "error":
        try:
            final = await aresume(run_id, settings=healthy_settings(server, protocol, home))
            outcome.resumed = final.status
        except MoaError as exc:
            outcome.resumed = f"error: {exc}"
    dumped = json.loads(result.model_dump_json()) if result is not None else None
    outcome.kept = _kept(json.loads(final.model_dump_json())["results"], TIERS[tier].answerable) if final is not None else 0
    outcome.foreign_requests = len(server.to("foreign")) - foreign
    outcome.seconds = round(time.perf_counter() - started, 3)
    return check(outcome, dumped, error)


def moa_env(server: FaultServer, protocol: Protocol, tier: str, mode: str, home: Path) -> dict[str, str]:
    """The environment of an isolated ``moa`` process for a case (an empty config file of its own)."""
    config = home / "moa.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.touch()
    tiers = specs(server, protocol, tier, mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOA_")}
    return {
        **env,
        "MOA_CONFIG": str(config),
        "MOA_STATE_DIR": str(home / "state"),
        "MOA_MEMORY_DIR": str(home / "memory"),
        "MOA_SLM": tiers["slm"],
        "MOA_LLM": tiers["llm"],
        "MOA_PLANNER": "llm",
        "MOA_TIMEOUT": str(TIMEOUT),
        "MOA_SHIPPED_SPECIALISTS": "false",
    }


def _moa(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, timeout=300
    )


def run_cli(server: FaultServer, protocol: Protocol, tier: str, mode: str, home: Path) -> Outcome:
    """One case as ``moa run ... --json`` in a subprocess (then ``moa resume RUN --json`` when it stopped)."""
    outcome = Outcome(protocol, tier, mode, "cli", answerable=len(TIERS[tier].answerable) * len(ITEMS))
    started, foreign = time.perf_counter(), len(server.to("foreign"))
    env = moa_env(server, protocol, tier, mode, home)
    items = home / "reviews.txt"
    items.write_text("\n".join(ITEMS) + "\n", encoding="utf-8")
    flags = [] if TIERS[tier].escalate else ["--no-escalate"]
    done = _moa(["run", TASK, "--input", str(items), "--json", *flags], env, home)
    outcome.exit_code = done.returncode
    stderr = done.stderr
    try:
        printed = json.loads(done.stdout)
    except json.JSONDecodeError:
        printed = {}
        outcome.problems.append(f"stdout is not one JSON document: {done.stdout[:200]!r}")
    result = printed if printed.get("status") not in (None, "error") else None
    error = printed.get("error") if result is None else None
    settings = load_settings(state_dir=home / "state", memory_dir=home / "memory")
    run_id, outcome.recorded = asyncio.run(_record(settings))
    final = result
    if _stops(tier) and result is None and run_id is not None and outcome.recorded == "error":
        healthy = {**env, "MOA_SLM": server.spec(protocol), "MOA_LLM": server.spec(protocol)}
        again = _moa(["resume", run_id, "--json"], healthy, home)
        stderr += again.stderr
        try:
            final = json.loads(again.stdout)
            outcome.resumed = final.get("status")
        except json.JSONDecodeError:
            outcome.resumed = f"exit {again.returncode}: {again.stdout[:200]!r}"
    outcome.kept = _kept((final or {}).get("results") or {}, TIERS[tier].answerable)
    outcome.foreign_requests = len(server.to("foreign")) - foreign
    outcome.seconds = round(time.perf_counter() - started, 3)
    return check(outcome, result, error, stderr)


__all__ = ["CODES", "ITEMS", "PROTOCOLS", "TASK", "TIERS", "Outcome", "Tier", "cases", "check", "expected_code", "run_api", "run_cli", "specs"]
