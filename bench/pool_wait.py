"""The sandbox pool alone: 20 no-op stages (`true`) 15 ms apart through `SandboxRunner` with the
default pool, 5 rounds after a 1 s pause each; wall time per round and the wait in `pool.take()`.

    uv run --frozen python -m bench.pool_wait [label]

Run it from each tree being compared, in turn (bench README, tenth pass).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxConfig, SandboxRunner

ROUNDS = 5
STAGES = 20
GAP_SECONDS = 0.015


def stage(root: Path, i: int) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-wait-{i}",
        script="true",
        workspace=root,
        root=root,
        timeout_seconds=30,
    )


async def discard(_: bytes) -> None:
    return None


async def main(label: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="fl-pool-wait-"))
    runner = SandboxRunner(SandboxConfig(state_dir=tmp / "state"))
    root = tmp / "ws"
    waits: list[float] = []
    try:
        await runner.run(stage(root, 0), discard)  # prepares the pool
        pool = runner.pool
        if pool is None:
            return f"{label}: no pool on this host"
        take = pool.take

        async def timed() -> object:
            started = time.perf_counter()
            try:
                return await take()
            finally:
                waits.append((time.perf_counter() - started) * 1000)

        pool.take = timed  # type: ignore[method-assign, assignment]
        rounds = []
        for _ in range(ROUNDS):
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            for i in range(STAGES):
                await runner.run(stage(root, i + 1), discard)
                await asyncio.sleep(GAP_SECONDS)
            rounds.append((time.perf_counter() - started) * 1000)
    finally:
        await runner.close()
        shutil.rmtree(tmp, ignore_errors=True)
    waits.sort()
    load = Path("/proc/loadavg").read_text().split()[0]
    return (
        f"{label}: rounds ms {' '.join(f'{r:.0f}' for r in rounds)} "
        f"median {statistics.median(rounds):.0f}; take wait p50 {statistics.median(waits):.1f} "
        f"p90 {waits[int(len(waits) * 0.9)]:.1f} max {waits[-1]:.1f} ms; "
        f"waits > 1 ms: {sum(w > 1 for w in waits)}/{len(waits)}; load {load}"
    )


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "pool")))
