"""The monthly fan-out records a page of started runs (workflow_executions rows and their system
audit entries) in one statement each, with the same rows the one-by-one helpers write: each
started run's invoice step waits on its uncommitted row, so a row per round trip held every
invoice of the page back for as long as the page took to record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.audit.system import SystemAction, record_system_action, record_system_actions
from core.billing.executions import (
    StartedRun,
    record_billing_execution,
    record_billing_executions,
)
from core.billing.periods import Period
from db.models.operations import AuditLog, WorkflowExecution
from db.session import session_scope
from tests.factories import make_org

PERIOD = Period(2031, 3)
# Compared row by row; id and created_at differ by construction.
AUDIT_COLUMNS = [
    c.key for c in AuditLog.__mapper__.column_attrs if c.key not in ("id", "created_at")
]
EXECUTION_COLUMNS = [
    c.key
    for c in WorkflowExecution.__mapper__.column_attrs
    if c.key not in ("id", "created_at", "updated_at", "started_at", "workflow_id", "run_id")
]


@contextmanager
def inserts_into(engine: AsyncEngine, table: str) -> Iterator[list[str]]:
    """The INSERT statements sent for `table` while the block runs."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


def runs_for(org_ids: list[uuid.UUID]) -> list[StartedRun]:
    return [
        StartedRun(org_id, f"billing-{org_id}-{PERIOD.key}", str(uuid.uuid4()))
        for org_id in org_ids
    ]


def actions_for(runs: list[StartedRun], **extra: object) -> list[SystemAction]:
    return [
        SystemAction(
            organization_id=run.organization_id,
            action="billing.run",
            resource_type="billing_period",
            new={"period": PERIOD.key, "workflow_id": run.workflow_id, **extra},
        )
        for run in runs
    ]


async def execution_rows(
    session_maker: async_sessionmaker[AsyncSession], runs: list[StartedRun]
) -> list[WorkflowExecution]:
    async with session_maker() as session:
        found = await session.scalars(
            select(WorkflowExecution).where(
                WorkflowExecution.workflow_id.in_([run.workflow_id for run in runs])
            )
        )
        return list(found.all())


async def audit_rows(
    session_maker: async_sessionmaker[AsyncSession], org_ids: list[uuid.UUID]
) -> list[AuditLog]:
    async with session_maker() as session:
        found = await session.scalars(
            select(AuditLog).where(
                AuditLog.organization_id.in_(org_ids), AuditLog.action == "billing.run"
            )
        )
        return list(found.all())


async def test_a_page_is_recorded_in_one_statement_per_table_with_the_same_rows(
    engine: AsyncEngine, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    bulk_orgs = [(await make_org(session_maker)).org_id for _ in range(3)]
    single_orgs = [(await make_org(session_maker)).org_id for _ in range(3)]
    bulk_runs, single_runs = runs_for(bulk_orgs), runs_for(single_orgs)
    with (
        inserts_into(engine, "workflow_executions") as execution_inserts,
        inserts_into(engine, "audit_logs") as audit_inserts,
    ):
        async with session_scope(session_maker) as session:
            await record_billing_executions(session, bulk_runs, period=PERIOD, trigger="schedule")
            await record_system_actions(session, actions_for(bulk_runs))
    assert (len(execution_inserts), len(audit_inserts)) == (1, 1)
    async with session_scope(session_maker) as session:
        for run, action in zip(single_runs, actions_for(single_runs), strict=True):
            await record_billing_execution(
                session,
                organization_id=run.organization_id,
                period=PERIOD,
                workflow_id=run.workflow_id,
                run_id=run.run_id,
                trigger="schedule",
            )
            await record_system_action(
                session,
                organization_id=action.organization_id,
                action=action.action,
                resource_type=action.resource_type,
                resource_id=None,
                new=action.new,
            )

    def shape(row: Any, columns: list[str], org_ids: list[uuid.UUID]) -> dict[str, Any]:
        values = {key: getattr(row, key) for key in columns}
        # The organization's place in its list stands for the organization.
        values["organization_id"] = org_ids.index(row.organization_id)
        for key in ("memo", "search_attributes", "new_values"):
            if key in values:
                values[key] = {k: v for k, v in values[key].items() if "workflow_id" not in k}
                values[key].pop("ForgelineOrgId", None)
        return values

    def shapes(rows: list[Any], columns: list[str], org_ids: list[uuid.UUID]) -> list[Any]:
        return sorted(
            (shape(r, columns, org_ids) for r in rows), key=lambda v: v["organization_id"]
        )

    bulk_exec = await execution_rows(session_maker, bulk_runs)
    single_exec = await execution_rows(session_maker, single_runs)
    assert len(bulk_exec) == 3
    assert shapes(bulk_exec, EXECUTION_COLUMNS, bulk_orgs) == shapes(
        single_exec, EXECUTION_COLUMNS, single_orgs
    )
    bulk_audit = await audit_rows(session_maker, bulk_orgs)
    single_audit = await audit_rows(session_maker, single_orgs)
    assert len(bulk_audit) == 3
    assert shapes(bulk_audit, AUDIT_COLUMNS, bulk_orgs) == shapes(
        single_audit, AUDIT_COLUMNS, single_orgs
    )
    assert {r.actor_type for r in bulk_audit} == {"system"}


async def test_hostile_values_are_redacted_and_bounded_as_one_by_one(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    org_id = (await make_org(session_maker)).org_id
    hostile = {
        "api_token": "s3cr3t",
        "note": "'; DROP TABLE audit_logs; --" + "\u202e" * 50 + "x" * 20_000,
    }
    (run,) = runs_for([org_id])
    async with session_scope(session_maker) as session:
        await record_billing_executions(session, [run], period=PERIOD, trigger="schedule")
        await record_system_actions(session, actions_for([run], **hostile))
        await record_system_action(
            session,
            organization_id=org_id,
            action="billing.run",
            resource_type="billing_period",
            resource_id=None,
            new={"period": PERIOD.key, "workflow_id": run.workflow_id, **hostile},
        )
    bulk, single = await audit_rows(session_maker, [org_id])
    assert bulk.new_values == single.new_values
    assert bulk.new_values is not None and bulk.new_values["api_token"] == "[redacted]"
    assert bulk.changed_fields == single.changed_fields


async def test_an_empty_page_sends_nothing(
    engine: AsyncEngine, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    with (
        inserts_into(engine, "workflow_executions") as execution_inserts,
        inserts_into(engine, "audit_logs") as audit_inserts,
    ):
        async with session_scope(session_maker) as session:
            await record_billing_executions(session, [], period=PERIOD, trigger="schedule")
            await record_system_actions(session, [])
    assert execution_inserts == audit_inserts == []


async def test_concurrent_duplicate_pages_record_each_run_once(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    org_ids = [(await make_org(session_maker)).org_id for _ in range(4)]
    runs = runs_for(org_ids)

    async def record() -> None:
        async with session_scope(session_maker) as session:
            await record_billing_executions(session, runs, period=PERIOD, trigger="schedule")
            # A run appearing twice in one page is recorded once too.
            await record_billing_executions(session, runs[:1] * 2, period=PERIOD, trigger="x")

    await asyncio.gather(record(), record(), record())
    rows = await execution_rows(session_maker, runs)
    assert sorted(r.workflow_id for r in rows) == sorted(run.workflow_id for run in runs)
    assert {r.memo["trigger"] for r in rows} == {"schedule"}


async def test_a_page_that_fails_before_its_commit_leaves_no_rows_and_records_on_retry(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    org_ids = [(await make_org(session_maker)).org_id for _ in range(2)]
    runs = runs_for(org_ids)
    with pytest.raises(ConnectionResetError):
        async with session_scope(session_maker) as session:
            await record_billing_executions(session, runs, period=PERIOD, trigger="schedule")
            await record_system_actions(session, actions_for(runs))
            raise ConnectionResetError("worker lost its database connection before the commit")
    assert await execution_rows(session_maker, runs) == []
    assert await audit_rows(session_maker, org_ids) == []
    async with session_scope(session_maker) as session:
        await record_billing_executions(session, runs, period=PERIOD, trigger="schedule")
        await record_system_actions(session, actions_for(runs))
    assert len(await execution_rows(session_maker, runs)) == 2
    assert len(await audit_rows(session_maker, org_ids)) == 2
