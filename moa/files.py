"""Writing files safely."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from moa.errors import ErrorCode, UserError


def atomic_write(path: Path, write: Callable[[BinaryIO], object], what: str) -> None:
    """Write ``path`` through a temporary file and a rename, so readers never see half a file.

    Raises :class:`UserError` (``BAD_CONFIG``) naming ``what`` when the directory is not writable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(
            ErrorCode.BAD_CONFIG, f"cannot write {what} to {path}: {exc.strerror or exc}; set MOA_STATE_DIR to a writable directory"
        ) from exc
