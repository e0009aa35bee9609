"""Where the built-in agents and graphs live.

Their sources are the top-level ``agents/`` and ``graphs/`` folders of the repository, written
with moa's public API like any user's code. A wheel ships them as ``moa/agents`` and
``moa/graphs`` (hatch ``force-include``); in a source checkout or editable install, the package
``moa.agents`` / ``moa.graphs`` extends its ``__path__`` to the repository folder. They are never
importable as top-level ``agents`` / ``graphs`` (the OpenAI Agents SDK owns ``agents``).
"""

from __future__ import annotations

from pathlib import Path


def extend_path(path: list[str], folder: str) -> list[str]:
    """Add the repository's ``folder`` to a package ``__path__`` when running from a checkout."""
    here = Path(__file__).resolve().parent
    source = here.parent / folder
    if (here.parent / "pyproject.toml").is_file() and source.is_dir() and str(source) not in path:
        path.append(str(source))
    return path
