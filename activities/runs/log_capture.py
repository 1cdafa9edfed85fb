"""Stage log capture: bytes → masked bytes → numbered lines, before anything is stored.

`LogCapture` numbers lines from 0, batches them into chunks for a `LogChunkSink` (Postgres rows),
spools the masked text to a local file, and at the end says whether the log is large enough to
be moved to the object store (only the tail then stays in the row).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words everywhere; GitHub Actions draws the same line.
MIN_SECRET_LENGTH = 4
MAX_LINE_BYTES = 64 * 1024
LARGE_LOG_BYTES = 1_048_576
TAIL_BYTES = 64 * 1024
_MASK_BYTES = MASK.encode()


def _base64_forms(raw: bytes) -> set[str]:
    """Whole encodings, unpadded ones, and the stable core of the secret's encoding at each of
    the three byte offsets it can sit at inside a longer encoded value (`user:token` in a
    Basic auth header, `echo "$TOKEN" | base64` with its newline)."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for shift in (0, 1, 2):
            encoded = encode(b"\0" * shift + raw).decode()
            # Characters that also carry bits of the bytes before or after are left out.
            first = -(-8 * shift // 6)
            last = 8 * (shift + len(raw)) // 6
            forms.add(encoded[first:last])
    return forms


def _escaped_forms(text: str) -> set[str]:
    """How a value reads once a tool has escaped or encoded it."""
    raw = text.encode()
    forms = {text[::-1], raw.hex(), raw.hex().upper()}
    forms |= _base64_forms(raw)
    for url_encoded in (quote(text, safe=""), quote_plus(text)):
        forms |= {url_encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), url_encoded)}
    forms |= {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    return forms


def _secret_forms(value: str) -> set[str]:
    forms: set[str] = set()
    whole = value.strip("\r\n")
    candidates = [whole, *(line.strip("\r") for line in value.splitlines())]
    for candidate in candidates:
        if len(candidate) < MIN_SECRET_LENGTH:
            continue
        forms.add(candidate)
        forms |= _escaped_forms(candidate)
    # A line never contains a newline, so a form with one could never match: each line of a
    # multi-line secret is masked on its own instead.
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH and "\n" not in f}


def _trie_pattern(words: Iterable[bytes]) -> bytes:
    """One regex for many literals, shaped as a prefix tree: the engine follows one branch per
    byte instead of trying every literal at every position, and the longest literal wins."""
    end = -1
    root: dict[int, Any] = {}
    for word in words:
        node = root
        for byte in word:
            node = node.setdefault(byte, {})
        node[end] = {}

    def emit(node: dict[int, Any]) -> bytes:
        run = bytearray()
        # Single-child chains become one literal run (no recursion per byte of a long key).
        while len(node) == 1 and end not in node:
            byte, node = next(iter(node.items()))
            run.append(byte)
        out = re.escape(bytes(run))
        branches = [re.escape(bytes([b])) + emit(child) for b, child in node.items() if b != end]
        if not branches:
            return out
        group = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        if end in node:
            return out + (b"(?:" + group + b")?")
        return out + group

    return emit(root)


class SecretMasker:
    """Masks secret values as they appear in output: verbatim, each line of a multi-line value,
    reversed, base64 (standard and URL-safe, at any offset), hex (lower and upper case),
    URL-encoded and JSON-escaped. A safety net, not a boundary: a build that wants to leak a
    secret can always transform it some other way (see README, "Log masking")."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _secret_forms(secret)
        encoded = sorted({f.encode() for f in forms})
        self.longest = max((len(f) for f in encoded), default=0)
        self._bytes_pattern = re.compile(_trie_pattern(encoded)) if encoded else None

    def mask(self, line: str) -> str:
        return self.mask_bytes(line.encode()).decode("utf-8", errors="replace")

    def mask_bytes(self, data: bytes) -> bytes:
        if self._bytes_pattern is None:
            return data
        return self._bytes_pattern.sub(_MASK_BYTES, data)

    def stream(self) -> MaskingStream:
        return MaskingStream(self)


class MaskingStream:
    """Masks a byte stream cut anywhere (pipe reads, overlong lines): a secret split across two
    reads is held back until it can be seen whole. Every byte is scanned a bounded number of
    times, so the cost stays linear in the output."""

    def __init__(self, masker: SecretMasker) -> None:
        self._pattern = masker._bytes_pattern
        self._hold = max(masker.longest - 1, 0)
        self._batch = max(2 * self._hold, 4096)
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        """The masked output that no later byte can change; the rest waits for more."""
        if self._pattern is None:
            return data
        self._pending += data
        if len(self._pending) < self._batch and b"\n" not in data:
            # A partial line grows in small writes (progress bars): scanning the held-back
            # tail again on every write would cost hold x writes, so wait for a batch.
            return b""
        buf = bytes(self._pending)
        # No match spans a newline, and any match that starts before `safe` ends inside `buf`.
        line_end = buf.rfind(b"\n") + 1
        if line_end >= len(buf) - self._hold:
            # Common case: whole lines are final, the partial line after them waits.
            self._pending = bytearray(buf[line_end:])
            return self._pattern.sub(_MASK_BYTES, buf[:line_end])
        safe = len(buf) - self._hold
        out: list[bytes] = []
        pos = 0
        for match in self._pattern.finditer(buf):
            if match.start() >= safe:
                break
            out += (buf[pos : match.start()], _MASK_BYTES)
            pos = match.end()
        cut = max(pos, safe)
        out.append(buf[pos:cut])
        self._pending = bytearray(buf[cut:])
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = bytes(self._pending), bytearray()
        return self._pattern.sub(_MASK_BYTES, rest) if self._pattern is not None else rest


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
        if self._stream is None:
            self._stream = self.masker.stream()
        masked = self._stream.feed(data)
        if masked:
            self._accept(self._splitter.feed(masked))
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
    second are read. A stage writing faster blocks on its full pipe, and the worker's event loop
    (log storage, heartbeats, other stages) keeps its share."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()

    async def take(self, size: int) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate) - size
        self._at = now
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


def truncation_marker(limit: int) -> str:
    return (
        f"forgeline: log truncated: the stage's output reached the log limit of {limit} bytes "
        "(FORGELINE_STAGE_LOG_MAX_BYTES or the pipeline's limits.log_max_bytes); "
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
