"""Writing files safely."""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Self, TypeVar

from pydantic import BaseModel, ValidationError

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


class JsonFile(BaseModel):
    """A model kept as one JSON file: written atomically, read back with an error that says how
    to make the file again. Subclasses name what they are (``what``) and the command (``again``)."""

    what: ClassVar[str] = "the file"
    again: ClassVar[str] = "make it again"

    def save(self, path: Path) -> None:
        """Write as JSON (atomically: a temporary file, then a rename)."""
        atomic_write(path, lambda f: f.write((self.model_dump_json(indent=2) + "\n").encode()), self.what)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(ErrorCode.INPUT_FILE, f"no {cls.what.removeprefix('the ')} at {path}; {cls.again}")
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else f"{exc.error_count()} invalid field(s)"
            raise UserError(ErrorCode.INPUT_FILE, f"{cls.what} file {path} is unreadable or corrupt ({detail}); {cls.again}") from exc


T = TypeVar("T")


def load_npz(path: Path, what: str, again: str, build: Callable[[Any, dict[str, Any]], T], version: int, kind: str | None = None) -> T:
    """Read a moa ``.npz`` file: its arrays and its ``meta`` JSON (``format`` must be ``version``
    and, if given, ``kind`` must match) go to ``build(arrays, meta)`` while the file is open.
    A missing, corrupt or foreign file is a :class:`UserError` (``INPUT_FILE``) naming ``what``
    and the command that makes it ``again``."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(ErrorCode.INPUT_FILE, f"no {what} at {path}; {again}")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != version or (kind is not None and meta.get("kind") != kind):
                raise ValueError(f"unknown format {meta.get('format') if isinstance(meta, dict) else meta!r}")
            return build(data, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(ErrorCode.INPUT_FILE, f"the {what} file {path} is corrupt or from another moa version ({exc}); {again}") from exc
