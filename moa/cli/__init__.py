"""The ``moa`` command line (typer + rich): the only place moa prints or configures logging.

``main`` is the console script; ``app`` the typer application (tested with its runner).
"""

from moa.cli.main import app, main

__all__ = ["app", "main"]
