"""The public API is deliberate: adding or removing a name must change this test.

httpx's form (``tests/test_exported_members.py``): every public attribute of ``moa`` and of each
of its packages is in the package's ``__all__``, and every name in ``__all__`` exists. Submodules
are attributes of their package once imported; they are not counted.
"""

from __future__ import annotations
import __future__

import importlib
import pkgutil
import types

import pytest

import moa

EXPECTED = {
    "Agent",
    "AgentRun",
    "Approval",
    "ApprovalDenied",
    "BudgetExceeded",
    "Capabilities",
    "ConfigError",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "FunctionAgent",
    "GenerateRequest",
    "Generation",
    "Handoff",
    "InvalidOutput",
    "InvalidPlan",
    "Message",
    "MoaError",
    "ModelAgent",
    "ModelBackend",
    "ModelFailed",
    "ModelUnavailable",
    "Models",
    "NotFound",
    "Plan",
    "RunContext",
    "RunError",
    "RunResult",
    "Settings",
    "Subtask",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallRecord",
    "ToolRefused",
    "ToolSpec",
    "Usage",
    "UsageSummary",
    "UserError",
    "__version__",
    "agent_tool",
    "apending",
    "aresume",
    "arun",
    "as_langchain_tool",
    "choice_confidence",
    "create_backend",
    "generate_structured",
    "load_settings",
    "memory_search",
    "pending",
    "resume",
    "run",
    "run_tool_loop",
    "stream",
    "summarize",
    "tool",
}  # fmt: skip

PACKAGES = ["moa", *sorted(info.name for info in pkgutil.walk_packages(moa.__path__, "moa.") if info.ispkg)]


def test_exported_members() -> None:
    assert set(moa.__all__) == EXPECTED


def test_every_package_is_checked() -> None:
    assert {"moa.agent", "moa.agents", "moa.eval", "moa.graphs", "moa.learning", "moa.memory", "moa.models", "moa.routing", "moa.workflow"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_public_members_are_exported(name: str) -> None:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert len(exported) == len(set(exported)), f"{name}.__all__ names a member twice"
    assert package.__doc__, f"{name} has no docstring saying what it owns"
    missing = [member for member in exported if not hasattr(package, member)]
    assert not missing, f"{name}.__all__ names members that do not exist: {missing}"
    public = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType) and value is not __future__.annotations
    }
    unlisted = sorted(public - set(exported))
    assert not unlisted, f"public members of {name} missing from its __all__ (export them, or import them under a private name): {unlisted}"
