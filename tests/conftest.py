"""Test configuration.

* Unit tests cannot reach a real model by accident: unless a test is marked ``real``, it runs inside
  :func:`moa.testing.block_real_models` (the real backends, the MiniLM embedder and Chroma clients
  raise ``RealModelBlocked``; the pydantic-ai ``ALLOW_MODEL_REQUESTS = False`` idea).
* Settings never come from the developer's machine: ``MOA_CONFIG`` points at an empty file (a
  missing one would be a ``bad_config`` error) and the memory lives in the test's tmp dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from support.tiers import fake_tiers

from moa.models.embedded import EmbeddedBackend
from moa.testing import FakeModel, block_real_models


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """CLI tests configure structlog (to a captured stderr); undo that after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def _empty_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("config") / "moa.toml"
    config.write_text("")
    return config


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _empty_config: Path) -> None:
    monkeypatch.setenv("MOA_CONFIG", str(_empty_config))
    monkeypatch.setenv("MOA_MEMORY_DIR", str(tmp_path / "memory"))
    monkeypatch.setenv("MOA_STATE_DIR", str(tmp_path / "state"))
    for name in ("MOA_SLM", "MOA_LLM", "MOA_PLANNER", "MOA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_real_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests (not marked ``real``) cannot use a real model, the MiniLM embedder or Chroma (so
    not the shipped entity tagger either: its word clusters need MiniLM)."""
    if request.node.get_closest_marker("real") is not None:
        yield
        return
    monkeypatch.setenv("MOA_SHIPPED_SPECIALISTS", "false")
    with block_real_models():
        yield


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedBackend]:
    """The default embedded model, loaded once per test session."""
    backend = EmbeddedBackend()
    yield backend


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cli_model(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    """A fake model (a confident positive sentiment) on both tiers of every run context the CLI creates."""
    fake = FakeModel(['{"label":"positive","confidence":0.9}'])
    fake_tiers(monkeypatch, fake, fake)
    return fake
