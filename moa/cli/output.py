"""Console output shared by the CLI's command modules (all printing in moa happens in the CLI)."""

from __future__ import annotations

import json
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from moa.errors import MoaError

out = Console()
err = Console(stderr=True)


def fail(exc: MoaError, as_json: bool) -> NoReturn:
    """Report ``exc`` (on stderr, and as JSON on stdout with ``--json``) and exit with its code."""
    if as_json:
        out.print_json(json.dumps({"status": "error", "error": exc.to_dict()}))
    err.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc.message}')}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)
