"""Build hook: put the built-in agents/ and graphs/ into regular wheels as moa/agents, moa/graphs."""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":  # editable installs find them through moa/_builtins.py
            return
        for folder in ("agents", "graphs"):
            build_data["force_include"][folder] = f"moa/{folder}"
