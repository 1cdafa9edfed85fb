"""Log capture: line numbering, chunking, masking of secrets in every form, large logs."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from core.runs.log_capture import MAX_LINE_BYTES, LineSplitter, LogCapture, LogChunk
from forgeline.secret_masking import SecretMasker


def test_masks_value_base64_and_multiline_lines() -> None:
    key = "-----BEGIN KEY-----\nAAAAsecretline1\nBBBBsecretline2\n-----END KEY-----"
    masker = SecretMasker(["hunter22", key, "", "ab"])
    assert masker.mask("pw=hunter22!") == "pw=***!"
    assert masker.mask(base64.b64encode(b"hunter22").decode()) == "***"
    assert masker.mask("line: AAAAsecretline1") == "line: ***"
    assert masker.mask("BBBBsecretline2 end") == "*** end"
    # Too short to mask without destroying ordinary output.
    assert masker.mask("ab cd") == "ab cd"


def test_line_splitter_handles_partial_and_overlong_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree") == ["two"]
    assert splitter.flush() == ["three"]
    long = splitter.feed(b"x" * (MAX_LINE_BYTES * 2 + 10) + b"\n")
    assert [len(x) for x in long] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 10]


async def test_capture_chunks_sequentially_and_spools(tmp_path: Path) -> None:
    chunks: list[LogChunk] = []

    async def sink(chunk: LogChunk) -> None:
        chunks.append(chunk)

    capture = LogCapture(sink, SecretMasker(["s3cr3t!"]), tmp_path / "spool.log", max_lines=3)
    payload = "".join(f"line {i} s3cr3t!\n" for i in range(10)).encode()
    # Arbitrary chunk boundaries, as pipes deliver them.
    for i in range(0, len(payload), 7):
        await capture.feed(payload[i : i + 7])
    summary = await capture.close()
    assert summary.line_count == 10
    seqs = [c.first_seq for c in chunks]
    assert seqs == sorted(seqs) and seqs[0] == 0
    lines = [line for c in chunks for line in c.lines]
    assert lines == [f"line {i} ***" for i in range(10)]
    assert (tmp_path / "spool.log").read_text() == "".join(x + "\n" for x in lines)
    assert not summary.large


async def test_large_log_flagged_and_tail_kept(tmp_path: Path) -> None:
    total = 0

    async def sink(chunk: LogChunk) -> None:
        nonlocal total
        total += len(chunk.lines)

    capture = LogCapture(sink, SecretMasker([]), tmp_path / "spool.log")
    for i in range(30_000):
        await capture.feed(f"{i:08d} {'y' * 60}\n".encode())
    summary = await capture.close()
    assert total == 30_000 == summary.line_count
    assert summary.large
    assert summary.tail.endswith(f"{29_999:08d} {'y' * 60}\n")
    assert len(summary.tail) <= 64 * 1024


# --- transformed secrets and cuts --------------------------------------------------------------

SECRET = "tok_3xAmple+/Secret value"
MULTILINE = "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA\n-----END KEY-----\n"


def test_masks_encoded_and_escaped_forms() -> None:
    masker = SecretMasker([SECRET, MULTILINE])
    raw = SECRET.encode()
    shown = [
        raw.hex(),
        raw.hex().upper(),
        quote(SECRET, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe="")),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        SECRET[::-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        # The multi-line key as a JSON string on one line, and base64 of the whole key.
        json.dumps(MULTILINE)[1:-1],
        base64.b64encode(MULTILINE.encode()).decode(),
    ]
    for form in shown:
        masked = masker.mask(f"before {form} after")
        assert form not in masked and masked.startswith("before ") and "***" in masked, form
    piped = base64.b64encode(raw + b"\n").decode()  # echo "$TOKEN" | base64
    assert masker.mask(piped) != piped and len(masker.mask(piped)) < 10
    # Inside a longer base64 value at every byte offset: an HTTP Basic auth header.
    for prefix in ("u:", "us:", "use:", "user:"):
        header = base64.b64encode(f"{prefix}{SECRET}".encode()).decode()
        masked = masker.mask(f"Authorization: Basic {header}")
        assert masked != f"Authorization: Basic {header}", prefix
        assert len(masked) < len(f"Authorization: Basic {header}") - len(SECRET), prefix


def test_masking_leaves_ordinary_output_alone() -> None:
    masker = SecretMasker([SECRET, "abc", ""])
    text = "compiling 12 crates; abc is too short to mask; ok"
    assert masker.mask(text) == text
    assert SecretMasker([]).mask(text) == text


async def _capture(tmp_path: Path, pieces: list[bytes], secrets: list[str]) -> list[str]:
    stored: list[str] = []

    async def sink(chunk: LogChunk) -> None:
        stored.extend(chunk.lines)

    capture = LogCapture(sink, SecretMasker(secrets), tmp_path / "spool.log")
    for piece in pieces:
        await capture.feed(piece)
    summary = await capture.close()
    assert (tmp_path / "spool.log").read_text() == "".join(line + "\n" for line in stored)
    assert summary.line_count == len(stored)
    return stored


async def test_secret_straddling_the_line_cut_is_masked(tmp_path: Path) -> None:
    raw = SECRET.encode()
    for offset in range(1, len(raw)):
        line = b"x" * (MAX_LINE_BYTES - offset) + raw + b" tail\n"
        stored = await _capture(tmp_path, [line], [SECRET])
        assert SECRET not in "".join(stored), offset
        assert "".join(stored) == "x" * (MAX_LINE_BYTES - offset) + "*** tail"
        assert all(len(x.encode()) <= MAX_LINE_BYTES for x in stored)


async def test_every_chunk_boundary_inside_a_secret(tmp_path: Path) -> None:
    """The secret straddles the 64 KiB cut at each offset, and the pipe splits the stream at
    each offset of the secret too; and an endless line without a newline, the same."""
    raw = SECRET.encode()
    for offset in range(0, len(raw) + 1, 3):
        start = MAX_LINE_BYTES - offset
        for newline in (b"\n", b""):
            data = b"x" * start + raw + b"y" * 10 + newline
            for split in range(start, start + len(raw) + 1):
                stored = await _capture(tmp_path, [data[:split], data[split:]], [SECRET])
                assert SECRET not in "".join(stored), (offset, split)
                assert "".join(stored) == "x" * start + "***" + "y" * 10


async def test_any_chunking_stores_what_whole_lines_would(tmp_path: Path) -> None:
    """Random output cut at random places: the stored lines equal masking each whole line."""
    rng = random.Random(7)
    secrets = [SECRET, "hunter22hunter22", MULTILINE]
    forms = [
        SECRET,
        SECRET.encode().hex(),
        quote_plus(SECRET),
        "hunter22hunter22",
        "MIIEpAIBAAKCAQEA",
    ]
    lines = []
    for i in range(3000):
        words = [rng.choice(["ok", "é", "build", "x" * rng.randint(0, 90)]) for _ in range(6)]
        if i % 7 == 0:
            words.insert(rng.randint(0, 6), rng.choice(forms))
        lines.append(" ".join(words))
    data = "".join(line + "\n" for line in lines).encode()
    pieces, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 2, 5, 17, 300, 4096, 70_000])
        pieces.append(data[pos : pos + size])
        pos += size
    stored = await _capture(tmp_path, pieces, secrets)
    masker = SecretMasker(secrets)
    assert stored == [masker.mask(line) for line in lines]
    assert not any(form in line for form in forms for line in stored)


def test_overlong_lines_are_cut_between_characters() -> None:
    splitter = LineSplitter()
    text = "é" * MAX_LINE_BYTES  # two bytes each: a cut at 64 KiB would fall mid-character
    pieces = splitter.feed(text.encode() + b"\n")
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert all(len(p.encode()) <= MAX_LINE_BYTES for p in pieces)
    endless = LineSplitter().feed(("€" * MAX_LINE_BYTES).encode())
    assert endless and "\ufffd" not in "".join(endless)
