"""moa — hybrid LLM + small-language-model agent systems.

A planner turns a task into a DAG of subtasks; small local models run the subtasks in parallel
as specialised agents; outputs are schema-validated; every model call is accounted.
"""

from moa.agent import Agent, AgentRun, FunctionAgent, ModelAgent, ToolCallRecord
from moa.confidence import choice_confidence
from moa.context import Event, RunContext
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
from moa.structured import generate_structured
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

from moa.api import RunResult, apending, aresume, arun, pending, resume, run  # noqa: E402
from moa.approvals import Approval, Handoff  # noqa: E402
from moa.plan import Plan, Subtask  # noqa: E402
from moa.tools import Tool, agent_tool, as_langchain_tool, memory_search, run_tool_loop, tool  # noqa: E402

__all__ += ["Plan", "RunResult", "Subtask", "Tool", "agent_tool", "aresume", "arun", "resume", "as_langchain_tool", "memory_search", "run", "run_tool_loop", "tool"]
__all__ += ["Approval", "Handoff", "apending", "pending"]
