"""Declarative graphs: a YAML file that builds the same compiled graph as its Python twin.

::

    name: review-triage
    graph: plan_execute          # plan_execute (default) | triage | mixture | rag
    params: {}                   # the builder's arguments (triage: criterion, mode, pass_unsure; ...)
    nodes:                       # a fixed DAG instead of planning (plan_execute, triage)
      - id: f
        agent: filtering
        options: {criterion: spam}
        cascade: [specialist, slm]
        threshold: 0.8
      - id: s
        agent: sentiment
        items: f                 # the items f kept
    edges: ["f -> s"]            # or depends_on on each node

``moa.workflow.catalog.load_graph(path)`` validates the file with pydantic and reports every problem with its line
number: a missing or unknown field, a wrong type, an unknown agent, an edge to an unknown node,
a cycle. ``moa run --graph path/to/graph.yaml`` runs it. The file is read within limits of size,
nesting and alias expansion (:mod:`moa.workflow.limits`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa.errors import ErrorCode, UserError
from moa.routing.policy import PLAN_STEPS, foreign_step_problem
from moa.workflow.limits import DEFAULT_LIMITS, DocumentLimits, load_yaml, read_document
from moa.workflow.plan import INPUT, Plan, Subtask

GraphKind = str
"""A registered graph's name (``moa graphs``): a built-in or a plugin's; checked when the file is built."""
SUFFIXES = (".yaml", ".yml")


class NodeSpec(BaseModel):
    """One node: an agent with its options, inputs and escalation policy."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_\-]+$")
    agent: str
    options: dict[str, Any] = Field(default_factory=dict)
    instruction: str = ""
    items: str = INPUT
    depends_on: list[str] = Field(default_factory=list)
    cascade: list[str] | None = None
    threshold: float | None = Field(None, ge=0, le=1)


class GraphSpec(BaseModel):
    """A whole graph file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str = ""
    graph: GraphKind = "plan_execute"
    params: dict[str, Any] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(default_factory=list)
    edges: list[str] = Field(default_factory=list)
    """``"a -> b"``: b depends on a."""


def is_graph_file(name: str) -> bool:
    return name.endswith(SUFFIXES)


def _lines(node: yaml.Node, path: tuple[Any, ...] = (), into: dict[tuple[Any, ...], int] | None = None) -> dict[tuple[Any, ...], int]:
    """Line (1-based) of every value in the YAML tree, by its path of keys and indexes."""
    lines = {} if into is None else into
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _lines(value, (*path, index), lines)
    return lines


def _line_of(lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


class _Problems:
    def __init__(self, path: Path, lines: Mapping[tuple[Any, ...], int]) -> None:
        self.path, self.lines = path, lines
        self.found: list[tuple[int, str]] = []

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        self.found.append((_line_of(self.lines, loc), message))

    def raise_if_any(self) -> None:
        if self.found:
            listed = "; ".join(f"line {line}: {message}" for line, message in sorted(self.found)[:8])
            more = f" (and {len(self.found) - 8} more)" if len(self.found) > 8 else ""
            raise UserError(ErrorCode.INVALID_PLAN, f"invalid graph file {self.path.name}: {listed}{more}; see docs/declarative-graphs.md")


def read_spec(path: Path, limits: DocumentLimits = DEFAULT_LIMITS) -> tuple[GraphSpec, dict[tuple[Any, ...], int]]:
    """Parse and validate ``path`` (structure and types only), with the line of every value.

    The file must stay within ``limits`` (size, nesting, alias expansion: :mod:`moa.workflow.limits`)."""
    text = read_document(path, f"the graph file {path}", limits)
    try:
        data, root = load_yaml(text, f"the graph file {path.name}", limits)
    except yaml.reader.ReaderError as exc:  # a control character: often a binary file
        line = text.count("\n", 0, exc.position) + 1
        raise UserError(
            ErrorCode.INVALID_PLAN, f"invalid graph file {path.name}: line {line}: character #x{exc.character:04x} is not allowed in YAML; is it a text file?"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise UserError(ErrorCode.INVALID_PLAN, f"invalid graph file {path.name}: {where}{getattr(exc, 'problem', None) or exc}") from exc
    lines = _lines(root) if root is not None else {}
    problems = _Problems(path, lines)
    if not isinstance(data, dict):
        problems.add((), "the file must be a mapping with at least `nodes` or `graph`")
        problems.raise_if_any()
    try:
        return GraphSpec.model_validate(data), lines
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            problems.add(tuple(error["loc"]), f"{field}: {error['msg'].lower()}")
        problems.raise_if_any()
        raise  # unreachable


def _named_models(spec: GraphSpec) -> list[tuple[tuple[Any, ...], str, str]]:
    """``(location, where, spec)`` of every model a graph file names: its nodes' cascades and the
    model params of the mixture (``proposers[].model``, ``aggregator``) and rag (``model``) graphs."""
    found: list[tuple[tuple[Any, ...], str, str]] = []
    for index, node in enumerate(spec.nodes):
        found += [(("nodes", index, "cascade"), f"the cascade of node {node.id!r}", step) for step in dict.fromkeys(node.cascade or ())]
    params = spec.params
    if spec.graph == "mixture":
        proposers = params.get("proposers")
        for index, proposer in enumerate(proposers if isinstance(proposers, list) else []):
            if isinstance(proposer, dict) and isinstance(proposer.get("model"), str):
                found.append((("params", "proposers", index, "model"), f"proposer {index + 1} of the mixture", proposer["model"]))
        if isinstance(params.get("aggregator"), str):
            found.append((("params", "aggregator"), "the mixture's aggregator", params["aggregator"]))
    if spec.graph == "rag" and isinstance(params.get("model"), str):
        found.append((("params", "model"), "the rag graph's model", params["model"]))
    return found


def spec_plan(
    spec: GraphSpec, lines: Mapping[tuple[Any, ...], int], path: Path, agents: Mapping[str, Any], models: Collection[str] = PLAN_STEPS
) -> Plan | None:
    """The fixed plan of ``spec`` (``None`` without nodes), checked against ``agents``; the file may
    name only ``models`` (in cascades and in the mixture's and rag's model params)."""
    problems = _Problems(path, lines)
    for loc, where, named in _named_models(spec):
        if named.strip() not in models:
            problems.add(loc, foreign_step_problem(where, named))
    if not spec.nodes:
        if spec.edges:
            problems.add(("edges",), "edges need nodes")
        problems.raise_if_any()
        return None
    if spec.graph in ("mixture", "rag"):
        problems.add(("nodes",), f"the {spec.graph} graph has fixed nodes; configure it with params instead")
    ids = [n.id for n in spec.nodes]
    depends = {n.id: list(n.depends_on) for n in spec.nodes}
    for index, node in enumerate(spec.nodes):
        if ids.count(node.id) > 1:
            problems.add(("nodes", index, "id"), f"node id {node.id!r} is used twice")
        if node.agent not in agents:
            problems.add(("nodes", index, "agent"), f"unknown agent {node.agent!r}; known agents: {', '.join(sorted(agents))}")
        for dep in node.depends_on:
            if dep not in ids:
                problems.add(("nodes", index, "depends_on"), f"node {node.id!r} depends on unknown node {dep!r}")
        if node.items != INPUT and node.items not in ids:
            problems.add(("nodes", index, "items"), f"node {node.id!r} takes items from unknown node {node.items!r}")
    for index, edge in enumerate(spec.edges):
        source, arrow, target = (part.strip() for part in edge.partition("->"))
        if not arrow or source not in ids or target not in ids:
            problems.add(("edges", index), f"bad edge {edge!r}: write 'a -> b' with two node ids")
            continue
        depends[target].append(source)
    for index, node in enumerate(spec.nodes):  # a node taking another's items depends on it
        if node.items != INPUT and node.items in ids and node.items not in depends[node.id]:
            depends[node.id].append(node.items)
    problems.raise_if_any()
    subtasks = [
        Subtask(**node.model_dump(exclude={"depends_on"}), depends_on=sorted(set(depends[node.id]), key=ids.index)) for node in spec.nodes
    ]
    plan = Plan(subtasks=subtasks, rationale=spec.description or f"declared in {path.name}")
    try:
        plan.order()
    except UserError as exc:  # a cycle: point at the first node in it
        first = next((i for i, n in enumerate(spec.nodes) if n.id in exc.message), 0)
        problems.add(("nodes", first, "id"), exc.message)
        problems.raise_if_any()
    return plan
