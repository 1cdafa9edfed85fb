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
import contextlib
import itertools
import re
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from db.session import create_engine, create_session_maker
from tests.chaos.stack import ChaosStack, remove_tree
from tests.deployments.helpers import make_environment, org_sources
from tests.deployments.images import write_context
from tests.deployments.proxy import via_proxy
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage
from workflows.contracts.runs import EXECUTE_STAGE
from workflows.runs_models import PipelineRunInput, StageInput

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

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


async def stage_attempts_in_history(client: Client, workflow_id: str) -> dict[str, int]:
    """Per stage, the attempt number Temporal recorded for its stage activity (the last one it
    started): the stage_executions rows must be exactly attempts 1..that."""
    handle = client.get_workflow_handle(workflow_id)
    stages: dict[int, str] = {}
    attempts: dict[str, int] = {}
    last = None
    async for event in handle.fetch_history_events():
        last = event.event_type
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name != EXECUTE_STAGE.name:
                continue
            (inp,) = await client.data_converter.decode(list(attrs.input.payloads), [StageInput])
            stages[event.event_id] = inp.stage.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            name = stages.get(started.scheduled_event_id)
            if name is not None:
                attempts[name] = started.attempt
    if last != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        closing = EventType.Name(last) if last is not None else "no event"
        raise AssertionError(f"the run's workflow did not complete: its last event is {closing}")
    return attempts


async def check_runs(scenario: Scenario, problems: list[str]) -> Counter[str]:
    rows = await scenario.query(
        "SELECT id::text, run_number, status, error FROM pipeline_runs "
        "WHERE organization_id = :org",
        org=scenario.org_id,
    )
    by_id = {r[0]: r for r in rows}
    for run in scenario.runs:
        row = by_id.get(run.id)
        if row is None:
            problems.append(f"run {run.id} (#{run.number}) has no row")
        elif row[2] != run.expected:
            problems.append(
                f"run #{run.number} ({run.id}, {run.pipeline} pipeline) is {row[2]!r}, expected "
                f"{run.expected!r}; error={row[3]!r}"
            )
    tracked = {r.id for r in scenario.runs}
    refused = [row for row in rows if row[0] not in tracked]
    for row in refused:
        # A run whose workflow could not be started is closed as failed, never left queued.
        if row[2] != "failed":
            problems.append(
                f"run #{row[1]} ({row[0]}), refused with 503 while a service was down, is "
                f"{row[2]!r}: {row[3]!r}"
            )
    if len(refused) > scenario.outage_triggers["503"]:
        problems.append(
            f"{len(refused)} runs exist that no 202 answered, for "
            f"{scenario.outage_triggers['503']} triggers refused with 503: "
            f"{[(r[1], r[2], r[3]) for r in refused]}"
        )
    return Counter(row[2] for row in rows)


async def check_attempts(scenario: Scenario, problems: list[str]) -> tuple[int, int, int]:
    """Rows per attempt against Temporal's history; statuses; numbered log lines per attempt."""
    rows = await scenario.query(
        """
        SELECT se.run_id::text, se.stage_name, se.attempt, se.status, se.exit_code, se.error,
               se.id::text, se.log_line_count, se.log_object_key,
               to_char(se.created_at, 'HH24:MI:SS.MS'), to_char(se.finished_at, 'HH24:MI:SS.MS'),
               se.warnings
        FROM stage_executions se JOIN pipeline_runs r ON r.id = se.run_id
        WHERE r.organization_id = :org
        ORDER BY se.run_id, se.stage_name, se.attempt
        """,
        org=scenario.org_id,
    )
    chunks = await scenario.query(
        """
        SELECT c.stage_execution_id::text, c.seq, c.first_line, c.line_count, c.content
        FROM stage_log_chunks c JOIN stage_executions se ON se.id = c.stage_execution_id
        JOIN pipeline_runs r ON r.id = se.run_id WHERE r.organization_id = :org
        ORDER BY c.stage_execution_id, c.seq
        """,
        org=scenario.org_id,
    )
    logs: dict[str, list[Any]] = defaultdict(list)
    for chunk in chunks:
        logs[chunk[0]].append(chunk)
    attempts: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        attempts[(row[0], row[1])].append(row)
    assert scenario.stack.client is not None
    retried = reused = 0
    for run in scenario.runs:
        stages = ["count", "tail"] if run.pipeline == "good" else ["count", "fail"]
        try:
            history = await stage_attempts_in_history(
                scenario.stack.client, f"pipeline-run-{run.id}"
            )
        except Exception as exc:
            problems.append(f"run #{run.number} ({run.id}): {exc}")
            history = {}
        for name in stages:
            got = attempts.get((run.id, name), [])
            numbers = [r[2] for r in got]
            where = f"run #{run.number} ({run.id}) stage {name}"
            if not got:
                problems.append(f"{where}: no stage_executions row")
                continue
            retried += len(got) - 1
            if numbers != list(range(1, len(numbers) + 1)):
                problems.append(f"{where}: attempts {numbers} are not 1..n (missing or twice)")
            last = got[-1]
            started = history.get(name, max(numbers))
            # A retry of an attempt that ran to its end (its result lost with Temporal) returns
            # the recorded outcome without running or recording anything: no row of its own.
            ran_to_end = last[3] == "success" or last[4] is not None
            if started < max(numbers) or (started > max(numbers) and not ran_to_end):
                problems.append(
                    f"{where}: Temporal started attempt {started}, rows hold attempts "
                    f"{[(r[2], r[3], r[4], r[5]) for r in got]}"
                )
            reused += started > max(numbers)
            unfinished = [(r[2], r[3]) for r in got if r[3] not in ("success", "failed")]
            if unfinished:
                problems.append(f"{where}: attempts left unfinished: {unfinished}")
            want = "failed" if name == "fail" else "success"
            if last[3] != want:
                problems.append(
                    f"{where}: last attempt {last[2]} is {last[3]!r} (exit {last[4]}), expected "
                    f"{want!r}; error={last[5]!r}"
                )
            successes = [r[2] for r in got if r[3] == "success"]
            if want == "success" and len(successes) != 1:
                problems.append(f"{where}: {len(successes)} successful attempts {successes}")
            if name == "fail":
                ran = [r[2] for r in got if r[4] == FAIL_EXIT]
                if ran != [last[2]]:
                    problems.append(
                        f"{where}: the failing command (exit {FAIL_EXIT}, no retries) finished in "
                        f"attempts {ran}, expected only in the last one ({last[2]})"
                    )
            for row in got:
                check_log(f"{where} attempt {row[2]} ({row[3]})", row, logs[row[6]], problems)
    return len(rows), retried, reused


def check_log(where: str, row: Any, chunks: list[Any], problems: list[str]) -> None:
    """Chunks numbered 0..k with contiguous line numbers; the `line-N` lines 0..m, complete for
    an attempt that ran its command to the end."""
    seqs = [c[1] for c in chunks]
    if seqs != list(range(len(seqs))):
        problems.append(f"{where}: log chunk seqs {seqs} are not contiguous from 0")
    expected_first = 0
    for chunk in chunks:
        if chunk[2] != expected_first:
            problems.append(
                f"{where}: log chunk {chunk[1]} starts at line {chunk[2]}, "
                f"expected {expected_first}"
            )
            break
        expected_first = chunk[2] + chunk[3]
    lines = [line for c in chunks for line in c[4].split("\n")[: c[3]]]
    numbers = [int(m.group(1)) for line in lines if (m := LINE.match(line))]
    if numbers != list(range(len(numbers))):
        problems.append(f"{where}: numbered lines are not contiguous from 0: {numbers}")
    finished = row[3] == "success" or row[4] == FAIL_EXIT
    if finished and len(numbers) != STAGE_LINES[row[1]]:
        layout = [(c[1], c[2], c[3]) for c in chunks]
        problems.append(
            f"{where}: {len(numbers)} numbered lines stored, the command printed "
            f"{STAGE_LINES[row[1]]} (row: {row[9]}-{row[10]} UTC, log_line_count={row[7]}, "
            f"warnings={row[11]}, "
            f"log_object_key={row[8]!r}; "
            f"chunks (seq, first_line, line_count): {layout}; lines: {lines[:30]})"
        )


async def check_api_view(scenario: Scenario, problems: list[str]) -> None:
    """What the API says of each run once it ended: its true result and one entry per row."""
    rows = await scenario.query(
        "SELECT se.run_id::text, count(*) FROM stage_executions se JOIN pipeline_runs r "
        "ON r.id = se.run_id WHERE r.organization_id = :org GROUP BY 1",
        org=scenario.org_id,
    )
    counts = {r[0]: r[1] for r in rows}
    workspaces = scenario.stack.settings.workspaces_dir
    for run in scenario.runs:
        r = await scenario.api.call("GET", f"/v1/runs/{run.id}", "run detail")
        if r is None or r.status_code != 200:
            problems.append(f"run #{run.number}: GET /v1/runs/{run.id} answered {r}")
            continue
        body = r.json()
        if body["status"] != run.expected or len(body["stages"]) != counts.get(run.id, 0):
            problems.append(
                f"run #{run.number} ({run.id}): the API says {body['status']!r} with "
                f"{len(body['stages'])} stage entries; expected {run.expected!r} and "
                f"{counts.get(run.id, 0)} (the stage_executions rows)"
            )
        workspace = workspaces / run.id
        if workspace.exists():
            problems.append(f"run #{run.number} ({run.id}) ended; its workspace is left")


async def check_followed_logs(scenario: Scenario, problems: list[str]) -> Counter[str]:
    """What each SSE follower received equals, attempt by attempt, the stored log: every line
    once, in order, across reconnects; and it ended with the stage's final status."""
    answers: Counter[str] = Counter()
    done, pending = await asyncio.wait(scenario.followers, timeout=30)
    for task in pending:
        task.cancel()
        problems.append("an SSE follower was still reading 30 s after every run had ended")
    for task in done:
        followed = task.result()
        answers.update(followed.answers)
        where = f"SSE follow of run {followed.run_id} stage {followed.stage}"
        # A stream cut mid-body (the database went away under it) is resumed; a refusal must be
        # a 503, never another status.
        refused = {a: n for a, n in followed.answers.items() if a.isdigit() and a not in OK_SSE}
        if refused:
            problems.append(f"{where}: connections answered {refused}")
        rows = await scenario.query(
            "SELECT se.attempt, se.status, c.seq, c.line_count, c.content "
            "FROM stage_executions se LEFT JOIN stage_log_chunks c ON c.stage_execution_id = se.id "
            "WHERE se.run_id = :run AND se.stage_name = :stage ORDER BY se.attempt, c.seq",
            run=uuid.UUID(followed.run_id),
            stage=followed.stage,
        )
        stored: dict[int, list[str]] = defaultdict(list)
        final = None
        for attempt, status, _seq, count, content in rows:
            final = status
            if content is not None:
                stored[attempt] += content.split("\n")[:count]
        if followed.end != final:
            problems.append(f"{where}: ended with {followed.end!r}, the last attempt is {final!r}")
        received: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for attempt, number, line in followed.lines:
            received[attempt].append((number, line))
        first = min(received, default=None)
        for attempt, lines in sorted(stored.items()):
            if first is None or attempt < first:
                continue  # ended before the follower connected
            got = received.get(attempt, [])
            if got != list(enumerate(lines)):
                numbers = [n for n, _ in got]
                problems.append(
                    f"{where} attempt {attempt}: received lines {numbers} (reconnects: "
                    f"{dict(followed.answers)}), stored {len(lines)}"
                )
    return answers


async def check_usage_and_claims(scenario: Scenario, problems: list[str]) -> None:
    usage = await scenario.query(
        "SELECT source_refs->>'pipeline_run_id', count(*) FROM usage_records "
        "WHERE organization_id = :org AND usage_type = 'build_minutes' GROUP BY 1",
        org=scenario.org_id,
    )
    per_run = {r[0]: r[1] for r in usage}
    for run in scenario.runs:
        if per_run.get(run.id, 0) != 1:
            problems.append(
                f"run #{run.number} ({run.id}): {per_run.get(run.id, 0)} build_minutes usage "
                f"records, expected 1"
            )
    claims = await scenario.query(
        "SELECT run_workflow_id, holding, grant_pending FROM build_slot_claims "
        "WHERE organization_key = :key",
        key=str(scenario.org_id),
    )
    if claims:
        problems.append(f"{len(claims)} build-slot claims left after every run ended: {claims}")


async def check_deployments(
    scenario: Scenario, problems: list[str]
) -> dict[str, list[tuple[str, ...]]]:
    rows = await scenario.query(
        "SELECT id::text, environment_id::text, version, status, error FROM deployments "
        "WHERE organization_id = :org",
        org=scenario.org_id,
    )
    by_id = {r[0]: r for r in rows}
    proxy_port = scenario.stack.caddy.http_port
    for env_key, ids in scenario.deployments.items():
        last = ids[-1]
        statuses = [(by_id[i][2], by_id[i][3]) for i in ids if i in by_id]
        if by_id.get(last, (None,) * 4)[3] != "active":
            problems.append(
                f"environment {env_key}: the last requested deployment ({scenario.versions[last]}) "
                f"is not active; in request order: {statuses}"
            )
        live = [i for i in ids if i in by_id and by_id[i][3] == "active"]
        if live != [last]:
            problems.append(f"environment {env_key}: active deployments {live}, only {last}")
        r = await scenario.api.call("GET", f"/v1/deployments/{last}", "deployment detail")
        if r is None or r.status_code != 200 or not r.json().get("url"):
            problems.append(f"environment {env_key}: the last deployment's detail has no URL")
            continue
        url, headers = via_proxy(r.json()["url"], proxy_port)
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(url, headers=headers)
        want = f"chaos site {scenario.versions[last]}"
        if page.status_code != 200 or want not in page.text:
            problems.append(
                f"environment {env_key}: its URL serves {page.status_code} {page.text[:120]!r}, "
                f"expected {want!r}"
            )
    return {
        env_key: [
            (scenario.versions[i], by_id[i][3], by_id[i][4])
            if by_id[i][3] in ("failed", "rolled_back")
            else (scenario.versions[i], by_id[i][3])
            for i in ids
            if i in by_id
        ]
        for env_key, ids in scenario.deployments.items()
    }


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
