"""The test harness itself: real Postgres, rolled-back sessions, Temporal with search attributes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from forgeline.settings import SEARCH_ATTRIBUTES, Settings


async def test_postgres_is_real_and_versioned(db_session: AsyncSession) -> None:
    version = (await db_session.execute(text("SHOW server_version_num"))).scalar_one()
    assert int(version) >= 140000


async def test_db_session_rolls_back_committed_work(
    db_session: AsyncSession, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    name = f"harness-probe-{uuid.uuid4()}"
    insert = text(
        "INSERT INTO system_metrics (id, metric_category, metric_name) "
        "VALUES (gen_random_uuid(), 'harness', :name)"
    )
    count = text("SELECT count(*) FROM system_metrics WHERE metric_name = :name")
    await db_session.execute(insert, {"name": name})
    await db_session.commit()
    await db_session.execute(insert, {"name": name})
    await db_session.commit()
    assert (await db_session.execute(count, {"name": name})).scalar_one() == 2
    # Another connection never sees the uncommitted outer transaction.
    async with session_maker() as other:
        assert (await other.execute(count, {"name": name})).scalar_one() == 0


async def test_the_suite_connects_without_superuser_or_ddl(db_session: AsyncSession) -> None:
    """Tests run as the application's role (migrations ran as the migrator): what passes here
    passes without superuser, and the schema cannot be changed by the code under test."""
    role = (
        await db_session.execute(
            text(
                "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            )
        )
    ).one()
    assert tuple(role) == ("forgeline_app", False, False, False)
    with pytest.raises(ProgrammingError, match="permission denied"):
        async with db_session.begin_nested():
            await db_session.execute(text("CREATE TABLE harness_probe (id int)"))


async def test_temporal_has_forgeline_search_attributes(temporal_client: Client) -> None:
    response = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=temporal_client.namespace)
    )
    for name in SEARCH_ATTRIBUTES:
        assert name in response.custom_attributes


def test_settings_are_test_settings(settings: Settings, task_queue: str) -> None:
    assert settings.environment == "test"
    assert settings.encryption_keys.get_secret_value() != "change-me"
    assert settings.objects_dir.is_dir()
    assert task_queue.startswith("test-")


async def test_time_skipping_env_skips_a_long_timer(time_skipping_env: WorkflowEnvironment) -> None:
    async with Worker(
        time_skipping_env.client,
        task_queue="harness-timer",
        workflows=[SleepyWorkflow],
    ):
        slept = await time_skipping_env.client.execute_workflow(
            SleepyWorkflow.run, 3600, id=f"harness-timer-{uuid.uuid4()}", task_queue="harness-timer"
        )
    assert slept >= 3600


@workflow.defn(sandboxed=False)
class SleepyWorkflow:
    @workflow.run
    async def run(self, seconds: int) -> float:
        started = workflow.now()
        await asyncio.sleep(seconds)
        return (workflow.now() - started).total_seconds()
