"""moa — hybrid LLM + small-language-model agent systems.

A planner turns a task into a DAG of subtasks; small local models run the subtasks in parallel
as specialised agents; outputs are schema-validated; every model call goes through one door that
enforces budgets and approvals and accounts tokens, latency, cost and tier.

The layers, bottom up (each imports only those below it): foundations (:mod:`moa.errors`,
:mod:`moa.settings`, :mod:`moa.usage`, :mod:`moa.logs`, :mod:`moa.files`) → :mod:`moa.models` →
:mod:`moa.memory` → :mod:`moa.routing` → :mod:`moa.learning` → :mod:`moa.agent` →
:mod:`moa.workflow` → :mod:`moa.kit` → built-ins (:mod:`moa.agents`, :mod:`moa.graphs`) →
:mod:`moa.eval` → :mod:`moa.api` → :mod:`moa.cli`. See docs/architecture.md.
"""

from moa.agent.base import Agent, FunctionAgent
from moa.agent.confidence import choice_confidence
from moa.agent.context import Event, RunContext
from moa.agent.model import ModelAgent
from moa.agent.results import AgentRun, ToolCallRecord
from moa.agent.structured import generate_structured
from moa.agent.tools import Tool, agent_tool, as_langchain_tool, memory_search, run_tool_loop, tool
from moa.api import RunResult, apending, aresume, arun, pending, resume, run
from moa.errors import (
    ApprovalDenied,
    BudgetExceeded,
    ConfigError,
    ErrorCode,
    ErrorInfo,
    InvalidOutput,
    InvalidPlan,
    MoaError,
    ModelFailed,
    ModelUnavailable,
    NotFound,
    RunError,
    ToolRefused,
    UserError,
)
from moa.models.base import Capabilities, GenerateRequest, Generation, Message, ModelBackend, TokenLogprob, ToolCall, ToolSpec
from moa.models.registry import Models, create_backend
from moa.routing.approvals import Approval
from moa.settings import Settings, load_settings
from moa.usage import Usage, UsageSummary, summarize
from moa.workflow.plan import Plan, Subtask
from moa.workflow.results import Handoff
from moa.workflow.stream import stream

__version__ = "0.1.0"

__all__ = [
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
]
