"""Running the `moa` command in a subprocess, isolated in a test's tmp folder (real-model tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def moa_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an isolated `moa` process: state, memory and config (an empty file) under ``tmp_path``."""
    (tmp_path / "empty-moa.toml").touch()
    return {
        **os.environ,
        "MOA_STATE_DIR": str(tmp_path / "state"),
        "MOA_MEMORY_DIR": str(tmp_path / "memory"),
        "MOA_CONFIG": str(tmp_path / "empty-moa.toml"),
        "MOA_TIMEOUT": "600",
    }


def run_moa(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m moa ARGS`` in ``tmp_path``, without a terminal (stdin closed), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=moa_env(tmp_path), timeout=900, cwd=tmp_path, stdin=subprocess.DEVNULL
    )
