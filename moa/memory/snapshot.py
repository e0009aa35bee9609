"""Reading a Chroma folder this process cannot write.

Chroma's ``PersistentClient`` writes to its folder even to read (it opens its SQLite database
for writing and migrates it): on a read-only folder it fails with "attempt to write a readonly
database". So moa reads such a folder from a temporary copy (:class:`ReadCopy`): made once, on
first use, when the folder holds at most :data:`MAX_COPY_BYTES`, and removed when the memory is
closed (or the process exits). The copy is a snapshot: passages another process adds to the
folder afterwards are not seen, and nothing is ever written to the folder itself. A larger
folder is a ``memory_unwritable`` error that says what to do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from moa.errors import ErrorCode, UserError
from moa.logs import get_logger

log = get_logger(__name__)

MAX_COPY_BYTES = 1 << 30
"""The largest folder read from a temporary copy (1 GiB)."""


def writable(path: Path) -> bool:
    """Whether a file can be created in the existing folder ``path`` (a real try: permission
    bits say nothing to root, to an immutable folder or on a read-only mount)."""
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".moa-write-check-"):
            return True
    except OSError:
        return False


def folder_bytes(path: Path) -> int:
    """The size of the regular files under ``path`` (links are not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size
    return total


class ReadCopy:
    """A temporary copy of the folder ``source``, made on the first :meth:`path` (thread-safe)."""

    def __init__(self, source: Path, *, max_bytes: int = MAX_COPY_BYTES) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._temp: tempfile.TemporaryDirectory[str] | None = None

    def _refuse(self, why: str) -> UserError:
        return UserError(
            ErrorCode.MEMORY_UNWRITABLE,
            f"memory directory {self.source} is not writable, and Chroma cannot read a folder it cannot write; {why}. "
            "Make the folder writable, or copy it to a writable place and pass that with --memory-dir (MOA_MEMORY_DIR)",
            details={"path": str(self.source)},
        )

    def path(self) -> Path:
        """Where the copy is (made now if it is not there yet)."""
        with self._lock:
            if self._temp is None:
                size = folder_bytes(self.source)
                if size > self.max_bytes:
                    raise self._refuse(f"it is too large ({size / 1e6:.0f} MB) to be read from a temporary copy (at most {self.max_bytes / 1e6:.0f} MB)")
                temp = tempfile.TemporaryDirectory(prefix="moa-memory-read-")
                try:
                    shutil.copytree(self.source, Path(temp.name) / "memory", symlinks=True)
                except (OSError, shutil.Error) as exc:
                    temp.cleanup()
                    raise self._refuse(f"copying it to {tempfile.gettempdir()} to read it failed ({exc})") from exc
                self._temp = temp
                log.info("memory_read_from_copy", source=str(self.source), copy=temp.name, bytes=size)
            return Path(self._temp.name) / "memory"

    def close(self) -> None:
        """Remove the copy (a later :meth:`path` makes a new one)."""
        with self._lock:
            temp, self._temp = self._temp, None
        if temp is not None:
            temp.cleanup()


__all__ = ["MAX_COPY_BYTES", "ReadCopy", "folder_bytes", "writable"]
