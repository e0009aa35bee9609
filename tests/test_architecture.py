"""The architecture stays layered: no import circles inside ``moa``, no import from a lower layer
up to a higher one, built-in agents and graphs use only what an outside plugin can use, and the
runtime dependencies in pyproject.toml are exactly the distributions ``moa/`` imports.

Imports are read from the source (AST), not by importing: every ``import`` counts, including lazy
ones inside functions; only those under ``if TYPE_CHECKING:`` do not. Importing ``a.b.c`` also
runs the ``__init__`` of ``a`` and ``a.b``; those implicit parent imports are not counted (every
module would otherwise depend on ``moa/__init__``), the named module is.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

import moa

PACKAGE_DIR = Path(moa.__file__).parent

# The layers, bottom up. A module may import only from its own layer or lower ones. A module
# belongs to the longest entry that is its name or a package above it.
LAYERS: dict[str, int] = {
    # 0. foundations
    "moa.errors": 0,
    "moa.logs": 0,
    "moa.files": 0,
    "moa.settings": 0,
    "moa.usage": 0,
    # 1. backends, cache, embeddings
    "moa.models": 1,
    # 2.
    "moa.memory": 2,
    # 3. policy, budget, approvals
    "moa.routing": 3,
    # 4. example store, specialists, calibration, labelled data
    "moa.learning": 4,
    # 5. results, context, base/model agents, confidence, cascade, structured output, tools, learn
    "moa.agent": 5,
    # 6. plan, planner, nodes, subtask, scheduler, driver, durable, run index, catalog, graph files, report, view
    "moa.workflow": 6,
    # 7. the public kit for agent and graph authors
    "moa.kit": 7,
    # 8. built-ins
    "moa.agents": 8,
    "moa.graphs": 8,
    # 9.
    "moa.eval": 9,
    # 10. the public API and test kit
    "moa.api": 10,
    "moa.testing": 10,
    "moa": 10,
    # 11. entry points
    "moa.cli": 11,
    "moa.__main__": 11,
    "moa.server": 11,
}

# Imports up the layers that exist and are being removed: (importer, imported) -> why. The layer
# test fails on any other, and on an entry here that is gone (delete it then).
KNOWN_UPWARD_IMPORTS: dict[tuple[str, str], str] = {}

# What a built-in agent or graph may import from moa (anything else from moa is an internal): the
# kit and the foundations an outside plugin may use too.
BUILTIN_ALLOWED = ("moa.kit", "moa.errors", "moa.logs", "moa.settings", "moa.usage")


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (both moa modules), or ``names`` from it, at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = f"{', '.join(self.names)} from {self.target}" if self.names else self.target
        return f"{self.source} imports {what} ({self.path}:{self.line})"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The moa module ``name`` is, or is an attribute of; None outside moa."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` (their imports do not run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _imports_of(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    where = str(path.relative_to(PACKAGE_DIR.parent))
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: dict[str, list[str]] = {}  # imported module -> names imported from it
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.setdefault(alias.name, [])
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # ``from a import b``: the module a.b when b is one, else the name b of module a.
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    targets.setdefault(f"{base}.{alias.name}", [])
                else:
                    targets.setdefault(base, []).append(alias.name)
        for name, imported in targets.items():
            target = _resolve(name)
            if target is not None and target != module:
                yield Import(module, target, where, node.lineno, tuple(imported))


def _all_imports() -> list[Import]:
    return [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


IMPORTS = _all_imports()


def _layer(module: str) -> tuple[str, int] | None:
    """The table entry ``module`` falls under and its layer."""
    name = module
    while name:
        if name in LAYERS:
            return name, LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_every_module_has_a_layer() -> None:
    missing = sorted(module for module in MODULES if _layer(module) is None)
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {missing}"


def test_no_import_circles() -> None:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in IMPORTS:
        edges[imp.source].add(imp.target)
    circles = _circles(edges)
    lines = []
    for circle in circles:
        members = set(circle)
        lines.append("circle: " + " <-> ".join(circle))
        lines.extend(f"  {imp}" for imp in IMPORTS if imp.source in members and imp.target in members)
    assert not circles, "import circles inside moa:\n" + "\n".join(lines)


def test_no_import_from_a_lower_layer_up_to_a_higher_one() -> None:
    violations = []
    upward = set()
    for imp in IMPORTS:
        source, target = _layer(imp.source), _layer(imp.target)
        assert source is not None and target is not None, imp
        if target[1] > source[1]:
            upward.add((imp.source, imp.target))
            if (imp.source, imp.target) not in KNOWN_UPWARD_IMPORTS:
                violations.append(f"{imp}: {source[0]} is layer {source[1]}, {target[0]} is layer {target[1]}")
    assert not violations, "imports up the layers (a module may import only its own layer or lower ones):\n" + "\n".join(violations)
    gone = sorted(set(KNOWN_UPWARD_IMPORTS) - upward)
    assert not gone, f"these imports up the layers are gone; delete them from KNOWN_UPWARD_IMPORTS: {gone}"


def _builtin_modules() -> list[str]:
    return [m for m, path in MODULES.items() if path.parent.name in ("agents", "graphs") and path.parent.parent == PACKAGE_DIR and path.name != "__init__.py"]


def test_builtins_are_found() -> None:
    assert len(_builtin_modules()) >= 8, _builtin_modules()


def test_builtins_import_only_the_kit() -> None:
    builtins = set(_builtin_modules())
    internal = [
        imp
        for imp in IMPORTS
        if imp.source in builtins and not any(imp.target == allowed or imp.target.startswith(allowed + ".") for allowed in BUILTIN_ALLOWED)
    ]
    assert not internal, f"built-in agents and graphs may import from moa only {', '.join(BUILTIN_ALLOWED)}:\n" + "\n".join(map(str, internal))


# Distributions moa imports without declaring them, and why that is right.
UNDECLARED_IMPORTS: dict[str, str] = {
    "pydantic-core": "pydantic pins its own pydantic-core",
    "langgraph-checkpoint": "langgraph and langgraph-checkpoint-sqlite pin it",
    "httpx2": "optional: moa.models.transport handles its errors only when the openai client brought it",
}


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_owners() -> dict[str, str]:
    """Module name -> the installed distribution whose files hold it."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        owner = _dist_name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if file.suffix not in (".py", ".so", ".pyd") or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
                continue
            names = [*parts[:-1], parts[-1].split(".")[0]]
            if names[-1] == "__init__":
                names.pop()
            if names:
                owners.setdefault(".".join(names), owner)
    return owners


def _third_party_imports() -> dict[str, list[str]]:
    """Module ``moa/`` imports at run time (not only for type checking), outside moa and the
    standard library -> where."""
    found: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "moa" and top not in sys.stdlib_module_names:
                    found.setdefault(name, []).append(f"{module}:{node.lineno}")
    return found


def test_runtime_dependencies_are_what_moa_imports() -> None:
    project = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {_dist_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {_dist_name(Requirement(r).name) for extra in ("postgres", "plots", "mcp") for r in project["optional-dependencies"][extra]}
    owners = _module_owners()
    imported: dict[str, list[str]] = {}
    unknown = []
    for name, where in _third_party_imports().items():
        module = name
        while module and module not in owners:
            module = module.rpartition(".")[0]
        if not module:
            unknown.append(f"{name} ({', '.join(where)})")
        else:
            imported.setdefault(owners[module], []).extend(where)
    assert not unknown, f"moa imports modules no installed distribution holds: {unknown}"
    unused = sorted(runtime - set(imported))
    assert not unused, f"runtime dependencies moa/ never imports (move them to the test extra, or drop them): {unused}"
    undeclared = {d: w for d, w in imported.items() if d not in runtime | extras | set(UNDECLARED_IMPORTS)}
    assert not undeclared, f"moa/ imports distributions pyproject.toml does not declare: {undeclared}"
