"""HTTP load for the API benchmarks: a keep-alive GET client, a bounded load run, and a uvicorn
process started the same way for every app under test (uvloop, httptools, N workers)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass
class LoadResult:
    latencies_ms: list[float]
    wall_s: float
    errors: int

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def merge(self, other: LoadResult) -> LoadResult:
        """Two rounds as one: all samples, the summed wall time (so req/s stays a rate)."""
        return LoadResult(
            self.latencies_ms + other.latencies_ms,
            self.wall_s + other.wall_s,
            self.errors + other.errors,
        )


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive GET client, so the load generator's own CPU cost stays
    small next to the server's (both share the machine)."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            return await self._get(path)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: reconnect once.
            await self.close()
            return await self._get(path)

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.api_key}\r\nAccept: application/json\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(
    clients: Sequence[T],
    request: Callable[[int, T, random.Random], Awaitable[bool]],
    requests_per_client: int,
) -> LoadResult:
    """Every client sends `requests_per_client` requests back to back, all clients at once."""
    latencies: list[float] = []
    errors = 0

    async def one_client(index: int, client: T) -> None:
        nonlocal errors
        rnd = random.Random(index)
        for _ in range(requests_per_client):
            began = time.perf_counter()
            ok = await request(index, client, rnd)
            latencies.append((time.perf_counter() - began) * 1000)
            errors += 0 if ok else 1

    began = time.perf_counter()
    await asyncio.gather(*(one_client(i, c) for i, c in enumerate(clients)))
    return LoadResult(latencies, time.perf_counter() - began, errors)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_uvicorn(
    app_factory: str, env: dict[str, str], workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    """`app_factory` (module:function) under uvicorn with the settings every app under test
    shares; returns once GET /healthz answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app_factory, "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
         "--timeout-keep-alive", "600"],
        cwd=ROOT,
        env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return process, port
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.2)
    stop(process)
    raise RuntimeError(f"{app_factory} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
