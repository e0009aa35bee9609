"""Test fixture helper: files and folders made immutable with ``chattr +i``, which even root cannot
write (the tests run as root, which ignores file modes). Skips the test when that is not possible."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths made immutable with :func:`chattr` during the test (made writable again after it)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a folder unwritable for root")
    made: list[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["chattr", "-i", str(path)], check=False)


def chattr(path: Path, made: list[Path]) -> None:
    """Make ``path`` immutable and remember it in ``made`` (the :func:`immutable` fixture's list)."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i {path} failed ({done.stderr.strip()}): no immutable files on this file system or without CAP_LINUX_IMMUTABLE")
    made.append(path)
