"""Stage log capture with secrets masked, beside the same capture with nothing to mask.

50 MB of build output through `LogCapture` (masking, line cutting, chunking, spooling), three
shapes: ~100-byte lines in 64 KiB pipe reads, one 50 MB line without a newline, and ~100-byte
lines written 16 bytes at a time (a progress bar). Ten secrets, one in every 1000 lines.
`python -m bench.bench_log_masking` runs it without Temporal.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from bench.context import BenchContext, BenchRow
from core.runs.log_capture import LogCapture, LogChunk
from forgeline.secret_masking import SecretMasker

LOG_BYTES = 50_000_000
SECRETS = [f"sk-live-{i:02d}-Zq8XwP4mT9aLr3Kc/+=" for i in range(10)]
WORDS = ["Compiling", "crate", "src/main.rs", "ok", "0x1f3a", "deadbeef", "WARN", "a1b2c3d4e5f6"]


def build_output(total: int, *, one_line: bool = False) -> bytes:
    rng = random.Random(1)
    parts: list[str] = []
    size = 0
    while size < total:
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        if len(parts) % 1000 == 0:
            line += " token=" + SECRETS[len(parts) % len(SECRETS)]
        parts.append(line)
        size += len(line) + 1
    return ((" " if one_line else "\n").join(parts) + "\n").encode()


async def capture_seconds(data: bytes, secrets: list[str], read_size: int) -> float:
    async def sink(chunk: LogChunk) -> None:
        return None

    with tempfile.TemporaryDirectory() as scratch:
        capture = LogCapture(sink, SecretMasker(secrets), Path(scratch) / "spool.log")
        started = time.perf_counter()
        for pos in range(0, len(data), read_size):
            await capture.feed(data[pos : pos + read_size])
        await capture.close()
        return time.perf_counter() - started


async def run(ctx: BenchContext | None = None) -> list[BenchRow]:
    rows: list[BenchRow] = []
    shapes = (
        ("lines, 64 KiB reads", build_output(LOG_BYTES), 65_536),
        ("one 50 MB line", build_output(LOG_BYTES, one_line=True), 65_536),
        ("lines, 16-byte writes", build_output(LOG_BYTES // 10), 16),
    )
    for name, data, read_size in shapes:
        plain = await capture_seconds(data, [], read_size)
        masked = await capture_seconds(data, SECRETS, read_size)
        mb = len(data) / 1e6
        rows.append(
            BenchRow(
                f"log capture, {name}",
                f"{mb:.0f} MB with 10 secrets",
                masked * 1000,
                baseline=plain * 1000,
                note=f"{mb / masked:.0f} MB/s masked, {mb / plain:.0f} MB/s unmasked",
            )
        )
    return rows


if __name__ == "__main__":
    for row in asyncio.run(run()):
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"{row.bench:40s} {row.metric:22s} {row.value:9.0f} ms  {ratio:7s} {row.note}")
