"""Baseline: a bare Temporal chain of N trivial activities — latency and throughput.

Other benchmarks call `measure_chain` in the same run and print their figure as a ratio to it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.worker import Worker

from bench.chain_workflow import ChainInput, ChainWorkflow, increment


@dataclass(frozen=True)
class ChainResult:
    steps: int
    repeats: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    # Workflows completed per second with `concurrency` in flight (None when not measured).
    throughput_wps: float | None
    concurrency: int

    @property
    def per_step_ms(self) -> float:
        return self.p50_ms / max(self.steps, 1)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def run_chain(client: Client, steps: int, task_queue: str) -> float:
    """One chain of `steps` activities, start to result, in ms (a worker polls `task_queue`)."""
    started = time.perf_counter()
    await client.execute_workflow(
        ChainWorkflow.run,
        ChainInput(steps=steps),
        id=f"bench-chain-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    return (time.perf_counter() - started) * 1000


async def measure_chain(
    client: Client,
    n: int,
    repeats: int,
    *,
    concurrency: int = 50,
    throughput_workflows: int | None = None,
    warmup: int = 2,
) -> ChainResult:
    """p50/p95 end-to-end latency over `repeats` sequential runs, then throughput.

    Throughput starts `throughput_workflows` (default 2x concurrency; 0 skips it) chains with
    `concurrency` in flight. The worker runs in this process on a fresh task queue.
    """
    task_queue = f"bench-{uuid.uuid4()}"
    total = 2 * concurrency if throughput_workflows is None else throughput_workflows
    async with Worker(
        client, task_queue=task_queue, workflows=[ChainWorkflow], activities=[increment]
    ):
        for _ in range(warmup):
            await run_chain(client, n, task_queue)
        samples = [await run_chain(client, n, task_queue) for _ in range(repeats)]
        throughput: float | None = None
        if total > 0:
            gate = asyncio.Semaphore(concurrency)

            async def gated() -> None:
                async with gate:
                    await run_chain(client, n, task_queue)

            started = time.perf_counter()
            await asyncio.gather(*(gated() for _ in range(total)))
            throughput = total / (time.perf_counter() - started)
    return ChainResult(
        steps=n,
        repeats=repeats,
        p50_ms=statistics.median(samples),
        p95_ms=percentile(samples, 0.95),
        mean_ms=statistics.fmean(samples),
        throughput_wps=throughput,
        concurrency=concurrency,
    )
