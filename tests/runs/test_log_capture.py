"""Log capture: line numbering, chunking, masking of secrets in every form, large logs."""

from __future__ import annotations

import base64
from pathlib import Path

from activities.pipelines.log_capture import (
    MAX_LINE_BYTES,
    LineSplitter,
    LogCapture,
    LogChunk,
    SecretMasker,
)


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
