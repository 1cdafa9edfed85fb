"""The workload of the chaos scenario: fixed counts of runs and deployments, the API answers
recorded by phase, logs followed over SSE and the API polled while processes die."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.chaos.stack import ChaosStack
from tests.deployments.images import write_context
from workflows.runs_models import PipelineRunInput

# Fixed counts: three waves of runs, one in FAILING_EVERY on the pipeline whose last stage fails.
RUNS_PER_WAVE = 10
FAILING_EVERY = 5
# Deployments (to two static environments) requested in turn right before the control worker is
# killed, Temporal stopped, PostgreSQL stopped: in flight when it happens.
DEPLOYMENT_WAVES: list[list[str]] = [["a", "b", "a"], ["b", "a"], ["a", "b"]]
COUNT_LINES = 20
TAIL_LINES = 5
FAIL_LINES = 2
FAIL_EXIT = 3
STAGE_LINES = {"count": COUNT_LINES, "tail": TAIL_LINES, "fail": FAIL_LINES}
# The API starts runs with the default heartbeat; a stage's heartbeat timeout is 3x that.
HEARTBEAT_TIMEOUT = PipelineRunInput.model_fields["heartbeat_seconds"].default * 3
TEMPORAL_OUTAGE = HEARTBEAT_TIMEOUT + 5
POSTGRES_OUTAGE = 17.0
CONCURRENT_BUILDS = 4
MID_STAGE_TIMEOUT = 90.0
FOLLOW_TIMEOUT = 200.0
SETTLE_TIMEOUT = 150.0
API_TIMEOUT = 30.0
POLL_INTERVAL = 0.3

RUN_FINISHED = ("success", "failed", "cancelled")
DEPLOYMENT_FINISHED = ("active", "superseded", "failed", "rolled_back", "rejected", "cancelled")
LINE = re.compile(r"^line-(\d+)$")
OK_SSE = ("200", "503")


def numbered(lines: int, then: str = "") -> str:
    script = f'i=0; while [ $i -lt {lines} ]; do echo "line-$i"; i=$((i+1)); sleep 0.1; done'
    return script + then


@dataclass
class TrackedRun:
    id: str
    number: int
    pipeline: str  # "good" or "bad"

    @property
    def expected(self) -> str:
        return "success" if self.pipeline == "good" else "failed"


@dataclass
class ApiRecorder:
    """Every API answer by phase and status; what must never happen, with its evidence."""

    http: httpx.AsyncClient
    phase: str = "setup"
    # (phase, what was asked, status code or transport error) -> count
    codes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    # label -> (seconds, phase, status) of its slowest answer
    slowest: dict[str, tuple[float, str, int]] = field(default_factory=dict)

    async def call(self, method: str, url: str, label: str, **kw: Any) -> httpx.Response | None:
        phase = self.phase
        started = time.monotonic()
        try:
            response = await self.http.request(method, url, **kw)
        except httpx.TimeoutException:
            self.codes[(phase, label, "timeout")] += 1
            self.bad.append(f"{phase}: {method} {label} timed out after {API_TIMEOUT}s")
            return None
        except httpx.HTTPError as exc:
            self.codes[(phase, label, type(exc).__name__)] += 1
            self.bad.append(f"{phase}: {method} {label} failed: {exc!r}")
            return None
        code = response.status_code
        self.codes[(phase, label, str(code))] += 1
        took = time.monotonic() - started
        self.slowest[label] = max(self.slowest.get(label, (0.0, "", 0)), (took, phase, code))
        if code >= 500 and code != 503:
            self.bad.append(
                f"{phase}: {method} {label} answered {code} after {took:.1f}s: "
                f"{response.text[:300]}"
            )
        return response


@dataclass
class Scenario:
    stack: ChaosStack
    engine: AsyncEngine
    api: ApiRecorder
    org_id: uuid.UUID
    pipelines: dict[str, uuid.UUID]
    environments: dict[str, uuid.UUID]
    sources: Path
    runs: list[TrackedRun] = field(default_factory=list)
    # Per environment, deployment IDs in request order.
    deployments: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    versions: dict[str, str] = field(default_factory=dict)
    # Runs triggered while a service was down, by the answer they got.
    outage_triggers: Counter[str] = field(default_factory=Counter)
    followers: list[asyncio.Task[FollowedLog]] = field(default_factory=list)

    async def query(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def db_now(self) -> Any:
        return (await self.query("SELECT now()"))[0][0]

    async def trigger_runs(self, wave: int) -> None:
        for i in range(RUNS_PER_WAVE):
            kind = "bad" if (len(self.runs) + 1) % FAILING_EVERY == 0 else "good"
            r = await self.api.call(
                "POST",
                f"/v1/pipelines/{self.pipelines[kind]}/runs",
                "trigger run",
                json={"trigger": "api"},
            )
            assert r is not None and r.status_code == 202, (
                f"wave {wave}: triggering run {i} with every service up answered "
                f"{r.status_code if r is not None else 'nothing'}: {r.text if r else ''}"
            )
            body = r.json()
            self.runs.append(TrackedRun(body["id"], body["run_number"], kind))

    async def deploy(self, wave: int, env_key: str) -> None:
        version = f"{env_key}-{len(self.deployments[env_key]) + 1}"
        site = write_context(self.sources / version, None, f"chaos site {version}")
        r = await self.api.call(
            "POST",
            f"/v1/environments/{self.environments[env_key]}/deployments",
            "create deployment",
            json={"version": version, "source_dir": str(site), "output_dir": "www"},
        )
        assert r is not None and r.status_code == 202, (
            f"wave {wave}: deploying {version} with every service up answered "
            f"{r.status_code if r is not None else 'nothing'}: {r.text if r else ''}"
        )
        self.deployments[env_key].append(r.json()["id"])
        self.versions[r.json()["id"]] = version

    async def deploy_wave(self, wave: int) -> None:
        for env_key in DEPLOYMENT_WAVES[wave - 1]:
            await self.deploy(wave, env_key)

    async def trigger_during_outage(self) -> None:
        """A run asked for while a service is down: accepted (then it must end with its true
        result) or refused with 503 (then no run is left behind unfinished)."""
        r = await self.api.call(
            "POST",
            f"/v1/pipelines/{self.pipelines['good']}/runs",
            "trigger run",
            json={"trigger": "api"},
        )
        if r is None:
            return
        self.outage_triggers[str(r.status_code)] += 1
        if r.status_code == 202:
            body = r.json()
            self.runs.append(TrackedRun(body["id"], body["run_number"], "good"))
        elif r.status_code != 503:
            self.api.bad.append(
                f"{self.api.phase}: a run triggered during the outage answered {r.status_code}: "
                f"{r.text[:300]}"
            )

    async def wait_mid_stage(self, since: Any, what: str) -> str:
        """Until an attempt of a `count` stage started after `since` has logged line 5; its run
        is then followed over SSE through what comes next."""
        deadline = time.monotonic() + MID_STAGE_TIMEOUT
        while True:
            rows = await self.query(
                """
                SELECT se.run_id::text FROM stage_executions se
                JOIN pipeline_runs r ON r.id = se.run_id
                WHERE r.organization_id = :org AND se.stage_name = 'count'
                  AND se.status = 'running' AND se.created_at >= :since
                  AND EXISTS (SELECT 1 FROM stage_log_chunks c WHERE c.stage_execution_id = se.id
                              AND c.first_line + c.line_count > 5)
                LIMIT 1
                """,
                org=self.org_id,
                since=since,
            )
            if rows:
                run_id: str = rows[0][0]
                self.followers.append(
                    asyncio.create_task(follow_stage_log(self.api.http, run_id, "count"))
                )
                return run_id
            assert time.monotonic() < deadline, (
                f"before {what}: no count stage started since {since} logged line 5 in "
                f"{MID_STAGE_TIMEOUT}s"
            )
            await asyncio.sleep(0.2)

    async def settle(self) -> float:
        """Until no run or deployment of the organization is unfinished (bounded)."""
        started = time.monotonic()
        while time.monotonic() - started < SETTLE_TIMEOUT:
            open_runs = await self.query(
                "SELECT count(*) FROM pipeline_runs WHERE organization_id = :org "
                "AND NOT status = ANY(:done)",
                org=self.org_id,
                done=list(RUN_FINISHED),
            )
            open_deployments = await self.query(
                "SELECT count(*) FROM deployments WHERE organization_id = :org "
                "AND NOT status = ANY(:done)",
                org=self.org_id,
                done=list(DEPLOYMENT_FINISHED),
            )
            if open_runs[0][0] == 0 and open_deployments[0][0] == 0:
                break
            await asyncio.sleep(1.0)
        return time.monotonic() - started

    def poll_targets(self) -> list[tuple[str, str]]:
        """(url, label) of the reads polled during the chaos."""
        targets = [("/healthz", "/healthz")]
        targets.append((f"/v1/pipelines/{self.pipelines['good']}/runs?limit=20", "list runs"))
        if self.runs:
            latest = self.runs[-1].id
            targets.append((f"/v1/runs/{latest}", "run detail"))
            targets.append((f"/v1/runs/{latest}/stages/count/logs", "stage log"))
            targets.append((f"/v1/runs/{self.runs[0].id}", "run detail"))
        for ids in list(self.deployments.values()):
            if ids:
                targets.append((f"/v1/deployments/{ids[-1]}", "deployment detail"))
        return targets


@dataclass
class FollowedLog:
    run_id: str
    stage: str
    lines: list[tuple[int, int, str]] = field(default_factory=list)  # (attempt, line, text)
    end: str | None = None
    answers: Counter[str] = field(default_factory=Counter)


async def follow_stage_log(http: httpx.AsyncClient, run_id: str, stage: str) -> FollowedLog:
    """A stage's log followed over SSE as a client does: when the stream breaks or is refused,
    it reconnects with Last-Event-ID, until the `end` event (or FOLLOW_TIMEOUT)."""
    log = FollowedLog(run_id, stage)
    last_id: str | None = None
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while log.end is None and time.monotonic() < deadline:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with http.stream(
                "GET",
                f"/v1/runs/{run_id}/stages/{stage}/logs",
                params={"follow": "true"},
                headers=headers,
                timeout=httpx.Timeout(API_TIMEOUT, read=60),
            ) as response:
                log.answers[str(response.status_code)] += 1
                if response.status_code != 200:
                    await asyncio.sleep(1.0)
                    continue
                event: dict[str, str] = {}
                async for raw in response.aiter_lines():
                    if raw:
                        key, _, value = raw.partition(":")
                        event[key] = value.removeprefix(" ")
                        continue
                    kind, event_id = event.get("event"), event.get("id")
                    if kind == "line" and event_id:
                        attempt, _, number = event_id.partition(":")
                        log.lines.append((int(attempt), int(number), event.get("data", "")))
                    if kind == "end":
                        log.end = event.get("data")
                        break
                    if event_id:
                        last_id = event_id
                    event = {}
        except httpx.HTTPError as exc:
            log.answers[type(exc).__name__] += 1
            await asyncio.sleep(1.0)
    return log


async def poll_api(scenario: Scenario, stop: asyncio.Event, offset: int) -> None:
    for n in itertools.count(offset):
        if stop.is_set():
            return
        targets = scenario.poll_targets()
        url, label = targets[n % len(targets)]
        await scenario.api.call("GET", url, label)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_INTERVAL)


async def during(
    phase: str, api: ApiRecorder, timeline: list[str], action: Callable[[], Awaitable[None]]
) -> float:
    api.phase = phase
    started = time.monotonic()
    timeline.append(f"{utc_clock()} {phase}")
    try:
        await action()
    finally:
        api.phase = "steady"
        timeline.append(f"{utc_clock()} back up after {phase}")
    return time.monotonic() - started


def utc_clock() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())
