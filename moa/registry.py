"""Finds agents and graphs: the built-ins (``moa.agents``, ``moa.graphs``) and the user's own.

Nothing is imported until asked for; a built-in module exposes ``agent`` (an :class:`Agent`) or
``build`` (a graph factory).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType

from moa.agent import Agent
from moa.errors import ErrorCode, UserError
from moa.graphspec import GraphFile, is_graph_file


@cache  # a package's modules do not change while moa runs (listing them costs ~0.1 ms a run)
def _modules(package: str) -> tuple[str, ...]:
    pkg = importlib.import_module(package)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")))


def builtin_agents() -> dict[str, Agent]:  # type: ignore[type-arg]
    """The built-in agents by name."""
    found: dict[str, Agent] = {}  # type: ignore[type-arg]
    for name in _modules("moa.agents"):
        module = importlib.import_module(f"moa.agents.{name}")
        agent = getattr(module, "agent", None)
        if isinstance(agent, Agent):
            found[agent.name] = agent
    return found


def agent_catalog(extra: Iterable[Agent] | Mapping[str, Agent] | None = None, *, builtins: bool = True) -> dict[str, Agent]:  # type: ignore[type-arg]
    """Built-in agents plus the user's (a user agent replaces a built-in of the same name)."""
    catalog = builtin_agents() if builtins else {}
    values = extra.values() if isinstance(extra, Mapping) else (extra or [])
    for agent in values:
        if not isinstance(agent, Agent):
            raise UserError(ErrorCode.UNKNOWN_AGENT, f"{agent!r} is not a moa Agent; subclass moa.ModelAgent or moa.FunctionAgent")
        catalog[agent.name] = agent
    return catalog


def get_agent(catalog: Mapping[str, Agent], name: str) -> Agent:  # type: ignore[type-arg]
    try:
        return catalog[name]
    except KeyError:
        raise UserError(
            ErrorCode.UNKNOWN_AGENT, f"unknown agent {name!r}; known agents: {', '.join(sorted(catalog))} (see `moa agents`)"
        ) from None


def builtin_graphs() -> dict[str, ModuleType]:
    """The built-in graph modules by name (each has ``build(...)`` and a docstring)."""
    return {name: importlib.import_module(f"moa.graphs.{name}") for name in _modules("moa.graphs")}


def get_graph(name: str) -> ModuleType | GraphFile:
    """A built-in graph module by name, or a YAML graph file by path (``*.yaml``)."""
    if is_graph_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(ErrorCode.UNKNOWN_GRAPH, f"graph file {name} not found; give a path to a YAML graph (see docs/declarative-graphs.md)")
        return GraphFile(path)
    graphs = builtin_graphs()
    if name not in graphs:
        raise UserError(ErrorCode.UNKNOWN_GRAPH, f"unknown graph {name!r}; known graphs: {', '.join(sorted(graphs))} (see `moa graphs`)")
    return graphs[name]
