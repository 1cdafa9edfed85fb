"""Masking secret values in output: verbatim and as tools commonly re-encode them, across a
byte stream cut anywhere. Used for stage logs and for the git client's error messages."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words everywhere; GitHub Actions draws the same line.
MIN_SECRET_LENGTH = 4
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
