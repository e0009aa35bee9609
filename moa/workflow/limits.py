"""Reading documents that come from outside moa's code — YAML graph files and JSON plans — within limits.

A graph file or a plan is small (a few kB, nested five or six levels). These limits keep a hostile
or mistaken one from taking the process down before validation can say what is wrong:

* **size**: at most ``max_plan_bytes`` (default 1 MB); a file is read no further than that;
* **nesting**: at most ``max_plan_depth`` levels of mappings and lists (default 32), checked while
  YAML is composed and before JSON is parsed, so deep nesting never reaches Python's recursion limit;
* **YAML aliases**: anchors and aliases (``&a`` / ``*a``) are allowed, but the document is measured
  as if every alias were written out: more than ``max_plan_nodes`` values (default 100,000) or more
  than ``max_plan_depth`` levels once expanded is refused, and so is an alias to a node that
  contains it. A "billion laughs" file (471 bytes that expand to 10⁹ values) is refused after
  reading its ~100 nodes, instead of exhausting memory.

Each refusal is a :class:`~moa.errors.UserError` ``invalid_input`` (exit 2) that names the file,
the limit and the setting that raises it. A file that cannot be read or is not UTF-8 is
``input_file``. Syntax errors stay with the callers (``invalid_plan`` with the line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moa.errors import ErrorCode, UserError
from moa.settings import Settings

__all__ = ["DEFAULT_LIMITS", "DocumentLimits", "load_json", "load_yaml", "read_document"]


@dataclass(frozen=True)
class DocumentLimits:
    """The limits a graph file or a plan must stay within (see the module docstring)."""

    max_bytes: int = 1_000_000
    max_depth: int = 32
    max_nodes: int = 100_000

    @classmethod
    def of(cls, settings: Settings) -> DocumentLimits:
        """The limits ``settings`` set (``max_plan_bytes``, ``max_plan_depth``, ``max_plan_nodes``)."""
        return cls(max_bytes=settings.max_plan_bytes, max_depth=settings.max_plan_depth, max_nodes=settings.max_plan_nodes)


DEFAULT_LIMITS = DocumentLimits()
"""The default settings' limits (for callers without settings, e.g. ``load_graph(path)``)."""


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _too_large(what: str, size: int | None, limits: DocumentLimits) -> UserError:
    shown = _size(size) if size is not None else f"more than {_size(limits.max_bytes)}"
    return UserError(
        ErrorCode.INVALID_INPUT,
        f"{what} is {shown}, over the limit of {_size(limits.max_bytes)}; graph files and plans are a few kB, so check that "
        "this is the right file (or raise max_plan_bytes in moa.toml / MOA_MAX_PLAN_BYTES)",
        details={"limit": "max_plan_bytes", "max_bytes": limits.max_bytes},
    )


def _too_deep(what: str, limits: DocumentLimits, line: int | None = None) -> UserError:
    at = f" (line {line})" if line is not None else ""
    return UserError(
        ErrorCode.INVALID_INPUT,
        f"{what} nests mappings and lists more than {limits.max_depth} levels deep{at}; graph files and plans need about six, "
        "so flatten it (or raise max_plan_depth in moa.toml / MOA_MAX_PLAN_DEPTH)",
        details={"limit": "max_plan_depth", "max_depth": limits.max_depth, **({"line": line} if line is not None else {})},
    )


def read_document(path: Path, what: str, limits: DocumentLimits) -> str:
    """The UTF-8 text of ``path`` (``what`` names it in errors, e.g. ``the graph file g.yaml``), read
    no further than ``limits.max_bytes``."""
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
            if len(data) > limits.max_bytes:
                size = path.stat().st_size if path.is_file() else None
                raise _too_large(what, size if size and size > limits.max_bytes else None, limits)
    except OSError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"cannot read {what}: {exc.strerror or exc}; check the path") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            ErrorCode.INPUT_FILE, f"cannot read {what}: it is not UTF-8 text (byte {exc.start}); graph files and plans are UTF-8 YAML or JSON"
        ) from exc


def _check_size(text: str, what: str, limits: DocumentLimits) -> None:
    if len(text) > limits.max_bytes or len(text.encode("utf-8")) > limits.max_bytes:
        raise _too_large(what, len(text.encode("utf-8")), limits)


# -- JSON -------------------------------------------------------------------------------------


def _json_too_deep(text: str, max_depth: int) -> bool:
    """Whether ``text`` opens more than ``max_depth`` nested objects or arrays (strings skipped)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def load_json(text: str, what: str, limits: DocumentLimits) -> Any:
    """Parse ``text`` as JSON within ``limits``; ``json.JSONDecodeError`` for the caller to word."""
    _check_size(text, what, limits)
    if _json_too_deep(text, limits.max_depth):
        raise _too_deep(what, limits)
    return json.loads(text)


# -- YAML -------------------------------------------------------------------------------------


class _DepthLoader(yaml.SafeLoader):
    """A safe loader that refuses nesting deeper than ``max_depth`` while it composes."""

    def __init__(self, text: str, what: str, limits: DocumentLimits) -> None:
        super().__init__(text)
        self.what, self.limits, self.depth = what, limits, 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        if self.check_event(yaml.ScalarEvent, yaml.AliasEvent):  # no level of its own
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise _too_deep(self.what, self.limits, self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, what: str, limits: DocumentLimits) -> None:
    """Refuse a document that, with every alias written out, has more than ``max_nodes`` values
    or more than ``max_depth`` levels, or that contains itself. Each distinct node is measured
    once, so this takes time in proportion to the file, not to its expansion."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels of mappings and lists) once written out
    open_: set[int] = set()

    def measure(node: yaml.Node, above: int) -> tuple[int, int]:
        """``node``'s values and levels written out; ``above``: the levels of mappings and lists around it."""
        key = id(node)
        if key in open_:
            raise UserError(
                ErrorCode.INVALID_INPUT,
                f"{what} has an alias inside the node it refers to (line {node.start_mark.line + 1}), which never ends; remove that alias",
                details={"line": node.start_mark.line + 1},
            )
        if key not in measured:
            children = _children(node)
            if children and above + 1 > limits.max_depth:
                raise _too_deep(what, limits, node.start_mark.line + 1)
            open_.add(key)
            values, levels = 1, 0 if isinstance(node, yaml.ScalarNode) else 1
            for child in children:
                child_values, child_levels = measure(child, above + 1)
                values += child_values
                levels = max(levels, child_levels + 1)
                if values > limits.max_nodes:
                    raise UserError(
                        ErrorCode.INVALID_INPUT,
                        f"{what} expands to more than {limits.max_nodes:,} values through YAML aliases (&anchor / *alias); "
                        "write the values out or use fewer aliases (or raise max_plan_nodes in moa.toml / MOA_MAX_PLAN_NODES)",
                        details={"limit": "max_plan_nodes", "max_nodes": limits.max_nodes},
                    )
            open_.discard(key)
            measured[key] = (values, levels)
        values, levels = measured[key]
        if above + levels > limits.max_depth:
            raise _too_deep(what, limits, node.start_mark.line + 1)
        return values, levels

    measure(root, 0)


def load_yaml(text: str, what: str, limits: DocumentLimits) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document (safe tags only) within ``limits``: its Python value and its
    composed node tree (for line numbers). ``yaml.YAMLError`` for the caller to word."""
    _check_size(text, what, limits)
    loader = _DepthLoader(text, what, limits)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root, what, limits)
        try:
            return loader.construct_document(root), root
        except ValueError as exc:  # e.g. an integer longer than Python converts (4,300 digits)
            raise UserError(ErrorCode.INVALID_INPUT, f"{what} has a value moa cannot read: {exc}") from exc
    finally:
        loader.dispose()
