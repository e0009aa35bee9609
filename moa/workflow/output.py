"""The file a run's result is also written to (``-o`` / ``output=``): checked before the run starts,
written atomically when an attempt ends.

A run never starts when its result could not be written where it was asked to be (a missing or
unwritable folder, a directory), and never overwrites its own input file.
"""

from __future__ import annotations

import os
from pathlib import Path

from moa.errors import ErrorCode, UserError
from moa.files import atomic_write
from moa.workflow.results import RunResult


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: Path | str, *, input: Path | str | None = None) -> Path:
    """``path`` made absolute (so a resume from another folder writes the same file) if a result
    can be written there, else a ``UserError`` ``OUTPUT_FILE`` saying why.

    Args:
        input: the run's input file, which the output must not be.
    """
    path = Path(path)
    folder = path.parent
    if input is not None and (_same_file(path, Path(input)) or path.resolve() == Path(input).resolve()):
        raise UserError(ErrorCode.OUTPUT_FILE, f"the output file {path} is the input file; give -o another path (moa never overwrites its input)")
    if path.is_dir():
        raise UserError(ErrorCode.OUTPUT_FILE, f"the output path {path} is a directory; give a file path such as {path / 'result.json'}")
    if not folder.is_dir():
        raise UserError(ErrorCode.OUTPUT_FILE, f"the folder of the output file {path} does not exist; create {folder} first, or give -o another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(ErrorCode.OUTPUT_FILE, f"cannot write the output file {path} (permission denied); give -o a path in a folder you can write")
    return path.absolute()


def write_result(path: Path, result: RunResult) -> None:
    """Write ``result`` as JSON to ``path`` (through a temporary file: never half a file)."""
    try:
        atomic_write(path, lambda f: f.write(result.model_dump_json(indent=2).encode("utf-8")), "the run's result")
    except UserError as exc:
        raise UserError(
            ErrorCode.OUTPUT_FILE,
            f"run {result.run_id} ended (status {result.status}) but its result could not be written: {exc.message.split(';')[0]}; "
            f"it is kept: `moa runs export {result.run_id} -o FILE` writes it elsewhere",
        ) from exc
