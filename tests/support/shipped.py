"""Test fixture helper: skip a test when a shipped instruct model is not installed (fail in CI
when ``in_ci`` says CI must have it, so a lost install step in ``.ci/run`` shows)."""

from __future__ import annotations

import os

import pytest

from moa.models.shipped import SHIPPED, shipped_status


def require_shipped(name: str, *, in_ci: bool) -> None:
    model = SHIPPED[name]
    status = shipped_status(model)
    if status.installed == len(model.parts):
        return
    if in_ci and os.environ.get("CI"):
        pytest.fail(f"{model.spec} is not installed in CI: {status.summary}")
    pytest.skip(f"{model.spec}: {status.summary}")
