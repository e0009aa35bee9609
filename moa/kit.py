"""The public kit for agent and graph authors: everything a custom agent or graph needs, and
nothing else. moa's own built-in agents (:mod:`moa.agents`) and graphs (:mod:`moa.graphs`) are
written with this kit alone, and registered through the same entry points as third-party ones::

    # pyproject.toml of your package
    [project.entry-points."moa.agents"]
    tickets = "my_pkg.agents:tickets"        # an Agent instance
    [project.entry-points."moa.graphs"]
    escalate = "my_pkg.graphs.escalate"      # a module with build(...) and a docstring

Model calls go through :meth:`RunContext.call` (or :func:`generate_structured`), never a backend
directly: that is where budgets, approvals, accounting and events are enforced. Open a
``ctx.scope()`` around the calls of a graph node to get their usage for the node's ``usage`` update.
"""

from moa.agent.base import Agent, FunctionAgent
from moa.agent.calls import CallScope
from moa.agent.confidence import choice_confidence
from moa.agent.context import Event, RunContext
from moa.agent.model import ModelAgent
from moa.agent.results import AgentRun, Attempt, Escalation, ToolCallRecord
from moa.agent.structured import Structured, generate_structured, output_token_limit, schema_of
from moa.agent.tools import Tool, agent_tool, memory_search, tool
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
from moa.learning.dates import DATE, find_dates
from moa.learning.store import Example
from moa.learning.tagger import Tagged, Tagger, types_key
from moa.memory import Passage
from moa.models.base import Capabilities, GenerateRequest, Generation, Message, ModelBackend, TokenLogprob, ToolCall, ToolSpec
from moa.routing.approvals import AwaitingApproval
from moa.settings import Settings, Tier
from moa.usage import Usage
from moa.workflow.catalog import builtin_agents, builtin_graphs
from moa.workflow.nodes import compile_plan_execute, make_plan_node, plan_node, synthesize
from moa.workflow.plan import INPUT, Plan, Subtask
from moa.workflow.planner import PlannerInfo, given_plan
from moa.workflow.report import to_markdown
from moa.workflow.results import ItemResult, SubtaskResult
from moa.workflow.scheduler import execute
from moa.workflow.state import RunDeps, RunGraph, RunState

__all__ = [
    "DATE",
    "INPUT",
    "Agent",
    "AgentRun",
    "ApprovalDenied",
    "Attempt",
    "AwaitingApproval",
    "BudgetExceeded",
    "CallScope",
    "Capabilities",
    "ConfigError",
    "ErrorCode",
    "ErrorInfo",
    "Escalation",
    "Event",
    "Example",
    "FunctionAgent",
    "GenerateRequest",
    "Generation",
    "InvalidOutput",
    "InvalidPlan",
    "ItemResult",
    "Message",
    "ModelAgent",
    "ModelBackend",
    "ModelFailed",
    "ModelUnavailable",
    "MoaError",
    "NotFound",
    "Passage",
    "Plan",
    "PlannerInfo",
    "RunContext",
    "RunDeps",
    "RunError",
    "RunGraph",
    "RunState",
    "Settings",
    "Structured",
    "Subtask",
    "SubtaskResult",
    "Tagged",
    "Tagger",
    "Tier",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallRecord",
    "ToolRefused",
    "ToolSpec",
    "Usage",
    "UserError",
    "agent_tool",
    "builtin_agents",
    "builtin_graphs",
    "choice_confidence",
    "compile_plan_execute",
    "execute",
    "find_dates",
    "generate_structured",
    "given_plan",
    "make_plan_node",
    "memory_search",
    "output_token_limit",
    "plan_node",
    "schema_of",
    "synthesize",
    "to_markdown",
    "tool",
    "types_key",
]
