"""The llm tier failing at planning: ``planner = "auto"`` falls back to the router planner with a
warning; ``planner = "llm"`` fails and says that ``--planner router`` works without the llm tier.

Unit tests use fake models; the ``real`` ones use the official ``openai`` client against a real
HTTP port on 127.0.0.1 that is closed (nothing listens) or that hangs (the fault server's
``hang`` mode for the planner's requests), through :func:`moa.arun` and the ``moa`` command.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fault_server import FaultServer, fault_server

import moa
from moa.errors import BudgetExceeded, ErrorCode, InvalidPlan, ModelUnavailable
from moa.testing import FakeEmbedder, FakeModel
from moa.workflow.planner import ROUTER_HINT

TASK = "Give the sentiment of each review"
ITEMS = ["I love this hotel, great staff", "Terrible food, cold and late"]
SENTIMENT = '{"label":"positive","confidence":0.9}'


def context(llm: FakeModel, **settings: object) -> moa.RunContext:
    s = moa.load_settings(confidence="self", **settings)  # type: ignore[arg-type]
    return moa.RunContext.create(s, models=moa.Models(s, slm=FakeModel([SENTIMENT]), llm=llm), embedder=FakeEmbedder())


def down() -> FakeModel:
    """A chat model (so ``auto`` picks the llm planner) whose server is down."""
    return FakeModel(chat=True, spec="fake:big", fail_with=moa.RunError(ErrorCode.MODEL_UNREACHABLE, "cannot reach the model server at http://127.0.0.1:9"))


# -- fakes ------------------------------------------------------------------------------------------


async def test_auto_falls_back_to_the_router_when_the_llm_tier_is_down_and_says_so() -> None:
    llm = down()
    result = await moa.arun(TASK, input=ITEMS, context=context(llm))
    assert result.status == "ok" and result.exit_code == 0
    assert result.planner is not None and result.planner.name == "router"
    assert [s.agent for s in result.plan.subtasks] == ["sentiment"]  # type: ignore[union-attr]
    warning = result.planner.warning or ""
    assert "could not plan ([model_unreachable]" in warning and "--planner router" in warning and "--planner llm" in warning
    assert result.warnings[0] == warning
    assert "failed to plan (model_unreachable)" in result.planner.reason
    assert llm.requests  # the llm planner was tried first


async def test_auto_falls_back_when_the_llm_gives_no_valid_plan_after_its_repair() -> None:
    """A broken llm planner does not go unnoticed: the plan is the router's, the warning says why."""
    llm = FakeModel(['{"subtasks": "none"}'], chat=True, spec="fake:big")
    result = await moa.arun(TASK, input=ITEMS, context=context(llm))
    assert result.planner is not None and result.planner.name == "router" and result.status == "ok"
    assert "[invalid_plan]" in (result.planner.warning or "") and result.warnings[0] == result.planner.warning
    plan_calls = [u for u in result.usage if u.purpose in ("plan", "repair") and u.tier == "llm"]
    assert len(plan_calls) == 1  # the one planning call is counted (repairs are mechanical), then the router planned


async def test_planner_llm_fails_and_says_the_router_planner_works_without_it() -> None:
    with pytest.raises(ModelUnavailable) as raised:
        await moa.arun(TASK, input=ITEMS, context=context(down(), planner="llm"))
    assert raised.value.code == ErrorCode.MODEL_UNREACHABLE and ROUTER_HINT in raised.value.message
    with pytest.raises(InvalidPlan) as invalid:
        await moa.arun(TASK, input=ITEMS, context=context(FakeModel(['{"subtasks": "none"}'], chat=True), planner="llm"))
    assert ROUTER_HINT in invalid.value.message


async def test_a_used_up_budget_at_planning_is_not_fallen_back_from() -> None:
    """The time budget is used up before the planning call: the run stops, no router plan."""
    llm = FakeModel(['{"subtasks": "none" , "rationale": "a b c d e f g h"}'], chat=True, spec="fake:big")
    with pytest.raises(BudgetExceeded):
        await moa.arun(TASK, input=ITEMS, context=context(llm, budget_seconds=1e-9))
    assert llm.requests == []


# -- a real closed port and a real hanging server ---------------------------------------------------


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with fault_server() as running:
        yield running


def llm_specs(server: FaultServer) -> dict[str, str]:
    return {
        "down": f"openai:fake@http://127.0.0.1:{closed_port()}/v1",
        "hang": server.openai("hang", "plan"),
    }


@pytest.mark.real
@pytest.mark.parametrize(("fault", "code"), [("down", "model_unreachable"), ("hang", "model_timeout")])
async def test_api_auto_plans_with_the_router_when_the_llm_server_is_down_or_hangs(server: FaultServer, tmp_path: Path, fault: str, code: str) -> None:
    settings = moa.load_settings(
        slm=server.openai(), llm=llm_specs(server)[fault], planner="auto", timeout=5.0, state_dir=tmp_path / "state", memory_dir=tmp_path / "memory"
    )
    result = await moa.arun(TASK, input=ITEMS, settings=settings)
    assert result.planner is not None and result.planner.name == "router"
    assert [s.agent for s in result.plan.subtasks] == ["sentiment"]  # type: ignore[union-attr]
    assert f"could not plan ([{code}]" in result.warnings[0]
    assert all(i.output is not None for i in result.results["s1"].items)
    assert result.exit_code == 0  # the synthesizer's failure (same server) leaves the report


def run_moa(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "moa.toml").touch()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MOA_")}
    full = {**base, "MOA_CONFIG": str(tmp_path / "moa.toml"), "MOA_STATE_DIR": str(tmp_path / "state"),
            "MOA_MEMORY_DIR": str(tmp_path / "memory"), "MOA_TIMEOUT": "5", **env}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=full, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL)


@pytest.mark.real
@pytest.mark.parametrize(("fault", "code"), [("down", "model_unreachable"), ("hang", "model_timeout")])
def test_cli_auto_falls_back_with_a_warning_and_llm_says_how_to_do_without(server: FaultServer, tmp_path: Path, fault: str, code: str) -> None:
    items = tmp_path / "reviews.txt"
    items.write_text("\n".join(ITEMS) + "\n", encoding="utf-8")
    env = {"MOA_SLM": server.openai(), "MOA_LLM": llm_specs(server)[fault]}
    auto = run_moa(tmp_path, env, "run", TASK, "--input", str(items), "--planner", "auto", "--json")
    assert auto.returncode == 0, auto.stderr
    printed = json.loads(auto.stdout)
    assert printed["planner"]["name"] == "router" and [s["agent"] for s in printed["plan"]["subtasks"]] == ["sentiment"]
    assert f"could not plan ([{code}]" in printed["warnings"][0]
    assert "warning" in auto.stderr and "--planner router" in auto.stderr and "Traceback" not in auto.stderr

    strict = run_moa(tmp_path, env, "run", TASK, "--input", str(items), "--planner", "llm")
    assert strict.returncode == 3 and "Traceback" not in strict.stderr
    assert code in strict.stderr and "--planner router" in strict.stderr and "without the llm tier" in strict.stderr
