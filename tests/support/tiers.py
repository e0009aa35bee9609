"""Test helper: give every run context created from now on (the CLI's, an eval's, a calibration's)
these models on its slm and llm tiers."""

from __future__ import annotations

from typing import Any

import pytest

import moa
from moa.models.base import ModelBackend


def fake_tiers(monkeypatch: pytest.MonkeyPatch, slm: ModelBackend, llm: ModelBackend | None = None) -> None:
    """Patch :meth:`moa.RunContext.create` so its contexts run ``slm`` and ``llm`` (default: ``slm``)."""
    create = moa.RunContext.create

    def with_fakes(settings: moa.Settings | None = None, **kwargs: Any) -> moa.RunContext:
        settings = settings or moa.load_settings()
        return create(settings, models=moa.Models(settings, slm=slm, llm=llm or slm), **kwargs)

    monkeypatch.setattr(moa.RunContext, "create", with_fakes)
