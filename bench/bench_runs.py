"""Pipeline runs: N no-op stages (N = 1, 5, 20) against the bare chain of N activities and
against a chain of N activities that each run the same sandboxed no-op process
(bench/sandboxed_chain.py), the three interleaved run by run, then 200 concurrent runs
(runs/minute, p95) against 200 concurrent chains of each kind. A profile of one run of 1 and
of 20 stages beside a bare chain says where the overhead goes (bench/run_profile.py: histories,
and the statements sent to PostgreSQL by kind).

Run alone: `uv run python -m bench.run --only runs --skip-baseline`.
Repeats: FORGELINE_BENCH_RUNS_REPEATS (10); concurrent runs: FORGELINE_BENCH_RUNS_CONCURRENT (200);
the profile alone: FORGELINE_BENCH_RUNS_PROFILE_ONLY=1.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.runs.registration import WORKFLOWS, pipeline_activities
from bench.baseline import measure_chain, percentile, run_chain
from bench.chain_workflow import ChainWorkflow, increment
from bench.context import BenchContext, BenchRow
from bench.run_fixtures import create_run, make_pipeline, one_run, start_and_finish
from bench.run_profile import (
    CpuMeter,
    StageTimers,
    StatementCounter,
    chain_workflow_id,
    history_profile,
    statements_line,
)
from bench.sandboxed_chain import sandboxed_chains
from db.models.accounts import Organization
from db.session import create_engine, create_session_maker, session_scope
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.runners import create_runner

REPEATS = int(os.environ.get("FORGELINE_BENCH_RUNS_REPEATS", "10"))
CONCURRENT = int(os.environ.get("FORGELINE_BENCH_RUNS_CONCURRENT", "200"))
CONCURRENT_ACTIVITIES = int(os.environ.get("FORGELINE_BENCH_RUNS_ACTIVITIES", "40"))
# Only the profile (histories, statements), none of the timed rounds.
PROFILE_ONLY = os.environ.get("FORGELINE_BENCH_RUNS_PROFILE_ONLY") == "1"


def log(message: str) -> None:
    print(f"  runs: {message}", file=sys.stderr, flush=True)


async def interleaved(
    client: Client,
    n: int,
    run_once: Callable[[], Awaitable[float]],
    meter: CpuMeter,
    sandboxed: Callable[[int], Awaitable[float]],
) -> tuple[list[float], ...]:
    """REPEATS pipeline runs, REPEATS bare chains of n activities and REPEATS chains of n
    sandboxed no-op activities, in turn (after two warm-ups of each); the bare chain's worker
    runs in this process with the SDK's defaults. Also the CPU milliseconds each used (`meter`:
    this process, Temporal, PostgreSQL). Returns runs, chains, sandboxed chains, then their CPU."""
    queue = f"bench-chain-{uuid.uuid4()}"
    samples: tuple[list[float], ...] = ([], [], [], [], [], [])
    async with Worker(client, task_queue=queue, workflows=[ChainWorkflow], activities=[increment]):
        for i in range(REPEATS + 2):
            marks = [meter.seconds()]
            chain_ms = await run_chain(client, n, queue)
            marks.append(meter.seconds())
            boxed_ms = await sandboxed(n)
            marks.append(meter.seconds())
            run_ms = await run_once()
            marks.append(meter.seconds())
            if i >= 2:
                cpu = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
                for into, value in zip(
                    samples, (run_ms, chain_ms, boxed_ms, cpu[2], cpu[0], cpu[1]), strict=True
                ):
                    into.append(value)
    return samples


async def profile(
    client: Client,
    session_maker,
    settings: Settings,
    org_id: uuid.UUID,
    queue: str,
    counter: StatementCounter,
    timers: StageTimers,
) -> None:
    """One run of 1 and of 20 stages beside a bare chain of as many: their histories, and the
    statements the run sent (per stage = the difference / 19)."""
    chain_queue = f"bench-chain-{uuid.uuid4()}"
    per_run = {}
    async with Worker(
        client, task_queue=chain_queue, workflows=[ChainWorkflow], activities=[increment]
    ):
        for n in (1, 20):
            pipeline_id = await make_pipeline(session_maker, org_id, n)
            run_row = await create_run(session_maker, settings, org_id, pipeline_id)
            counter.take()
            timers.take()  # only this run's parts and pool misses
            counter.on = timers.on = True
            await start_and_finish(client, run_row, queue)
            counter.on = timers.on = False
            log(f"profile N={n} run:   " + timers.take())
            per_run[n] = counter.take()
            assert run_row.workflow_id is not None
            log(
                f"profile N={n} run:   "
                + (await history_profile(client, run_row.workflow_id)).line()
            )
            chain_id = await chain_workflow_id(client, n, chain_queue)
            log(f"profile N={n} chain: " + (await history_profile(client, chain_id)).line())
            log(f"profile N={n} run:   " + statements_line(*per_run[n], runs=1))
    (c1, e1), (c20, e20) = per_run[1], per_run[20]
    stage = c20 - c1
    log(
        "profile per stage: "
        + statements_line(stage, {k: e20.get(k, 0) - e1.get(k, 0) for k in stage}, runs=19)
    )


async def run(ctx: BenchContext) -> list[BenchRow]:
    url = await ctx.database_url()
    settings = Settings(
        data_dir=ctx.work_dir / "runs-data",
        database_url=url,
        temporal_address=ctx.temporal_address,
        log_level="WARNING",
        db_pool_size=20,
        db_max_overflow=20,
    )
    engine = create_engine(settings, url=url)
    counter = StatementCounter(engine)
    session_maker = create_session_maker(engine)
    org_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Organization(
                id=org_id,
                name="bench",
                slug=f"bench-{org_id.hex[:8]}",
                settings={"concurrent_builds": 1000},
            )
        )
    queue = f"bench-runs-{uuid.uuid4()}"
    # Control and build activities on one worker: its queue is the runs' build queue.
    deps = WorkerDeps(
        settings.model_copy(update={"build_task_queue": queue}), session_maker, ctx.client
    )
    # Isolation on, as `make run` runs stages.
    runner = create_runner(settings.model_copy(update={"container_runner": "sandbox"}))
    activities, _ = pipeline_activities(deps, runner=runner)
    timers = StageTimers(
        next(
            getattr(a, "__self__", None)
            for a in activities
            if getattr(a, "__name__", "") == "execute_stage"
        )
    )
    activities = [
        timers.activity(a) if getattr(a, "__name__", "") == "execute_stage" else a
        for a in activities
    ]
    rows: list[BenchRow] = []
    meter = CpuMeter(ctx.work_dir)
    # As worker.py runs them (FORGELINE_WORKFLOW_SANDBOX); the baseline chain keeps SDK defaults.
    where = "inside" if settings.workflow_sandbox else "outside"
    log(f"pipeline runs {where} the workflow sandbox")
    try:
        async with (
            Worker(
                ctx.client,
                task_queue=queue,
                workflows=WORKFLOWS,
                activities=activities,
                # Bounded, as DESIGN.md advises: past this the worker's event loop (process
                # spawns, DB writes) starves heartbeats; queued activities wait in Temporal instead.
                max_concurrent_activities=CONCURRENT_ACTIVITIES,
                workflow_runner=workflow_runner(settings.workflow_sandbox),
            ),
            sandboxed_chains(
                ctx.client, runner, ctx.work_dir / "chain-workspaces", CONCURRENT_ACTIVITIES
            ) as boxed,
        ):
            for n in (1, 5, 20):
                if PROFILE_ONLY:
                    break
                pipeline_id = await make_pipeline(session_maker, org_id, n)

                async def run_once(pipeline_id: uuid.UUID = pipeline_id) -> float:
                    return await one_run(
                        ctx.client, session_maker, settings, org_id, pipeline_id, queue
                    )

                # Interleaved with the bare chain of N activities, one of each in turn, so both
                # see the same machine load (it is shared, and moves by 2x within minutes).
                runs, chains, boxes, run_cpu, chain_cpu, box_cpu = await interleaved(
                    ctx.client, n, run_once, meter, boxed.one
                )
                p50 = statistics.median(runs)
                chain_p50, box_p50 = statistics.median(chains), statistics.median(boxes)
                log(
                    f"N={n}: p50 {p50:.0f} ms vs chain {chain_p50:.0f} ms vs sandboxed chain "
                    f"{box_p50:.0f} ms (interleaved)"
                )
                cpu, chain_cpu_p50 = statistics.median(run_cpu), statistics.median(chain_cpu)
                box_cpu_p50 = statistics.median(box_cpu)
                log(
                    f"N={n}: CPU {cpu:.0f} ms per run vs {chain_cpu_p50:.0f} ms per chain vs "
                    f"{box_cpu_p50:.0f} ms per sandboxed chain"
                )
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "latency p50 vs sandboxed chain",
                        p50,
                        baseline=box_p50,
                        note=f"chain of {n} activities each running `true` in the sandbox",
                    )
                )
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "CPU per run vs sandboxed chain",
                        cpu,
                        baseline=box_cpu_p50,
                        note="the same sandboxed process per activity",
                    )
                )
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "CPU per run p50",
                        cpu,
                        baseline=chain_cpu_p50,
                        note="worker + Temporal + PostgreSQL",
                    )
                )
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "latency p50",
                        p50,
                        baseline=chain_p50,
                        note=f"chain of {n} activities, interleaved",
                    )
                )
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "latency p95",
                        percentile(runs, 0.95),
                        baseline=percentile(chains, 0.95),
                    )
                )
                # Same activity count as the run: N stages + 2 bookkeeping steps (prepare with
                # the slot, finish; local activities in the run, regular ones in the chain).
                equal = await measure_chain(ctx.client, n + 2, 5, throughput_workflows=0)
                rows.append(
                    BenchRow(
                        f"pipeline run, {n} no-op stages (sandbox)",
                        "latency p50 vs N+2 chain",
                        p50,
                        baseline=equal.p50_ms,
                        note="same number of activities",
                    )
                )
            await profile(ctx.client, session_maker, settings, org_id, queue, counter, timers)
            if PROFILE_ONLY:
                return rows

            # Throughput: CONCURRENT runs of 5 stages in flight at once. Their rows are written
            # first, as the API (its own process in production) does before starting each run;
            # here it would share the worker's process and CPU. Timed like the latency rows and
            # the bare chains: from starting the workflows to their results.
            pipeline_id = await make_pipeline(session_maker, org_id, 5)
            burst = [
                await create_run(session_maker, settings, org_id, pipeline_id)
                for _ in range(CONCURRENT)
            ]
            started = time.perf_counter()
            cpu_started = meter.seconds()
            samples = await asyncio.gather(
                *(start_and_finish(ctx.client, run, queue) for run in burst)
            )
            elapsed = time.perf_counter() - started
            burst_cpu = meter.seconds() - cpu_started
            cpu_started = meter.seconds()
            boxed_elapsed = await boxed.burst(CONCURRENT, 5)
            boxed_cpu = meter.seconds() - cpu_started
        cpu_started = meter.seconds()
        chain_tp = await measure_chain(
            ctx.client, 5, 3, concurrency=CONCURRENT, throughput_workflows=CONCURRENT
        )
        chains_cpu = meter.seconds() - cpu_started
        log(
            f"{CONCURRENT} concurrent: CPU {burst_cpu:.1f} s for the runs vs {chains_cpu:.1f} s "
            "for the chains (their latency rounds included)"
        )
        per_minute = CONCURRENT / elapsed * 60
        boxed_per_minute = CONCURRENT / boxed_elapsed * 60
        log(
            f"{CONCURRENT} concurrent sandboxed chains: {boxed_per_minute:.0f}/min, "
            f"CPU {boxed_cpu:.1f} s"
        )
        base_per_minute = (chain_tp.throughput_wps or 0) * 60
        log(
            f"{CONCURRENT} concurrent: {per_minute:.0f} runs/min "
            f"vs {base_per_minute:.0f} chains/min"
        )
        rows.append(
            BenchRow(
                f"{CONCURRENT} concurrent runs, 5 stages (sandbox)",
                "throughput",
                per_minute,
                unit="runs/min",
                baseline=base_per_minute,
                note="bare 5-chains/min",
            )
        )
        rows.append(
            BenchRow(
                f"{CONCURRENT} concurrent runs, 5 stages (sandbox)",
                "throughput vs sandboxed chains",
                per_minute,
                unit="runs/min",
                baseline=boxed_per_minute,
                note="5-chains/min, each activity `true` in the sandbox",
            )
        )
        rows.append(
            BenchRow(
                f"{CONCURRENT} concurrent runs, 5 stages (sandbox)",
                "CPU vs sandboxed chains",
                burst_cpu,
                unit="s",
                baseline=boxed_cpu,
                note=f"bare chains: {chains_cpu:.1f} s (their latency rounds included)",
            )
        )
        rows.append(
            BenchRow(
                f"{CONCURRENT} concurrent runs, 5 stages (sandbox)",
                "end-to-end p95",
                percentile(list(samples), 0.95),
                note=f"p50 {statistics.median(samples):.0f} ms",
            )
        )
    finally:
        await engine.dispose()
    return rows
