"""Finds agents and graphs: the built-ins and third-party ones, all through entry points.

An installed distribution registers agents under the entry-point group ``moa.agents`` (each
entry names an :class:`~moa.agent.base.Agent` instance) and graphs under ``moa.graphs`` (each
names a module with ``build(...)`` and a docstring). moa's own built-ins are registered the same
way in its ``pyproject.toml``. Nothing is imported until asked for. A YAML graph file is found by
its path (:mod:`moa.workflow.graphfile` parses it; :func:`load_graph` builds it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from langgraph.pregel import Pregel

from moa.agent.base import Agent
from moa.errors import ErrorCode, UserError
from moa.logs import get_logger
from moa.routing.policy import PLAN_STEPS
from moa.workflow.graphfile import _Problems, is_graph_file, read_spec, spec_plan
from moa.workflow.limits import DEFAULT_LIMITS, DocumentLimits

log = get_logger(__name__)

AGENTS_GROUP = "moa.agents"
GRAPHS_GROUP = "moa.graphs"


@cache  # installed distributions do not change while moa runs
def _entries(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)  # the first distribution on the path wins, as for imports
    return found


def _load(ep: EntryPoint, group: str) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a broken plugin must not take the built-ins down with it
        log.warning("plugin_not_loaded", group=group, name=ep.name, value=ep.value, error=f"{type(exc).__name__}: {exc}")
        return None


def builtin_agents() -> dict[str, Agent]:  # type: ignore[type-arg]
    """The registered agents (built-in and installed plugins) by name."""
    found: dict[str, Agent] = {}  # type: ignore[type-arg]
    sources: dict[str, str] = {}
    for name, ep in sorted(_entries(AGENTS_GROUP).items(), key=lambda e: (not e[1].value.startswith("moa."), e[0])):  # moa's own first
        agent = _load(ep, AGENTS_GROUP)
        if not isinstance(agent, Agent):
            if agent is not None:
                log.warning("plugin_not_an_agent", name=name, value=ep.value)
            continue
        if agent.name in found:  # two entry points for one agent name: the first (moa's own, then by entry name) stays
            log.warning("plugin_agent_name_taken", name=agent.name, kept=sources[agent.name], skipped=ep.value)
            continue
        found[agent.name], sources[agent.name] = agent, ep.value
    return found


def agent_catalog(extra: Iterable[Agent] | Mapping[str, Agent] | None = None, *, builtins: bool = True) -> dict[str, Agent]:  # type: ignore[type-arg]
    """Registered agents plus the user's (a user agent replaces a registered one of the same name)."""
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
    """The registered graph modules by name (each has ``build(...)`` and a docstring)."""
    found = {}
    for name, ep in sorted(_entries(GRAPHS_GROUP).items()):
        module = _load(ep, GRAPHS_GROUP)
        if module is not None and callable(getattr(module, "build", None)):
            found[name] = module
        elif module is not None:
            log.warning("plugin_not_a_graph", name=name, value=ep.value, reason="the module has no build() function")
    return found


def load_graph(
    path: Path, agents: Mapping[str, Any] | None = None, *, limits: DocumentLimits = DEFAULT_LIMITS, models: Collection[str] = PLAN_STEPS
) -> Pregel:
    """Build the compiled graph a YAML file declares (see :mod:`moa.workflow.graphfile`), read within
    ``limits``; its nodes' cascades and its params may name only ``models`` (pass
    :func:`moa.routing.policy.plan_models` of the run's settings; default: specialist, slm, llm)."""
    spec, lines = read_spec(path, limits)
    plan = spec_plan(spec, lines, path, agents if agents is not None else agent_catalog(), models)
    graphs = builtin_graphs()
    if spec.graph not in graphs:
        problems = _Problems(path, lines)
        problems.add(("graph",), f"unknown graph {spec.graph!r}; known graphs: {', '.join(sorted(graphs))}")
        problems.raise_if_any()
    params = dict(spec.params)
    if plan is not None:
        params["plan"] = plan
    try:
        compiled = graphs[spec.graph].build(**params)
    except (TypeError, ValueError) as exc:  # ValueError: pydantic's ValidationError of a builder's params
        problems = _Problems(path, lines)
        problems.add(("params",), f"bad params for the {spec.graph} graph: {exc}")
        problems.raise_if_any()
        raise
    return compiled.copy(update={"name": spec.name or path.stem})  # type: ignore[no-any-return]


class GraphFile:
    """A YAML graph as :func:`get_graph` returns it (``build()`` and a docstring)."""

    def __init__(self, path: Path, limits: DocumentLimits = DEFAULT_LIMITS, models: Collection[str] = PLAN_STEPS) -> None:
        self.path, self.limits, self.models = path, limits, models
        spec, _ = read_spec(path, limits)
        self.__doc__ = spec.description or f"{spec.graph} graph declared in {path}"

    def build(self, agents: Mapping[str, Any] | None = None) -> Pregel:
        return load_graph(self.path, agents, limits=self.limits, models=self.models)


def get_graph(name: str, limits: DocumentLimits = DEFAULT_LIMITS, models: Collection[str] = PLAN_STEPS) -> ModuleType | GraphFile:
    """A registered graph module by name, or a YAML graph file by path (``*.yaml``, read within
    ``limits``, naming only ``models``: see :func:`load_graph`)."""
    if is_graph_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(ErrorCode.UNKNOWN_GRAPH, f"graph file {name} not found; give a path to a YAML graph (see docs/declarative-graphs.md)")
        return GraphFile(path, limits, models)
    graphs = builtin_graphs()
    if name not in graphs:
        raise UserError(ErrorCode.UNKNOWN_GRAPH, f"unknown graph {name!r}; known graphs: {', '.join(sorted(graphs))} (see `moa graphs`)")
    return graphs[name]
