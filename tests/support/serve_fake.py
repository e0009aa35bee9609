"""`moa serve`'s application with the fast fake model of benchmarks/server_load.py, in a process of
its own: ``python serve_fake.py PORT DELAY`` (state, keys and config from the environment). For
tests that kill the server (tests/test_server_restart.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from benchmarks.server_load import fake  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import Keyring  # noqa: E402
from moa.settings import load_settings  # noqa: E402


def main(port: int, delay: float) -> None:
    settings = load_settings()
    model = fake(delay)
    app = create_app(settings, config=ServerConfig(port=port, max_runs=2), keys=Keyring.load(settings), slm=model, llm=model)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
