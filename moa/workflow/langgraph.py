"""The one place that knows LangGraph's internals (channel and config key names).

Everything else in moa uses LangGraph's public API; when LangGraph renames an internal, this
module is the only one to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.config import get_config
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.types import Interrupt

RETURN_CHANNEL = "__return__"
"""The channel LangGraph saves a finished task's return value under (a pending write)."""
INTERRUPT_KEY = "__interrupt__"
"""The key of the open interrupts in the state ``ainvoke`` returns."""


def checkpointed() -> bool:
    """Whether the graph node calling this runs with a checkpointer."""
    return get_config()["configurable"].get(CONFIG_KEY_CHECKPOINTER) is not None


def interrupts_of(state: Mapping[str, Any]) -> list[Interrupt]:
    """The open interrupts in the state a paused ``ainvoke`` returned."""
    return list(state.get(INTERRUPT_KEY, []))
