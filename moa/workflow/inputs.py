"""Checking a run's task and reading its input items (one per non-empty line of a text file).

An input file without items is an error; a run given no input at all runs on its task's text.
"""

from __future__ import annotations

from pathlib import Path

from moa.errors import ErrorCode, UserError
from moa.settings import Settings


def check_task(task: str, settings: Settings) -> str:
    task = task.strip() if isinstance(task, str) else ""
    if not task:
        raise UserError(ErrorCode.EMPTY_TASK, 'the task is empty; say what to do, e.g. moa run "filter out spam, then classify sentiment"')
    if len(task) > settings.max_task_chars:
        raise UserError(
            ErrorCode.TASK_TOO_LARGE,
            f"the task has {len(task)} characters, more than the limit of {settings.max_task_chars}; "
            "put the data in a file and pass it with --input, or raise MOA_MAX_TASK_CHARS",
        )
    return task


def read_items(path: Path, settings: Settings) -> list[str]:
    """Non-empty lines of a UTF-8 text file (``UserError`` ``INPUT_FILE`` when there are none)."""
    if not path.exists():
        raise UserError(ErrorCode.INPUT_FILE, f"input file {path} does not exist; check the path given to --input")
    if not path.is_file():
        raise UserError(ErrorCode.INPUT_FILE, f"input {path} is not a file; give a text file with one item per line")
    size = path.stat().st_size
    if size > settings.max_input_bytes:
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"input file {path} has {size} bytes, more than the limit of {settings.max_input_bytes}; split it or raise MOA_MAX_INPUT_BYTES",
        )
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise UserError(ErrorCode.INPUT_FILE, f"input file {path} is binary, not text; give a UTF-8 text file with one item per line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"input file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8") from exc
    items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise UserError(
            ErrorCode.INPUT_FILE,
            f"input file {path} has no items (it is empty or has only blank lines); put one item per line, "
            "or leave out --input to run the task on its own text",
        )
    return check_items(items, settings, source=str(path))


def check_items(items: list[str], settings: Settings, *, source: str = "input") -> list[str]:
    if len(items) > settings.max_items:
        raise UserError(
            ErrorCode.INPUT_FILE, f"{source} has {len(items)} items, more than the limit of {settings.max_items}; split it or raise MOA_MAX_ITEMS"
        )
    return items
