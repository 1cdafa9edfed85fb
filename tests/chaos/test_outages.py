"""Runs and deployments through a bad day: the control worker and the build host SIGKILLed and
restarted, Temporal stopped for longer than a stage's heartbeat timeout, PostgreSQL stopped for
longer than 15 s, all while runs build and deployments go live, and the API is polled throughout.

Then every run must be terminal with its true result, one stage_executions row per attempt
Temporal started (none missing, none twice), every attempt's numbered log lines contiguous, one
usage record per run, no build-slot claim left, the last requested deployment of each environment
live, no API answer a 5xx other than 503, and a log followed over SSE through each outage equal to
the stored one. Counts are fixed and every wait is bounded; the counts are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from db.session import create_engine, create_session_maker
from tests.chaos.invariants import (
    check_api_view,
    check_attempts,
    check_deployments,
    check_followed_logs,
    check_runs,
    check_usage_and_claims,
)
from tests.chaos.scenario import (
    API_TIMEOUT,
    CONCURRENT_BUILDS,
    COUNT_LINES,
    FAIL_EXIT,
    FAIL_LINES,
    POSTGRES_OUTAGE,
    TAIL_LINES,
    TEMPORAL_OUTAGE,
    ApiRecorder,
    Scenario,
    during,
    numbered,
    poll_api,
)
from tests.chaos.stack import ChaosStack, remove_tree
from tests.deployments.helpers import make_environment, org_sources
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


async def test_runs_and_deployments_survive_kills_and_outages() -> None:
    root = Path(tempfile.mkdtemp(prefix="fl-chaos-"))
    stack = ChaosStack(root)
    engine: AsyncEngine | None = None
    stop = asyncio.Event()
    pollers: list[asyncio.Task[None]] = []
    scenario: Scenario | None = None
    started = time.monotonic()
    try:
        await stack.start()
        settings = stack.settings
        engine = create_engine(settings)
        session_maker: async_sessionmaker[Any] = create_session_maker(engine)
        org = await make_org(session_maker)
        good = await make_pipeline(
            session_maker,
            org.org_id,
            [stage("count", numbered(COUNT_LINES), 0), stage("tail", numbered(TAIL_LINES), 1)],
            concurrent_builds=CONCURRENT_BUILDS,
        )
        bad = await make_pipeline(
            session_maker,
            org.org_id,
            [
                stage("count", numbered(COUNT_LINES), 0),
                stage("fail", numbered(FAIL_LINES, f"; exit {FAIL_EXIT}"), 1, retry_count=0),
            ],
        )
        _, env_a = await make_environment(session_maker, org.org_id, provider="static")
        _, env_b = await make_environment(session_maker, org.org_id, provider="static")
        http = httpx.AsyncClient(base_url=stack.api_url, headers=org.headers, timeout=API_TIMEOUT)
        scenario = Scenario(
            stack=stack,
            engine=engine,
            api=ApiRecorder(http, phase="steady"),
            org_id=org.org_id,
            pipelines={"good": good, "bad": bad},
            environments={"a": env_a, "b": env_b},
            sources=org_sources(settings, org.org_id),
        )
        pollers = [asyncio.create_task(poll_api(scenario, stop, k)) for k in range(2)]
        outages: dict[str, float] = {}
        timeline: list[str] = []

        # Wave 1: the build host, then the control worker, SIGKILLed mid-stage and restarted.
        since = await scenario.db_now()
        await scenario.trigger_runs(1)
        await scenario.wait_mid_stage(since, "killing the build host")
        outages["build host"] = await during(
            "build host killed", scenario.api, timeline, stack.kill_and_restart_build_host
        )
        since = await scenario.db_now()
        await scenario.wait_mid_stage(since, "killing the control worker")
        await scenario.deploy_wave(1)
        outages["control worker"] = await during(
            "control worker killed", scenario.api, timeline, stack.kill_and_restart_worker
        )

        # Wave 2: Temporal down for longer than a stage's heartbeat timeout.
        since = await scenario.db_now()
        await scenario.trigger_runs(2)
        await scenario.wait_mid_stage(since, "stopping Temporal")
        await scenario.deploy_wave(2)

        async def temporal_outage() -> None:
            await stack.stop_temporal()
            await asyncio.sleep(TEMPORAL_OUTAGE / 2)
            await scenario.trigger_during_outage()
            await asyncio.sleep(TEMPORAL_OUTAGE / 2)
            await stack.start_temporal()

        outages["Temporal"] = await during("Temporal down", scenario.api, timeline, temporal_outage)

        # Wave 3: PostgreSQL down for longer than 15 s.
        since = await scenario.db_now()
        await scenario.trigger_runs(3)
        await scenario.wait_mid_stage(since, "stopping PostgreSQL")
        await scenario.deploy_wave(3)

        async def postgres_outage() -> None:
            await stack.stop_postgres()
            await asyncio.sleep(POSTGRES_OUTAGE / 2)
            await scenario.trigger_during_outage()
            await asyncio.sleep(POSTGRES_OUTAGE / 2)
            await stack.start_postgres()
            # The test's own pooled connections died with the server.
            await engine.dispose()

        outages["PostgreSQL"] = await during(
            "PostgreSQL down", scenario.api, timeline, postgres_outage
        )

        settled = await scenario.settle()
        stop.set()
        await asyncio.gather(*pollers)

        problems: list[str] = []
        run_statuses = await check_runs(scenario, problems)
        attempts, retried, reused = await check_attempts(scenario, problems)
        await check_usage_and_claims(scenario, problems)
        await check_api_view(scenario, problems)
        followed = await check_followed_logs(scenario, problems)
        deployment_statuses = await check_deployments(scenario, problems)
        problems.extend(scenario.api.bad)
        for process in (stack.worker, stack.build_host, stack.api):
            assert process is not None
            if not process.alive():
                problems.append(f"{process.name} is not running at the end")
        await http.aclose()

        by_phase: dict[str, Counter[str]] = defaultdict(Counter)
        by_label: dict[str, Counter[str]] = defaultdict(Counter)
        for (phase, label, code), count in scenario.api.codes.items():
            by_phase[phase][code] += count
            by_label[label][code] += count
        print(f"\nchaos scenario: {time.monotonic() - started:.0f}s, settled in {settled:.0f}s")
        print(
            f"  runs by status: {dict(run_statuses)} (expected {expected_counts(scenario)}, "
            f"plus {scenario.outage_triggers['503']} refused with 503 during an outage)"
        )
        print(
            f"  stage attempts: {attempts} rows, {retried} beyond the first attempt, "
            f"{reused} Temporal retries that reused a recorded outcome"
        )
        print(f"  deployments in request order: {deployment_statuses}")
        print(f"  chaos: {dict(stack.events)}; down for {', '.join(_secs(outages))}")
        print(f"  restarts: {restarts(stack)}; timeline (UTC): {'; '.join(timeline)}")
        for phase, codes in sorted(by_phase.items()):
            print(f"  API during {phase}: {dict(sorted(codes.items()))}")
        for label, codes in sorted(by_label.items()):
            took, when, status = scenario.api.slowest.get(label, (0.0, "", 0))
            print(
                f"  API {label}: {dict(sorted(codes.items()))}; slowest answer {status} in "
                f"{took:.1f}s ({when})"
            )
        print(f"  runs triggered during outages: {dict(scenario.outage_triggers)}")
        print(f"  SSE followers: {len(scenario.followers)}, connections answered {dict(followed)}")
        if problems:
            print("  the processes' last errors and waits for the database:")
            for process in (stack.worker, stack.build_host, stack.api):
                assert process is not None
                for needle in (" ERROR ", "database unavailable"):
                    for line in process.log_lines(needle, 4):
                        print(f"    {process.name}: {line[:400]}")
        assert not problems, f"{len(problems)} invariants broken:\n" + "\n".join(problems[:60])
    finally:
        stop.set()
        for task in [*pollers, *(scenario.followers if scenario else [])]:
            task.cancel()
        if engine is not None:
            await engine.dispose()
        await asyncio.to_thread(stack.close)
        remove_tree(root)


def expected_counts(scenario: Scenario) -> dict[str, int]:
    return dict(Counter(run.expected for run in scenario.runs))


def restarts(stack: ChaosStack) -> dict[str, int]:
    parts = {p.name: p.starts - 1 for p in (stack.worker, stack.build_host, stack.api) if p}
    parts["temporal"] = stack.events["Temporal stopped"]
    parts["postgres"] = stack.events["PostgreSQL stopped"]
    return parts


def _secs(outages: dict[str, float]) -> list[str]:
    return [f"{name} {seconds:.0f}s" for name, seconds in outages.items()]
