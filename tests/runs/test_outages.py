"""Runs that tell the truth through outages: Temporal down for longer than the heartbeat timeout
while a stage finishes, PostgreSQL restarted mid-stage, a worker killed before an attempt opened.
Each run ends with its true result, its commands ran once, and every attempt has its row.

PostgreSQL outages run on a server of their own (other tests keep theirs)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs.stage_records import NEVER_OPENED_ERROR
from db.session import create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings
from tests.factories import make_org
from tests.runs.helpers import (
    COUNT_SCRIPT,
    assert_contiguous,
    by_stage,
    create_run,
    executions,
    log_text,
    make_pipeline,
    own_temporal,
    pipeline_worker,
    run_row,
    spawn_worker,
    stage,
    start,
    wait_for,
    wait_for_log_line,
)
from tests.runs.sandbox import sandbox_runner

# Refuses to run twice in one run's workspace: a second run of the commands fails the stage.
ONCE = '[ ! -e ran-once ] || { echo "ran again"; exit 3; }; touch ran-once; '


@pytest.fixture
async def own_db(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, url=own_postgres.app_url)
    try:
        yield create_session_maker(engine)
    finally:
        await engine.dispose()


async def test_stage_finishing_during_a_temporal_outage_keeps_its_success(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """The last stage ends while Temporal is down for longer than the heartbeat timeout: the
    attempt Temporal retries reuses the recorded success instead of running the commands again
    (which here would fail), and the run closes once, as success."""
    async with own_temporal(tmp_path, settings) as (server, client):
        org = await make_org(session_maker)
        pipeline_id = await make_pipeline(
            session_maker,
            org.org_id,
            [
                stage("first", "echo first", 0),
                stage("last", ONCE + "echo started; sleep 2; echo finished", 1),
            ],
        )
        run = await create_run(session_maker, settings, org.org_id, pipeline_id)
        runner = sandbox_runner(tmp_path / "state")
        async with pipeline_worker(client, task_queue, settings, session_maker, runner):
            handle = await start(client, run, task_queue, heartbeat_seconds=1.0)

            async def last_started() -> bool:
                rows = by_stage(await executions(session_maker, run.id))
                return bool(rows.get("last")) and "started" in await log_text(
                    session_maker, rows["last"][0].id
                )

            await wait_for(last_started, timeout=60)
            await asyncio.to_thread(server.stop)

            async def last_closed() -> bool:
                rows = by_stage(await executions(session_maker, run.id))
                return rows["last"][0].status == "success"

            # The stage ends while the server is down; the server stays down past the
            # heartbeat timeout (3 s) so it retries the attempt when it is back.
            await wait_for(last_closed, timeout=60)
            await asyncio.sleep(5.0)
            await asyncio.to_thread(server.start)
            await server.wait_ready()
            result = await asyncio.wait_for(handle.result(), 120)
        assert result.status == "success"
        finished = await run_row(session_maker, run.id)
        assert finished.status == "success", finished.error
        rows = by_stage(await executions(session_maker, run.id))
        assert [(r.attempt, r.status) for r in rows["last"]] == [(1, "success")]
        text = await log_text(session_maker, rows["last"][0].id)
        assert "ran again" not in text and text.count("started") == 1


async def test_postgres_restart_mid_stage_costs_no_attempt(
    own_postgres: EmbeddedPostgres,
    own_db: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """PostgreSQL is down for ~8 s while a stage writes its log and closes: the stage's writes
    wait for it, the commands run once, the one attempt succeeds with its whole log."""
    org = await make_org(own_db)
    pipeline_id = await make_pipeline(
        own_db,
        org.org_id,
        [stage("count", ONCE + COUNT_SCRIPT, 0), stage("after", "echo after", 1)],
        retry_policy={"initial_interval_seconds": 0.2, "retry_count": 0},
    )
    own = settings.model_copy(update={"database_url": own_postgres.app_url})
    run = await create_run(own_db, own, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, own, own_db, runner):
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)

        await wait_for_log_line(own_db, run.id, "line-5", timeout=60)
        await asyncio.to_thread(own_postgres.stop)
        # Down while the stage prints its remaining lines (~3.5 s) and tries to close.
        await asyncio.sleep(8.0)
        await asyncio.to_thread(own_postgres.start)
        result = await asyncio.wait_for(handle.result(), 180)
    assert result.status == "success"
    assert (await run_row(own_db, run.id)).status == "success"
    rows = by_stage(await executions(own_db, run.id))
    assert [(r.attempt, r.status) for r in rows["count"]] == [(1, "success")]
    assert_contiguous(await log_text(own_db, rows["count"][0].id), complete=True)
    assert [(r.attempt, r.status) for r in rows["after"]] == [(1, "success")]


async def _waiting_on_lock(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%INSERT INTO stage_executions%'"
        )
    finally:
        await conn.close()
    return [int(r[0]) for r in rows]


async def _end_waiters(url: str) -> None:
    """The sessions waiting on the lock end (their statements never complete)."""
    conn = await asyncpg.connect(url)
    try:
        for pid in await _waiting_on_lock(url):
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def _lock_stage_executions(url: str) -> tuple[asyncpg.Connection, Transaction]:
    """A session holding a lock that keeps attempt rows from being written until rolled back."""
    locker = await asyncpg.connect(url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE stage_executions IN SHARE MODE")
    except BaseException:
        await locker.close()
        raise
    return locker, transaction


async def test_an_attempt_lost_before_it_opened_has_its_row(
    own_postgres: EmbeddedPostgres,
    own_db: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
) -> None:
    """The worker dies while its attempt's opening statement waits: the next attempt records
    the lost one, so the run shows every attempt Temporal started."""
    org = await make_org(own_db)
    pipeline_id = await make_pipeline(own_db, org.org_id, [stage("build", "echo built", 0)])
    own = settings.model_copy(update={"database_url": own_postgres.app_url})
    run = await create_run(own_db, own, org.org_id, pipeline_id)
    # Attempt rows cannot be written until this transaction ends.
    locker, lock = await _lock_stage_executions(own_postgres.superuser_url)
    first = second = None
    try:
        first = spawn_worker(own, task_queue, "sandbox")
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)

        async def opening_waits() -> bool:
            return bool(await _waiting_on_lock(own_postgres.superuser_url))

        await wait_for(opening_waits, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()

        # The dead worker's statement must never complete: its session goes before the lock.
        await _end_waiters(own_postgres.superuser_url)
        await lock.rollback()
        second = spawn_worker(own, task_queue, "sandbox")
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        await locker.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert result.status == "success"
    rows = by_stage(await executions(own_db, run.id))
    assert [(r.attempt, r.status, r.error) for r in rows["build"]] == [
        (1, "failed", NEVER_OPENED_ERROR),
        (2, "success", None),
    ]
    assert rows["build"][0].exit_code is None  # lost attempts never count as the stage's own


async def test_a_closed_run_is_never_reopened(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Closing is final: a second close (a retried step, a late failure) changes neither the
    status nor the error, and concurrent closes agree on the first."""
    from core.runs import run_records
    from db.session import driver_connection

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)

    async def close(status: str, error: str | None) -> None:
        async with driver_connection(session_maker) as conn:
            await run_records.finish_run(
                conn,
                run_id=str(run.id),
                status=status,
                error=error,
                unfinished_stage_status="failed",
                workflow_status="completed" if status == "success" else "failed",
                workflow_id=f"pipeline-run-{run.id}",
                workflow_run_id="first",
                spec_hashes={},
            )

    await close("success", None)
    await asyncio.gather(close("failed", "late failure"), close("cancelled", "late cancel"))
    closed = await run_row(session_maker, run.id)
    assert (closed.status, closed.error) == ("success", None)


async def test_every_attempt_lost_before_it_opened_has_its_row(
    own_postgres: EmbeddedPostgres,
    own_db: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
) -> None:
    """Each attempt's worker dies while the opening statement waits, the last one too: the run
    fails, and every attempt Temporal started (1 + the infrastructure retries) has its row."""
    from workflows.run_policies import INFRA_ATTEMPTS

    org = await make_org(own_db)
    pipeline_id = await make_pipeline(own_db, org.org_id, [stage("build", "echo built", 0)])
    own = settings.model_copy(update={"database_url": own_postgres.app_url})
    run = await create_run(own_db, own, org.org_id, pipeline_id)
    workers = []

    async def opening_waits() -> bool:
        return bool(await _waiting_on_lock(own_postgres.superuser_url))

    locker, lock = await _lock_stage_executions(own_postgres.superuser_url)
    try:
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)
        for _ in range(1 + INFRA_ATTEMPTS):
            worker = spawn_worker(own, task_queue, "sandbox")
            workers.append(worker)
            await wait_for(opening_waits, timeout=60)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            await _end_waiters(own_postgres.superuser_url)
        await lock.rollback()
        workers.append(spawn_worker(own, task_queue, "sandbox"))
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        await locker.close()
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert result.status == "failed"
    assert (await run_row(own_db, run.id)).status == "failed"
    rows = by_stage(await executions(own_db, run.id))
    assert [(r.attempt, r.status, r.error) for r in rows["build"]] == [
        (n, "failed", NEVER_OPENED_ERROR) for n in range(1, 2 + INFRA_ATTEMPTS)
    ]
