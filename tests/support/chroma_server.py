"""A real Chroma server (`chroma run`, the chromadb package's own) on 127.0.0.1, for memory tests."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def chroma_server(data_dir: Path, log_file: Path) -> Iterator[str]:
    """Run ``chroma run`` on a free port until the heartbeat answers; stop it on exit."""
    exe = Path(sys.executable).parent / "chroma"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [str(exe), "run", "--path", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(600):  # at most ~60 s: each round waits up to 0.1 s for an exit
                try:
                    if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                try:
                    proc.wait(timeout=0.1)
                    raise RuntimeError(f"chroma exited early: {log_file.read_text(errors='replace')[-2000:]}")
                except subprocess.TimeoutExpired:
                    pass
            else:
                raise RuntimeError("chroma did not answer its heartbeat within 60 s")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
