"""Capturing a flooding stage's output, without services: the log stops at its limit with one
marker, an endless line is cut and capped, carriage returns end lines however the output is
cut; a log store that stalls never holds the runner past a timeout or a cancel."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.runs.log_capture import LineSplitter, LogCapture, LogChunk
from forgeline.secret_masking import SecretMasker
from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import (
    FLOOD,
    process_gone,
)
from tests.runs.sandbox import sandbox_runner


class Stored:
    def __init__(self) -> None:
        self.chunks: list[LogChunk] = []

    async def __call__(self, chunk: LogChunk) -> None:
        self.chunks.append(chunk)

    @property
    def lines(self) -> list[str]:
        return [line for c in self.chunks for line in c.lines]


# ------------------------------------------------------------------------ capture, no services


async def test_capture_stops_at_the_limit_with_one_marker(tmp_path: Path) -> None:
    stored = Stored()
    reached: list[int] = []
    secret = "hunter2-secret-value"
    capture = LogCapture(
        stored,
        SecretMasker([secret]),
        tmp_path / "spool.log",
        limit_bytes=10_000,
        on_limit=lambda: reached.append(1),
    )
    # Lines of 100 bytes each carrying the secret, fed in odd-sized pieces.
    data = b"".join(f"{i:05d} {secret} {'y' * 72}\n".encode() for i in range(1000))
    for start_at in range(0, len(data), 777):
        await capture.feed(data[start_at : start_at + 777])
    capture.note("forgeline: warning: kept past the limit")
    summary = await capture.close()
    assert reached == [1] and summary.truncated and capture.truncated
    lines = stored.lines
    assert lines[-2].startswith("forgeline: log truncated") and "10000 bytes" in lines[-2]
    assert lines[-1] == "forgeline: warning: kept past the limit"
    assert all(secret not in line for line in lines)
    # Whole lines up to the limit, then the marker: nothing past it, nothing lost before it.
    kept = lines[:-2]
    assert kept == [f"{i:05d} *** {'y' * 72}" for i in range(len(kept))]
    assert sum(len(x) + 1 for x in kept) <= 10_000 < sum(len(x) + 1 for x in kept) + 84
    assert summary.byte_count == sum(len(x.encode()) + 1 for x in lines)
    assert (tmp_path / "spool.log").stat().st_size == summary.byte_count


async def test_an_endless_line_is_cut_and_capped(tmp_path: Path) -> None:
    stored = Stored()
    capture = LogCapture(stored, SecretMasker([]), tmp_path / "s.log", limit_bytes=200_000)
    for _ in range(100):  # 6.4 MB without a newline
        await capture.feed(b"x" * 65536)
    summary = await capture.close()
    assert summary.truncated and summary.byte_count < 200_000 + 300
    assert stored.lines[-1].startswith("forgeline: log truncated")
    assert {len(line) for line in stored.lines[:-1]} == {65536}


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 4096])
def test_carriage_returns_end_lines_however_the_output_is_cut(piece: int) -> None:
    data = b"a\rb\r\nc\n\rd\r\r\ne\x1b[2K\rprogress 50%\rprogress 100%\r\n\x0cf\xe2\x80\xa8g\r"
    splitter = LineSplitter()
    lines: list[str] = []
    for at in range(0, len(data), piece):
        lines += splitter.feed(data[at : at + piece])
    lines += splitter.flush()
    assert lines == [
        "a",
        "b",
        "c",
        "",
        "d",
        "",
        "e\x1b[2K",
        "progress 50%",
        "progress 100%",
        "\x0cf\u2028g",
    ]
    assert all("\r" not in line and "\n" not in line for line in lines)


# ------------------------------------------------------- runner: a stalled sink never holds it


class StalledSink:
    """A log store that takes the first write and then never answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.first = asyncio.Event()

    async def __call__(self, data: bytes) -> None:
        self.calls += 1
        self.first.set()
        if self.calls > 1:
            await asyncio.Event().wait()


def flood_process(tmp_path: Path, timeout: float) -> StageProcess:
    root = tmp_path / "workspaces" / uuid.uuid4().hex
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-flood-1",
        script=FLOOD,
        workspace=root,
        root=root,
        timeout_seconds=timeout,
    )


@pytest.fixture
async def sandbox(tmp_path: Path) -> Any:
    runner = sandbox_runner(tmp_path / "state")
    yield runner
    await runner.close()


async def test_timeout_ends_a_flood_whose_log_store_stalls(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    process = flood_process(tmp_path, timeout=2)
    outcome = await asyncio.wait_for(sandbox.run(process, StalledSink()), timeout=120)
    assert outcome.timed_out
    assert await process_gone(sandbox, process.name)


async def test_cancel_ends_a_flood_whose_log_store_stalls(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    process = flood_process(tmp_path, timeout=120)
    sink = StalledSink()
    task = asyncio.create_task(sandbox.run(process, sink))
    await asyncio.wait_for(sink.first.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=60)
    assert await process_gone(sandbox, process.name)
