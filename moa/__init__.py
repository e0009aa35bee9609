"""moa — hybrid LLM + small-language-model agent systems.

A planner turns a task into a DAG of subtasks; small local models run the subtasks in parallel
as specialised agents; outputs are schema-validated; every model call is accounted.
"""

from moa.agent.base import Agent, FunctionAgent
from moa.agent.results import AgentRun, ToolCallRecord
from moa.agent.model import ModelAgent
from moa.agent.confidence import choice_confidence
from moa.agent.context import Event, RunContext
from moa.errors import ErrorCode, MoaError, RunError, UserError
from moa.models.base import (
    Capabilities,
    Generation,
    GenerateRequest,
    Message,
    ModelBackend,
    TokenLogprob,
    ToolCall,
    ToolSpec,
)
from moa.models.registry import Models, create_backend
from moa.settings import Settings, load_settings
from moa.agent.structured import generate_structured
from moa.usage import Usage, UsageSummary, summarize

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentRun",
    "Capabilities",
    "ErrorCode",
    "Event",
    "FunctionAgent",
    "GenerateRequest",
    "Generation",
    "Message",
    "MoaError",
    "ModelAgent",
    "ModelBackend",
    "Models",
    "RunContext",
    "RunError",
    "Settings",
    "TokenLogprob",
    "ToolCall",
    "ToolCallRecord",
    "ToolSpec",
    "Usage",
    "UsageSummary",
    "UserError",
    "__version__",
    "choice_confidence",
    "create_backend",
    "generate_structured",
    "load_settings",
    "summarize",
]

from moa.workflow.results import RunResult
from moa.workflow.driver import apending, aresume, arun
from moa.api import pending, resume, run
from moa.routing.approvals import Approval
from moa.workflow.results import Handoff
from moa.workflow.plan import Plan, Subtask  # noqa: E402
from moa.agent.tools import Tool, agent_tool, as_langchain_tool, memory_search, run_tool_loop, tool  # noqa: E402

__all__ += ["Plan", "RunResult", "Subtask", "Tool", "agent_tool", "aresume", "arun", "resume", "as_langchain_tool", "memory_search", "run", "run_tool_loop", "tool"]
__all__ += ["Approval", "Handoff", "apending", "pending"]
