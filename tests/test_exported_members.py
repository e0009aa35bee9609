"""The public API is deliberate: adding or removing a name must change this test."""

import moa

EXPECTED = {
    "Agent", "AgentRun", "Approval", "Handoff", "apending", "pending", "Capabilities", "ErrorCode", "Event", "FunctionAgent", "GenerateRequest", "Generation",
    "Message", "MoaError", "ModelAgent", "ModelBackend", "Models", "Plan", "RunContext", "RunError", "RunResult",
    "Settings", "Subtask", "TokenLogprob", "Tool", "ToolCall", "ToolCallRecord", "ToolSpec", "Usage", "UsageSummary",
    "UserError", "__version__", "agent_tool", "aresume", "arun", "as_langchain_tool", "choice_confidence", "create_backend",
    "generate_structured", "load_settings", "memory_search", "resume", "run", "run_tool_loop", "summarize", "tool",
}  # fmt: skip


def test_exported_members() -> None:
    assert set(moa.__all__) == EXPECTED
    for name in moa.__all__:
        assert hasattr(moa, name), name
