"""Loopback servers for hostile-network tests: a proxy that cuts event streams mid-way, and a
server that answers garbage."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Self


class CuttingProxy:
    """Forwards loopback TCP to the API; the first `cuts` responses to requests containing
    `follow=true` are cut after `after_bytes` bytes (headers included), mid-event."""

    def __init__(self, upstream_port: int, *, cuts: int, after_bytes: int) -> None:
        self.upstream_port = upstream_port
        self.cuts = cuts
        self.after_bytes = after_bytes
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        first = client.recv(65536)
        limit: int | None = None
        with self._lock:
            self.requests.append(first)
            if b"follow=true" in first.split(b"\r\n", 1)[0] and self.cuts > 0:
                self.cuts -= 1
                limit = self.after_bytes
        upstream.sendall(first)
        threading.Thread(target=_pump, args=(client, upstream, None), daemon=True).start()
        _pump(upstream, client, limit)


def _pump(source: socket.socket, target: socket.socket, limit: int | None) -> None:
    sent = 0
    try:
        while True:
            data = source.recv(4096)
            if not data:
                break
            if limit is not None and sent + len(data) >= limit:
                target.sendall(data[: limit - sent])
                break
            target.sendall(data)
            sent += len(data)
    except OSError:
        pass
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class GarbageServer:
    """An HTTP server on loopback whose every answer is `respond(request_line)`: raw bytes."""

    def __init__(self, respond: Callable[[bytes], bytes]) -> None:
        self.respond = respond
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with client:
                request = client.recv(65536)
                try:
                    client.sendall(self.respond(request.split(b"\r\n", 1)[0]))
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def http_response(
    body: bytes, content_type: str = "application/json", status: str = "200 OK"
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def stream_response(body: bytes) -> bytes:
    """An event stream that ends (connection closed) after `body`, without a length."""
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    return head.encode() + body
