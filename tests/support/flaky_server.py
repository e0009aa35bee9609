"""A real HTTP/1.1 server on 127.0.0.1 that misbehaves on purpose, at the socket level.

Raw sockets, one thread per connection, keep-alive like uvicorn or llama.cpp's server: what an
ASGI app cannot do (drop a connection before answering, cut a body in the middle, hold a request
past the client's timeout) is one :class:`Reply` away. Two layers:

- :func:`raw_server` asks ``handle(request)`` for a :class:`Reply` to each :class:`Request` and
  carries it out. Its actions:

  - ``answer``: send ``status`` / ``content_type`` / ``body`` and keep the connection open;
  - ``close``: close the connection without a word (FIN): the client sees "Server disconnected
    without sending a response", as when a server's keep-alive timeout closes a connection just
    as the client reuses it;
  - ``reset``: close with an RST (SO_LINGER 0): the client sees ``ReadError`` "Connection reset by
    peer";
  - ``cut``: send the status line, the headers and half the body, then RST: the answer broke off
    after it had begun;
  - ``hang``: read the request and say nothing for ``hang_s`` seconds (or until the server
    stops), then close: the client's timeout fires first.

- :func:`flaky_server` (the retry tests) answers with canned JSON (``respond``) and picks the
  action from ``plan(path, n)`` (``n``: how many requests to this path came before); every request
  is recorded as :class:`Received`.

:mod:`support.fault_server` builds the fault-injecting OpenAI / Ollama server on :func:`raw_server`.
The server stops by itself when its ``with`` block ends: a hanging request is released at once.
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

Action = Literal["answer", "close", "reset", "cut", "hang"]
Plan = Callable[[str, int], Action]
Responder = Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Request:
    """One HTTP request as the server read it."""

    connection: int
    """1 for the first connection the server accepted, 2 for the next..."""
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    n: int
    """How many requests to this path came before this one."""

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass(frozen=True)
class Reply:
    """What the server does with one request (see the module docstring for the actions)."""

    action: Action = "answer"
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang_s: float = 30.0

    @classmethod
    def json(cls, payload: Any, status: int = 200, action: Action = "answer") -> Reply:
        return cls(action=action, status=status, body=json.dumps(payload).encode())


@dataclass
class RawServer:
    url: str
    """``http://127.0.0.1:<port>``."""
    requests: list[Request] = field(default_factory=list)
    """Every request read, in order."""


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


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[str, str, dict[str, str], bytes, bytes] | None:
    """One request from ``conn``: method, path, headers, body, and the bytes read past it (None at EOF)."""
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
    return method, path, headers, rest[:length], rest[length:]


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@contextmanager
def raw_server(handle: Callable[[Request], Reply]) -> Iterator[RawServer]:
    """Serve ``handle``'s replies on a free port of 127.0.0.1 until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = RawServer(url=f"http://127.0.0.1:{listener.getsockname()[1]}")
    lock = threading.Lock()
    counts: dict[str, int] = {}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    open_connections: list[socket.socket] = []

    def serve(conn: socket.socket, number: int) -> None:
        buffer = b""
        try:
            while not stop.is_set():
                read = _read_request(conn, buffer)
                if read is None:
                    conn.close()
                    return
                method, path, headers, body, buffer = read
                with lock:
                    n = counts.get(path, 0)
                    counts[path] = n + 1
                    request = Request(number, method, path, headers, body, n)
                    server.requests.append(request)
                    reply = handle(request)  # under the lock: replies are decided in arrival order
                if reply.action == "close":
                    conn.close()
                    return
                if reply.action == "reset":
                    _reset(conn)
                    return
                if reply.action == "hang":
                    stop.wait(reply.hang_s)
                    conn.close()
                    return
                head = (
                    f"HTTP/1.1 {reply.status} X\r\nContent-Type: {reply.content_type}\r\n"
                    f"Content-Length: {len(reply.body)}\r\nConnection: keep-alive\r\n\r\n"
                ).encode()
                if reply.action == "cut":
                    conn.sendall(head + reply.body[: len(reply.body) // 2])
                    _reset(conn)
                    return
                conn.sendall(head + reply.body)
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
            thread = threading.Thread(target=serve, args=(conn, number), daemon=True)
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


@contextmanager
def flaky_server(respond: Responder, plan: Plan) -> Iterator[FlakyServer]:
    """Serve ``respond``'s JSON on a free port of 127.0.0.1, breaking connections as ``plan`` says."""
    flaky = FlakyServer(url="")

    def handle(request: Request) -> Reply:
        action = plan(request.path, request.n)
        flaky.received.append(Received(request.connection, request.method, request.path, action))
        if action in ("close", "reset"):
            return Reply(action=action)
        status, payload = respond(request.method, request.path, request.json())
        return Reply.json(payload, status, action)

    with raw_server(handle) as raw:
        flaky.url = raw.url
        yield flaky
