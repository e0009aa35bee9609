"""A real HTTP/1.1 server on 127.0.0.1 that breaks connections on purpose, for retry tests.

Raw sockets, one thread per connection, keep-alive like uvicorn or llama.cpp's server. For each
request it asks ``plan(path, n)`` (``n``: how many requests to this path came before) what to do:

- ``answer``: send ``respond(method, path, body)`` as JSON and keep the connection open;
- ``close``: close the connection without a word (FIN): the client sees "Server disconnected
  without sending a response", as when a server's keep-alive timeout closes a connection just
  as the client reuses it;
- ``reset``: close with an RST (SO_LINGER 0): the client sees ``ReadError`` "Connection reset by
  peer", the error of the benchmark run that prompted the retry;
- ``cut``: send the status line, the headers and half the body, then RST: the answer broke off
  after it had begun.

Every request is recorded as :class:`Received` (connection number, method, path, action).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["answer", "close", "reset", "cut"]
Plan = Callable[[str, int], Action]
Responder = Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Received:
    connection: int
    """1 for the first connection the server accepted, 2 for the next..."""
    method: str
    path: str
    action: Action


@dataclass
class FlakyServer:
    url: str
    """``http://127.0.0.1:<port>``."""
    received: list[Received] = field(default_factory=list)

    def actions(self, path: str) -> list[Action]:
        return [r.action for r in self.received if r.path == path]


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[str, str, bytes, bytes] | None:
    """One request from ``conn``: method, path, body, and the bytes read past it (None at EOF)."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return method, path, rest[:length], rest[length:]


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@contextmanager
def flaky_server(respond: Responder, plan: Plan) -> Iterator[FlakyServer]:
    """Serve on a free port of 127.0.0.1 until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = FlakyServer(url=f"http://127.0.0.1:{listener.getsockname()[1]}")
    lock = threading.Lock()
    counts: dict[str, int] = {}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    open_connections: list[socket.socket] = []

    def handle(conn: socket.socket, number: int) -> None:
        buffer = b""
        try:
            while not stop.is_set():
                request = _read_request(conn, buffer)
                if request is None:
                    conn.close()
                    return
                method, path, body, buffer = request
                with lock:
                    n = counts.get(path, 0)
                    counts[path] = n + 1
                    action = plan(path, n)
                    server.received.append(Received(number, method, path, action))
                if action == "close":
                    conn.close()
                    return
                if action == "reset":
                    _reset(conn)
                    return
                status, payload = respond(method, path, json.loads(body or b"{}"))
                data = json.dumps(payload).encode()
                head = (
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
                ).encode()
                if action == "cut":
                    conn.sendall(head + data[: len(data) // 2])
                    _reset(conn)
                    return
                conn.sendall(head + data)
        except OSError:  # the client went away, or the block ended
            conn.close()

    def accept() -> None:
        number = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            number += 1
            open_connections.append(conn)
            thread = threading.Thread(target=handle, args=(conn, number), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in threads:
            thread.join(timeout=2)
