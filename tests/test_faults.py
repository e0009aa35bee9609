"""Faults of model servers: every misbehaviour of :mod:`support.fault_server` against every tier.

- Unit tests (no network): :func:`moa.models.transport.read_body`, the one reader of answer bodies.
- ``real`` tests run the official ``openai`` and ``ollama`` clients, as moa uses them, against the
  fault server on 127.0.0.1 (canned answers, no model):

  - each backend maps each fault of a single call to its typed error, at its one translation point;
  - the matrix (also ``slow``): every fault against every tier of a run (planner, agents on the slm
    tier with and without escalation, synthesizer, escalation target) through :func:`moa.arun`,
    over both protocols, checked by :func:`support.fault_matrix.check` (exit code, no traceback,
    the error code where ``--json`` puts it, no answerable item lost, the run recorded and, when it
    stopped, resumed once the fault is gone);
  - a representative subset of the matrix through the ``moa`` command in a subprocess (exit codes
    and tracebacks are the process's own there).

``benchmarks/faults.py`` runs the same matrix and prints the figures (faults tried, runs survived,
results lost) that ``docs/reliability.md`` quotes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from support.fault_matrix import ITEMS, TASK, Outcome, cases, healthy_settings, run_api, run_cli
from support.fault_server import HEALTHY_ANSWER, UNKNOWN_TOOL, FaultServer, Protocol, fault_server

from moa.agent.tools import tool
from moa.agents.sentiment import agent as sentiment
from moa.errors import ErrorCode, ModelFailed, RunError
from moa.models import transport
from moa.models.base import GenerateRequest, Message, ModelBackend
from moa.models.ollama import OllamaBackend
from moa.models.openai import OpenAIBackend
from moa.settings import load_settings
from moa.workflow.driver import arun


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with fault_server() as running:
        yield running


# -- reading bodies (unit) -------------------------------------------------------------------------


class Reply(BaseModel):
    choices: list[str]


def response(body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": content_type})


def test_a_body_that_is_not_json_is_unusable_and_says_so() -> None:
    with pytest.raises(transport.UnusableBody) as caught:
        transport.read_body(response(b"this is {not json"), Reply, "a reply")
    assert caught.value.problems is None
    assert caught.value.summary == "HTTP 200 with a body that is not JSON (application/json): 'this is {not json'"
    assert caught.value.details() == {"status": 200, "body": "this is {not json"}


def test_json_that_is_not_the_reply_is_unusable_with_its_problems() -> None:
    with pytest.raises(transport.UnusableBody) as caught:
        transport.read_body(response(b'{"choices": "none"}'), Reply, "a reply")
    assert caught.value.problems == "choices: Input should be a valid array"
    assert "JSON that is not a reply (choices: Input should be a valid array)" in caught.value.summary
    assert transport.read_body(response(b'{"choices": ["a"], "extra": 1}'), Reply, "a reply") == Reply(choices=["a"])


def test_an_unusable_body_is_never_sent_again() -> None:
    error = transport.UnusableBody(status=200, content_type="text/html", text="<html>", expected="a reply", problems=None)
    assert not transport.broke_before_answer(error)


# -- one call: each backend's translation point (real clients, real HTTP) ----------------------------

CALL_CODES = {
    "http_500": ErrorCode.MODEL_ERROR,
    "not_json": ErrorCode.MODEL_ERROR,
    "html": ErrorCode.MODEL_ERROR,
    "off_protocol": ErrorCode.MODEL_ERROR,
    "hang": ErrorCode.MODEL_TIMEOUT,
    "close_mid_body": ErrorCode.MODEL_UNREACHABLE,
    "close_before_answer": ErrorCode.MODEL_UNREACHABLE,
}
"""Faults of the exchange itself: the backend raises (content faults are the structured layer's)."""


def backend_for(server: FaultServer, protocol: Protocol, mode: str, target: str = "all") -> ModelBackend:
    base = server.base(mode, target)
    if protocol == "openai":
        return OpenAIBackend(f"openai:fake@{base}/v1", model="fake", base_url=f"{base}/v1", timeout=1.0)
    return OllamaBackend(f"ollama:fake@{base}", model="fake", host=base, timeout=1.0)


CHAT = GenerateRequest(messages=[Message(role="system", content="Answer briefly."), Message(role="user", content="hi")], max_tokens=20)


@pytest.mark.real
@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize("mode", list(CALL_CODES))
async def test_each_fault_of_one_call_is_a_typed_error(server: FaultServer, protocol: Protocol, mode: str) -> None:
    model = backend_for(server, protocol, mode, "synthesize")  # faulty for chat calls only: the Ollama probe stays healthy
    before = len(server.requests)
    try:
        with pytest.raises(RunError) as caught:
            await model.generate(CHAT)
    finally:
        await model.aclose()
    assert caught.value.code == CALL_CODES[mode]
    sent = [r for r in server.requests[before:] if r.purpose == "synthesize"]
    assert all(r.faulty for r in sent)
    assert len(sent) == (2 if mode == "close_before_answer" else 1)  # only a connection closed before any answer is sent again
    if mode in ("not_json", "html", "off_protocol"):
        assert isinstance(caught.value, ModelFailed) and caught.value.details["status"] == 200
        assert ("not JSON" if mode != "off_protocol" else "JSON that is not") in caught.value.message
        assert server.base(mode, "synthesize") in caught.value.message


@pytest.mark.real
@pytest.mark.parametrize("protocol", ["openai", "ollama"])
@pytest.mark.parametrize("mode", ["not_json", "html", "off_protocol", "http_500"])
async def test_metadata_endpoints_fail_the_same_way(server: FaultServer, protocol: Protocol, mode: str) -> None:
    """``moa models`` (``check``) and the Ollama capability probe read bodies through the same point."""
    model = backend_for(server, protocol, mode, "all")
    try:
        with pytest.raises(RunError) as caught:
            await model.check()
    finally:
        await model.aclose()
    assert caught.value.code == ErrorCode.MODEL_ERROR


@pytest.mark.real
@pytest.mark.parametrize("protocol", ["openai", "ollama"])
async def test_healthy_and_odd_but_usable_answers_pass(server: FaultServer, protocol: Protocol) -> None:
    model = backend_for(server, protocol, "ok")
    try:
        answer = await model.generate(CHAT)
        await model.check()
        called = await backend_for(server, protocol, "unknown_tool").generate(CHAT)
    finally:
        await model.aclose()
    assert answer.text == HEALTHY_ANSWER and answer.finish_reason == "stop"
    assert [c.name for c in called.tool_calls] == [UNKNOWN_TOOL] and called.text == ""


@pytest.mark.real
async def test_a_tool_nobody_offered_is_refused_and_never_run(server: FaultServer, tmp_path: Path) -> None:
    """An agent with a tool meets a model that calls another one: refused and recorded, the loop
    bounded, the item fails as invalid output (and the llm, healthy, answers it)."""
    ran: list[Any] = []

    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        ran.append(word)
        return "meaning"

    with_tool = sentiment.with_tools(lookup)
    settings = load_settings(slm=server.openai("unknown_tool", "agent"), llm=server.openai(), planner="llm", timeout=2.0,
                             state_dir=tmp_path / "state", memory_dir=tmp_path / "memory")  # fmt: skip
    result = await arun(TASK, input=list(ITEMS), settings=settings, agents=[with_tool])
    assert ran == [] and result.status == "ok"
    for item in result.results["s1"].items:
        first = item.attempts[0]
        assert first.step == "slm" and first.error is not None and first.error.code == ErrorCode.INVALID_OUTPUT
        assert item.answered_by == "llm"
    refused = result.results["s1"].tool_calls
    assert refused and {c.name for c in refused} == {UNKNOWN_TOOL} and not any(c.allowed for c in refused)
    assert all(c.error is not None and c.error.code == ErrorCode.TOOL_REFUSED for c in refused)
    assert len(refused) == 3 * len(ITEMS)  # max_rounds per item, then the structured answer


# -- every fault against every tier --------------------------------------------------------------------


@pytest.mark.real
async def test_the_healthy_server_answers_every_item(server: FaultServer, tmp_path: Path) -> None:
    """The baseline the matrix compares with: both tiers healthy, every item of both subtasks answered."""
    before = len(server.requests)
    result = await arun(TASK, input=list(ITEMS), settings=healthy_settings(server, "openai", tmp_path))
    assert result.status == "ok" and result.answer == HEALTHY_ANSWER
    assert {sid: [i.output is not None for i in r.items] for sid, r in result.results.items()} == {"s1": [True] * 3, "s2": [True] * 3}
    seen = server.requests[before:]
    assert {r.purpose for r in seen} == {"plan", "agent", "synthesize"} and not any(r.faulty for r in seen)


def _params(protocols: tuple[Protocol, ...] = ("openai", "ollama"), only: set[tuple[str, str, str]] | None = None) -> list[Any]:
    params = []
    for protocol, tier, mode in cases(protocols):
        if only is not None and (protocol, tier, mode) not in only:
            continue
        marks: list[Any] = []
        params.append(pytest.param(protocol, tier, mode, id=f"{protocol}-{tier}-{mode}", marks=marks))
    return params


def _explain(outcome: Outcome) -> str:
    return f"{outcome.protocol} {outcome.tier} {outcome.mode} via {outcome.via}: " + "; ".join(outcome.problems)


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "tier", "mode"), _params())
async def test_every_fault_against_every_tier(server: FaultServer, tmp_path: Path, protocol: Protocol, tier: str, mode: str) -> None:
    outcome = await run_api(server, protocol, tier, mode, tmp_path)
    assert outcome.survived, _explain(outcome)
    assert outcome.lost == 0


CLI_SUBSET = {
    ("openai", "agent", "not_json"),  # the report: MOA_SLM answering `this is {not json`
    ("openai", "planner", "not_json"),  # ... and `moa resume` once the llm answers again
    ("openai", "synthesizer", "not_json"),
    ("openai", "escalation", "close_mid_body"),
    ("ollama", "agent_alone", "html"),
    ("ollama", "planner", "hang"),
    ("openai", "planner", "foreign_cascade"),
}


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "tier", "mode"), _params(only=CLI_SUBSET))
def test_the_moa_command_survives_faults(server: FaultServer, tmp_path: Path, protocol: Protocol, tier: str, mode: str) -> None:
    outcome = run_cli(server, protocol, tier, mode, tmp_path)
    assert outcome.survived, _explain(outcome)
    assert outcome.lost == 0
