"""A commit status report holds no database connection while the forge answers, nor while it
waits for its run's reporting turn: a forge that hangs leaves the pool free, and the run's
reports still reach it one at a time, the final state last. A turn left by a crashed report is
taken over once its lease has passed. Real Postgres (a pool of two connections, no overflow),
the report activity as Temporal runs it, and a GitHub on loopback that answers only when
told."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.integrations.activities import IntegrationActivities
from core.integrations.commit_status import forge_metadata
from db.models.integrations import CommitStatusTurn
from db.models.pipelines import PipelineRun
from db.session import create_engine, create_session_maker, session_scope
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.fake_forge import _status_body
from tests.integrations.support import connect_project
from tests.loopback_http import serving
from tests.runs.helpers import wait_for
from workflows.integrations_models import CommitState, CommitStatusInput, CommitStatusResult

TOKEN = "ghp_" + "H" * 36
POOL_SIZE = 2


@dataclass
class HangingForge:
    """GitHub's statuses endpoint that keeps each request open until `release()` (60 s at
    most, so a broken test never leaves a thread behind)."""

    url: str = ""
    received: list[tuple[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def states(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.received)

    def release(self) -> None:
        self.released.set()


def _handler(forge: HangingForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            with forge.lock:
                forge.received.append((self.path.rsplit("/", 1)[-1], str(body.get("state"))))
            forge.released.wait(timeout=60)
            payload = json.dumps(_status_body(body, self.path)).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def hanging_forge() -> Iterator[HangingForge]:
    forge = HangingForge()
    with serving(_handler(forge)) as forge.url:
        try:
            yield forge
        finally:
            forge.release()


@pytest.fixture
async def small_pool(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(
        settings.model_copy(update={"db_pool_size": POOL_SIZE, "db_max_overflow": 0}),
        url=database_url,
    )
    yield engine
    await engine.dispose()


@pytest.fixture
def small_maker(small_pool: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_maker(small_pool)


@pytest.fixture
def activities(
    settings: Settings,
    hanging_forge: HangingForge,
    small_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> IntegrationActivities:
    forge_settings = settings.model_copy(update={"github_api_url": hanging_forge.url})
    return IntegrationActivities(forge_settings, small_maker, temporal_client)


async def forge_runs(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings, count: int
) -> list[uuid.UUID]:
    """`count` running runs of one pipeline, started by pushes of acme/widgets (a token to
    report with), each on a commit of its own."""
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url="https://github.com/acme/widgets.git",
        provider="github",
        pipelines=[{"on_push": {}}],
        token=TOKEN,
    )
    ids = []
    async with session_scope(session_maker) as session:
        for number in range(1, count + 1):
            run = PipelineRun(
                id=uuid.uuid4(),
                pipeline_id=connected.pipeline_ids[0],
                project_id=connected.project_id,
                organization_id=org.org_id,
                run_number=number,
                status="running",
                trigger="push",
                branch="main",
                commit_sha=f"{number:040x}",
                metadata_={
                    "forge": forge_metadata("github", str(uuid.uuid4()), "acme/widgets", "push")
                },
            )
            session.add(run)
            ids.append(run.id)
    return ids


@dataclass
class Report:
    """One report activity, run as Temporal runs it; `waited` counts its heartbeats (each one a
    try for the run's turn that found it taken)."""

    task: asyncio.Task[CommitStatusResult]
    waited: list[object]


def start_report(
    activities: IntegrationActivities, run_id: uuid.UUID, state: CommitState
) -> Report:
    env = ActivityEnvironment()
    waited: list[object] = []
    env.on_heartbeat = lambda *details: waited.append(details)
    inp = CommitStatusInput(run_id=str(run_id), state=state)
    task = asyncio.ensure_future(env.run(activities.report_commit_status, inp))
    return Report(task, waited)


async def pool_answers(engine: AsyncEngine) -> bool:
    """Nothing is checked out and a new session gets a connection."""
    if engine.pool.checkedout() != 0:  # type: ignore[attr-defined]
        return False
    async with create_session_maker(engine)() as session:
        return await session.scalar(select(1)) == 1


async def test_a_hanging_forge_pins_no_pool_connection(
    activities: IntegrationActivities,
    hanging_forge: HangingForge,
    small_pool: AsyncEngine,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    runs = await forge_runs(session_maker, settings, POOL_SIZE * 2)
    reports = [start_report(activities, run_id, "running") for run_id in runs]
    try:

        async def all_at_the_forge() -> bool:
            return len(hanging_forge.states()) == len(runs)

        # Twice as many reports as the pool has connections are all waiting for the forge.
        await wait_for(all_at_the_forge, timeout=30)
        assert await pool_answers(small_pool)
    finally:
        hanging_forge.release()
    results = await asyncio.gather(*(r.task for r in reports))
    assert all(result.reported for result in results), results
    assert await pool_answers(small_pool)


async def test_the_final_state_waits_for_the_hanging_report_without_a_connection(
    activities: IntegrationActivities,
    hanging_forge: HangingForge,
    small_pool: AsyncEngine,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    (run_id,) = await forge_runs(session_maker, settings, 1)
    running = start_report(activities, run_id, "running")

    async def running_at_the_forge() -> bool:
        return hanging_forge.states() == [(f"{1:040x}", "pending")]

    await wait_for(running_at_the_forge, timeout=30)
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id).values(status="success")
        )
    # The final state and a duplicate of it, announced while the running report hangs.
    finals = [start_report(activities, run_id, "success") for _ in range(2)]

    async def both_waiting() -> bool:
        return all(report.waited for report in finals)

    await wait_for(both_waiting, timeout=30)
    assert len(hanging_forge.states()) == 1
    assert await pool_answers(small_pool)
    hanging_forge.release()
    assert (await running.task).reported
    results = [await report.task for report in finals]
    assert all(result.reported for result in results), results
    assert [state for _, state in hanging_forge.states()] == ["pending", "success", "success"]
    async with session_maker() as session:
        left = await session.scalar(
            select(CommitStatusTurn).where(CommitStatusTurn.run_id == run_id)
        )
    assert left is None


async def test_a_crashed_reports_turn_is_taken_over_after_its_lease(
    activities: IntegrationActivities,
    hanging_forge: HangingForge,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    hanging_forge.release()
    expired, held = await forge_runs(session_maker, settings, 2)
    now = datetime.now(UTC)
    async with session_scope(session_maker) as session:
        # A report that died mid-way long ago, and one whose lease still runs.
        session.add(
            CommitStatusTurn(
                run_id=expired, holder="crashed", expires_at=now - timedelta(minutes=5)
            )
        )
        session.add(
            CommitStatusTurn(run_id=held, holder="crashed", expires_at=now + timedelta(hours=1))
        )
    assert (await start_report(activities, expired, "running").task).reported
    waiting = start_report(activities, held, "running")

    async def waits() -> bool:
        return bool(waiting.waited)

    await wait_for(waits, timeout=30)
    assert not waiting.task.done()
    async with session_scope(session_maker) as session:
        # The lease runs out (as it does 45 s after its report was taken).
        await session.execute(
            update(CommitStatusTurn)
            .where(CommitStatusTurn.run_id == held)
            .values(expires_at=now - timedelta(seconds=1))
        )
    assert (await waiting.task).reported
    assert sorted(sha for sha, _ in hanging_forge.states()) == [f"{1:040x}", f"{2:040x}"]
    # A report for a run that no longer exists sends nothing and leaves no turn behind.
    gone = uuid.uuid4()
    result = await start_report(activities, gone, "running").task
    assert not result.reported and result.reason == "the run no longer exists"
    async with session_scope(session_maker) as session:
        assert (
            await session.scalar(select(CommitStatusTurn).where(CommitStatusTurn.run_id == gone))
            is None
        )
        await session.execute(
            delete(CommitStatusTurn).where(CommitStatusTurn.run_id.in_([expired, held]))
        )
