"""Stage log capture: bytes → numbered lines, secrets masked before anything is stored.

`LogCapture` numbers lines from 0, batches them into chunks for a `LogChunkSink` (Postgres rows),
spools the masked text to a local file, and at the end says whether the log is large enough to
be moved to the object store (only the tail then stays in the row).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MASK = "***"
# Shorter values would mask ordinary words everywhere; GitHub Actions draws the same line.
MIN_SECRET_LENGTH = 4
MAX_LINE_BYTES = 64 * 1024
LARGE_LOG_BYTES = 1_048_576
TAIL_BYTES = 64 * 1024


def _secret_forms(value: str) -> set[str]:
    forms: set[str] = set()
    candidates = [value, *value.splitlines()]
    for candidate in candidates:
        candidate = candidate.strip("\r")
        if len(candidate) < MIN_SECRET_LENGTH:
            continue
        forms.add(candidate)
        raw = candidate.encode()
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = encoded.decode()
            forms.add(text)
            forms.add(text.rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class SecretMasker:
    """Replaces secret values, their base64 forms and each line of multi-line secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _secret_forms(secret)
        # Longest first so a secret containing another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def mask(self, line: str) -> str:
        if self._pattern is None:
            return line
        return self._pattern.sub(MASK, line)


class LineSplitter:
    """Incremental bytes → complete lines; overlong lines are cut at MAX_LINE_BYTES."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buffer.extend(data)
        lines: list[str] = []
        while True:
            idx = self._buffer.find(b"\n")
            if idx < 0:
                break
            lines.extend(self._cut(bytes(self._buffer[:idx])))
            del self._buffer[: idx + 1]
        while len(self._buffer) > MAX_LINE_BYTES:
            lines.append(self._decode(bytes(self._buffer[:MAX_LINE_BYTES])))
            del self._buffer[:MAX_LINE_BYTES]
        return lines

    def flush(self) -> list[str]:
        if not self._buffer:
            return []
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._cut(rest)

    def _cut(self, raw: bytes) -> list[str]:
        if len(raw) <= MAX_LINE_BYTES:
            return [self._decode(raw)]
        return [
            self._decode(raw[i : i + MAX_LINE_BYTES]) for i in range(0, len(raw), MAX_LINE_BYTES)
        ]

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace").rstrip("\r").replace("\x00", "\ufffd")


@dataclass(frozen=True)
class LogChunk:
    first_seq: int
    lines: list[str]

    @property
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


@dataclass
class LogCapture:
    """Feed raw output; chunks go to `sink` every `max_lines` lines or `max_delay` seconds."""

    sink: LogChunkSink
    masker: SecretMasker
    spool_path: Path
    max_lines: int = 2000
    max_bytes: int = 256 * 1024
    max_delay: float = 0.5
    _splitter: LineSplitter = field(default_factory=LineSplitter)
    _pending: list[str] = field(default_factory=list)
    _pending_bytes: int = 0
    _next_seq: int = 0
    _flushed_seq: int = 0
    _byte_count: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _spool: IO[str] | None = None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    async def feed(self, data: bytes) -> None:
        self._accept(self._splitter.feed(data))
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
        chunk = LogChunk(first_seq=self._flushed_seq, lines=list(self._pending))
        # Lines leave `pending` only once stored: a flush cancelled mid-write is redone whole
        # by the next one (the sink is idempotent per chunk), so nothing is lost or doubled.
        await self.sink(chunk)
        del self._pending[: len(chunk.lines)]
        self._pending_bytes = sum(len(x.encode()) + 1 for x in self._pending)
        self._flushed_seq += len(chunk.lines)

    async def close(self, *, hand_back_last: bool = False) -> LogSummary:
        """End of output. With `hand_back_last`, the lines not stored yet are not sent to the
        sink but returned as `last_chunk`, for the caller's own closing write to store."""
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
        )

    def _accept(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._spool is None:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            self._spool = self.spool_path.open("w", encoding="utf-8")
        for line in lines:
            masked = self.masker.mask(line)
            self._pending.append(masked)
            size = len(masked.encode()) + 1
            self._pending_bytes += size
            self._byte_count += size
            self._spool.write(masked + "\n")
        self._next_seq += len(lines)


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
