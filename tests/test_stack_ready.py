"""`make run` prints "Forgeline is running" once the API answers, not before: the wait ends when
a server on the API's port answers (any status), when a child process of the stack has exited
(a crash, or a port taken by someone else), or on Ctrl-C; a server bound to all interfaces is
reached on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings
from forgeline.stack import Stack, _reachable, api_answers


class Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)  # starting, or its database is down: it answers all the same
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def stack(port: int, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(Settings(data_dir=tmp_path, api_host="0.0.0.0", api_port=port))
    yield stack
    stack.children.stop(5)


def serve_later(port: int, started: threading.Event) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started.set()
    return server


async def test_the_banner_waits_until_the_api_answers(stack: Stack, port: int) -> None:
    stop = asyncio.Event()
    waiting = asyncio.create_task(api_answers(stack.settings, stack, stop))
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing listens yet: connection refused, tried again
    started = threading.Event()
    server = await asyncio.to_thread(serve_later, port, started)
    try:
        assert await waiting is True
    finally:
        server.shutdown()
        server.server_close()


async def test_a_child_that_exits_or_ctrl_c_ends_the_wait(stack: Stack) -> None:
    stop = asyncio.Event()
    stack.children.children["api"] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert await api_answers(stack.settings, stack, stop) is False
    stack.children.children.clear()
    waiting = asyncio.create_task(api_answers(stack.settings, stack, stop))
    await asyncio.sleep(0.3)
    stop.set()
    assert await waiting is False


def test_all_interfaces_are_reached_on_loopback() -> None:
    assert _reachable("0.0.0.0") == "127.0.0.1"
    assert _reachable("::") == "127.0.0.1"
    assert _reachable("") == "127.0.0.1"
    assert _reachable("127.0.0.5") == "127.0.0.5"
    assert _reachable("localhost") == "localhost"
