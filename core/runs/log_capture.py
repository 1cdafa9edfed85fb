"""Stage log capture: bytes → masked bytes → numbered lines, before anything is stored.

`LogCapture` numbers lines from 0, batches them into chunks for a `LogChunkSink` (Postgres rows),
spools the masked text to a local file, and at the end says whether the log is large enough to
be moved to the object store (only the tail then stays in the row).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from forgeline.secret_masking import MaskingStream, SecretMasker

MAX_LINE_BYTES = 64 * 1024
LARGE_LOG_BYTES = 1_048_576
TAIL_BYTES = 64 * 1024
# The most of the worker's event loop one stage's log handling (masking, cutting lines,
# spooling, building chunks) may take: the rest is other stages', whatever this one writes.
LOOP_SHARE = 0.25


def _char_boundary(data: bytes | bytearray, limit: int) -> int:
    """The largest cut <= limit (by at most 3 bytes) that does not split a UTF-8 character;
    `data` is longer than `limit`."""
    for cut in range(limit, limit - 4, -1):
        if (data[cut] & 0xC0) != 0x80:
            return cut
    return limit  # not UTF-8 there anyway


class LineSplitter:
    """Incremental bytes → complete lines; overlong lines are cut at MAX_LINE_BYTES (on a
    character boundary). Feed it masked bytes: a cut never splits a secret that way.

    A carriage return ends a line like a newline does (CRLF is one end): a stored line never
    holds CR or LF, so every reader (download, SSE, whose framing splits on both) sees the same
    lines. A progress bar redrawn with CR reads as one line per redraw."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._cr_pending = False

    def feed(self, data: bytes) -> list[str]:
        if self._cr_pending:
            data = b"\r" + data
            self._cr_pending = False
        if data.endswith(b"\r"):
            # It may be the first half of a CRLF split across two reads.
            data = data[:-1]
            self._cr_pending = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines: list[str] = []
        if b"\n" in data:
            complete = data.split(b"\n")
            rest = complete.pop()
            if self._buffer:
                self._buffer += complete[0]
                complete[0] = bytes(self._buffer)
            decode = self._decode
            for raw in complete:
                if len(raw) <= MAX_LINE_BYTES:
                    lines.append(decode(raw))
                else:
                    lines.extend(self._cut(raw))
            self._buffer = bytearray(rest)
        else:
            self._buffer += data
        while len(self._buffer) > MAX_LINE_BYTES:
            cut = _char_boundary(self._buffer, MAX_LINE_BYTES)
            lines.append(self._decode(bytes(self._buffer[:cut])))
            del self._buffer[:cut]
        return lines

    def flush(self) -> list[str]:
        if self._cr_pending:
            self._cr_pending = False
            lines = self.feed(b"\n")
            return lines
        if not self._buffer:
            return []
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._cut(rest)

    def _cut(self, raw: bytes) -> list[str]:
        if len(raw) <= MAX_LINE_BYTES:
            return [self._decode(raw)]
        pieces: list[str] = []
        while len(raw) > MAX_LINE_BYTES:
            cut = _char_boundary(raw, MAX_LINE_BYTES)
            pieces.append(self._decode(raw[:cut]))
            raw = raw[cut:]
        pieces.append(self._decode(raw))
        return pieces

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace").rstrip("\r").replace("\x00", "\ufffd")


@dataclass(frozen=True)
class LogChunk:
    first_seq: int
    lines: list[str]

    @functools.cached_property
    def content(self) -> str:
        return "".join(line + "\n" for line in self.lines)


LogChunkSink = Callable[[LogChunk], Awaitable[None]]


@dataclass
class LogSummary:
    line_count: int
    byte_count: int
    tail: str
    # The spool file exists only when the stage wrote something.
    spool_path: Path
    large: bool
    last_chunk: LogChunk | None = None
    # The output went past the capture's byte limit: the rest was dropped.
    truncated: bool = False


@dataclass
class LogCapture:
    """Feed raw output; chunks go to `sink` every `max_lines` lines or `max_delay` seconds.

    With `limit_bytes`, output past that many bytes of log is dropped: one marker line says
    so, and `on_limit` is called once (the stage decides whether to stop the process)."""

    sink: LogChunkSink
    masker: SecretMasker
    spool_path: Path
    max_lines: int = 2000
    max_bytes: int = 256 * 1024
    max_delay: float = 0.5
    limit_bytes: int | None = None
    on_limit: Callable[[], None] | None = None
    _truncated: bool = False
    _splitter: LineSplitter = field(default_factory=LineSplitter)
    _stream: MaskingStream | None = None
    _pending: list[str] = field(default_factory=list)
    _pending_bytes: int = 0
    _next_seq: int = 0
    _flushed_seq: int = 0
    _byte_count: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _spool: IO[str] | None = None
    # Seconds of the event loop spent on this log's own work (not waiting for the sink).
    busy_seconds: float = 0.0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def truncated(self) -> bool:
        return self._truncated

    async def feed(self, data: bytes) -> None:
        if self._truncated:
            return  # past the limit: dropped unread (a flooding stage costs no masking)
        # Masked before lines are cut, so a secret straddling a cut is still seen whole.
        began = time.perf_counter()
        if self._stream is None:
            self._stream = self.masker.stream()
        masked = self._stream.feed(data)
        if masked:
            self._accept(self._splitter.feed(masked))
        self.busy_seconds += time.perf_counter() - began
        if (
            len(self._pending) >= self.max_lines
            or self._pending_bytes >= self.max_bytes
            or (self._pending and time.monotonic() - self._last_flush >= self.max_delay)
        ):
            await self.flush()

    async def tick(self) -> None:
        """Called periodically so a quiet stage's last lines still show up live."""
        if self._pending and time.monotonic() - self._last_flush >= self.max_delay:
            await self.flush()

    async def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        began = time.perf_counter()
        chunk = LogChunk(first_seq=self._flushed_seq, lines=list(self._pending))
        _ = chunk.content  # built here, where its cost is counted (cached on the chunk)
        self.busy_seconds += time.perf_counter() - began
        # Lines leave `pending` only once stored: a flush cancelled mid-write is redone whole
        # by the next one (the sink is idempotent per chunk), so nothing is lost or doubled.
        await self.sink(chunk)
        del self._pending[: len(chunk.lines)]
        self._pending_bytes = sum(len(x.encode()) + 1 for x in self._pending)
        self._flushed_seq += len(chunk.lines)

    def note(self, text: str) -> None:
        """Lines of Forgeline's own about the stage (limits reached, artifacts dropped): kept
        even past the byte limit, after the output's pending partial line."""
        if self._stream is not None and not self._truncated:
            self._accept(self._splitter.feed(self._stream.flush()))
            self._stream = None
        if not self._truncated:
            self._accept(self._splitter.flush())
        self._accept(text.splitlines(), capped=False)

    async def close(self, *, hand_back_last: bool = False) -> LogSummary:
        """End of output. With `hand_back_last`, the lines not stored yet are not sent to the
        sink but returned as `last_chunk`, for the caller's own closing write to store."""
        if self._stream is not None and not self._truncated:
            self._accept(self._splitter.feed(self._stream.flush()))
        if not self._truncated:
            self._accept(self._splitter.flush())
        last: LogChunk | None = None
        if not hand_back_last:
            await self.flush()
        elif self._pending:
            last = LogChunk(first_seq=self._flushed_seq, lines=list(self._pending))
        tail = ""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
            tail = read_tail(self.spool_path, TAIL_BYTES)
        return LogSummary(
            line_count=self._next_seq,
            byte_count=self._byte_count,
            tail=tail,
            spool_path=self.spool_path,
            large=self._byte_count > LARGE_LOG_BYTES,
            last_chunk=last,
            truncated=self._truncated,
        )

    def _accept(self, lines: list[str], *, capped: bool = True) -> None:
        if not lines or (capped and self._truncated):
            return
        if self._spool is None:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            self._spool = self.spool_path.open("w", encoding="utf-8")
        limit = self.limit_bytes if capped else None
        for line in lines:
            size = len(line.encode()) + 1
            if limit is not None and self._byte_count + size > limit:
                self._truncated = True
                self._write(truncation_marker(limit))
                if self.on_limit is not None:
                    self.on_limit()
                return
            self._write(line)

    def _write(self, line: str) -> None:
        assert self._spool is not None
        size = len(line.encode()) + 1
        self._pending.append(line)
        self._pending_bytes += size
        self._byte_count += size
        self._spool.write(line + "\n")
        self._next_seq += 1


class OutputPace:
    """Back-pressure on a stage's output: after a burst of `rate` bytes, at most `rate` bytes a
    second are read, and the log's own work (`busy` seconds of the event loop per read) takes at
    most `share` of the loop: the next read waits busy x (1 - share) / share. A stage writing
    faster blocks on its full pipe, and the worker's event loop (log storage, heartbeats, other
    stages) keeps its share whatever the cost per byte (masking, short lines)."""

    def __init__(self, rate: int, share: float = LOOP_SHARE) -> None:
        self.rate = rate
        self.share = share
        self._tokens = float(rate)
        self._at = time.monotonic()

    async def take(self, size: int, busy: float = 0.0) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate) - size
        self._at = now
        wait = max(-self._tokens / self.rate, busy * (1 - self.share) / self.share)
        if wait > 0:
            await asyncio.sleep(wait)


def truncation_marker(limit: int) -> str:
    return (
        f"forgeline: log truncated: the stage's output reached the log limit of {limit} bytes "
        "(the smallest of FORGELINE_STAGE_LOG_MAX_BYTES, the plan's stage_log_max_bytes and "
        "the pipeline's limits.log_max_bytes); "
        "the rest of its output was dropped"
    )


def read_tail(path: Path, max_bytes: int) -> str:
    """The last whole lines of a file, at most max_bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size > max_bytes:
            f.seek(size - max_bytes)
            data = f.read()
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else data
        else:
            data = f.read()
    return data.decode("utf-8", errors="replace")
