"""Metering wired into the product: API requests counted in memory and flushed exactly once,
storage measured at period close and invoiced, and a failed billing run's execution row closed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowFailureError

from api.billing.request_meter import ApiRequestMeter
from core.billing.executions import record_billing_execution
from core.billing.invoicing import storage_key
from core.billing.periods import Period
from db.models.billing import Invoice, UsageRecord
from db.models.operations import WorkflowExecution
from db.models.pipelines import Artifact, Pipeline, PipelineRun, StageExecution
from db.models.projects import Project
from db.session import session_scope
from forgeline.settings import Settings
from tests.billing.conftest import billing_worker, subscribe
from tests.factories import make_org
from workflows.billing import BillingWorkflow
from workflows.billing_models import BillingInput, BillingResult, billing_workflow_id

LAST_MONTH = Period.containing(datetime.now(UTC)).previous()
Maker = async_sessionmaker[AsyncSession]


async def _api_requests(session_maker: Maker, org_id: uuid.UUID) -> tuple[Decimal, list[str]]:
    async with session_maker() as session:
        rows = (
            await session.execute(
                select(UsageRecord.quantity, UsageRecord.idempotency_key).where(
                    UsageRecord.organization_id == org_id,
                    UsageRecord.usage_type == "api_requests",
                )
            )
        ).all()
    return sum((row.quantity for row in rows), Decimal(0)), [row.idempotency_key for row in rows]


# --------------------------------------------------------------------------- api_requests


async def test_authenticated_requests_are_counted_after_a_flush(api_client, app, session_maker):
    org = await make_org(session_maker)
    for _ in range(7):
        assert (await api_client.get("/v1/me", headers=org.headers)).status_code == 200
    assert (await api_client.get("/v1/me")).status_code == 401  # not authenticated: not counted
    await app.state.api_meter.flush(everything=True)
    total, keys = await _api_requests(session_maker, org.org_id)
    assert total == 7
    assert all(
        key.startswith(f"api-requests:{org.org_id}:") and app.state.api_meter.instance_id in key
        for key in keys
    )


async def test_windows_are_written_once_and_retries_never_double_count(session_maker):
    org = await make_org(session_maker)
    meter = ApiRequestMeter(session_maker)
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    for _ in range(3):
        meter.count(org.org_id, at=now - timedelta(minutes=2))
    meter.count(org.org_id, at=now)
    meter.count(org.org_id, at=now)

    # The periodic flush writes closed minutes only.
    assert await meter.flush(now=now) == 3
    assert (await _api_requests(session_maker, org.org_id))[0] == 3

    # The database fails: nothing is lost, the next flush writes it.
    working = meter._session_maker

    def broken() -> Any:
        raise ConnectionError("database unavailable")

    meter._session_maker = broken  # type: ignore[assignment]
    assert await meter.flush(now=now, everything=True) == 0
    assert meter.unflushed() == 2
    meter._session_maker = working
    assert await meter.flush(now=now) == 2
    assert meter.unflushed() == 0

    # An ambiguous failure (committed, answer lost) retried with the same keys: counted once.
    total, keys = await _api_requests(session_maker, org.org_id)
    meter._pending = [
        {
            "organization_id": org.org_id,
            "usage_type": "api_requests",
            "quantity": 2,
            "idempotency_key": key,
            "recorded_at": now,
        }
        for key in keys
    ]
    await meter.flush(now=now)
    assert (await _api_requests(session_maker, org.org_id))[0] == total == 5

    # A window that receives requests after its shutdown flush gets a second key, not a drop.
    meter.count(org.org_id, at=now)
    assert await meter.flush(now=now, everything=True) == 1
    total, keys = await _api_requests(session_maker, org.org_id)
    assert total == 6 and len(set(keys)) == 3


async def test_clean_shutdown_writes_the_open_minute(settings: Settings, session_maker):
    from api.app import create_app

    org = await make_org(session_maker)
    application = create_app(settings, session_maker=session_maker)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(4):
                assert (await client.get("/v1/me", headers=org.headers)).status_code == 200
        assert application.state.api_meter.unflushed() == 4
    assert (await _api_requests(session_maker, org.org_id))[0] == 4


# --------------------------------------------------------------------------- storage_gb


async def _stored_objects(session_maker: Maker, org_id: uuid.UUID) -> None:
    """102.5 GB of artifacts kept, one expired before the close, one made after; a 0.5 GB log."""
    during = LAST_MONTH.start + timedelta(days=3)
    async with session_scope(session_maker) as session:
        project = Project(organization_id=org_id, name="Web", slug="web", project_type="api")
        session.add(project)
        await session.flush()
        pipeline = Pipeline(project_id=project.id, organization_id=org_id, name="ci")
        session.add(pipeline)
        await session.flush()
        run = PipelineRun(
            pipeline_id=pipeline.id,
            project_id=project.id,
            organization_id=org_id,
            run_number=1,
            status="success",
        )
        session.add(run)
        await session.flush()
        stage = StageExecution(
            run_id=run.id,
            stage_name="build",
            status="success",
            log_size_bytes=500_000_000,
            log_object_key=f"logs/{run.id}/build.log",
            created_at=during,
        )
        inline_log = StageExecution(
            run_id=run.id, stage_name="test", status="success", log_size_bytes=1_000_000
        )
        session.add_all([stage, inline_log])
        await session.flush()

        def artifact(name: str, size: int, **extra: Any) -> Artifact:
            return Artifact(
                run_id=run.id,
                stage_execution_id=stage.id,
                name=name,
                object_key=f"artifacts/{run.id}/{name}",
                size_bytes=size,
                **extra,
            )

        session.add_all(
            [
                artifact("dist.tar", 102_500_000_000, created_at=during),
                artifact("old.tar", 7_000_000_000, created_at=during, expires_at=during),
                artifact(
                    "later.tar", 9_000_000_000, created_at=LAST_MONTH.end + timedelta(hours=1)
                ),
            ]
        )


async def test_storage_is_measured_at_period_close_and_invoiced(
    temporal_client, task_queue, session_maker, plans
):
    sub = await subscribe(session_maker, plans, plan="pro", started=LAST_MONTH.start)
    await _stored_objects(session_maker, sub.org_id)
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        result: BillingResult = await temporal_client.execute_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            task_queue=task_queue,
        )
    # Pro: $49 + (103 GB - 100 GB included) x $0.10.
    assert (result.status, result.total) == ("open", "49.30")
    async with session_maker() as session:
        records = (
            await session.scalars(
                select(UsageRecord).where(
                    UsageRecord.organization_id == sub.org_id,
                    UsageRecord.usage_type == "storage_gb",
                )
            )
        ).all()
        invoice = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).one()
    (record,) = records
    assert record.idempotency_key == storage_key(sub.org_id, LAST_MONTH)
    assert (record.quantity, record.period, record.unit) == (Decimal(103), LAST_MONTH.key, "GB")
    assert record.invoice_id == invoice.id
    storage_lines = [line for line in invoice.line_items if line.get("usage_type") == "storage_gb"]
    assert [(line["quantity"], line["amount"]) for line in storage_lines] == [("3.000000", "0.30")]


# --------------------------------------------------------------------------- execution rows


async def _executions(session_maker: Maker, workflow_id: str) -> list[WorkflowExecution]:
    async with session_maker() as session:
        query = select(WorkflowExecution).where(WorkflowExecution.workflow_id == workflow_id)
        return list((await session.scalars(query)).all())


async def test_a_failed_billing_run_closes_its_execution_row(
    temporal_client, task_queue, session_maker, plans
):
    org = await make_org(session_maker)
    bad_period = "2026-13"  # create_invoice refuses it (non-retryable): the run fails
    workflow_id = billing_workflow_id(str(org.org_id), bad_period)
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        handle = await temporal_client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(org.org_id), period=bad_period),
            id=workflow_id,
            task_queue=task_queue,
        )
        async with session_scope(session_maker) as session:
            await record_billing_execution(
                session,
                organization_id=org.org_id,
                period=LAST_MONTH,
                workflow_id=workflow_id,
                run_id=handle.result_run_id or "",
                trigger="api",
            )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert await handle.query(BillingWorkflow.status) == "failed"
    (row,) = await _executions(session_maker, workflow_id)
    assert row.status == "failed" and row.closed_at is not None
    assert row.error and "names no month" in row.error


async def test_a_run_that_finishes_before_its_row_is_committed_stays_completed(
    temporal_client, task_queue, session_maker, plans
):
    """The starter commits the row after the start; a $0 run can finish first."""
    sub = await subscribe(session_maker, plans, plan="free", started=LAST_MONTH.start)
    workflow_id = billing_workflow_id(str(sub.org_id), LAST_MONTH.key)
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        handle = await temporal_client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=workflow_id,
            task_queue=task_queue,
        )
        assert (await handle.result()).status == "paid"
    async with session_scope(session_maker) as session:
        await record_billing_execution(
            session,
            organization_id=sub.org_id,
            period=LAST_MONTH,
            workflow_id=workflow_id,
            run_id=handle.result_run_id or "",
            trigger="api",
        )
    rows = await _executions(session_maker, workflow_id)
    assert [(r.status, r.kind) for r in rows] == [("completed", "billing")]
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).where(WorkflowExecution.organization_id == sub.org_id)
        )
    assert count == 1


async def test_a_cancelled_billing_run_closes_its_execution_row(
    temporal_client, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    sub = await subscribe(
        session_maker,
        plans,
        plan="starter",
        started=LAST_MONTH.start,
        stripe=stripe_billing,
        card="pm_card_chargeDeclined",
    )
    workflow_id = billing_workflow_id(str(sub.org_id), LAST_MONTH.key)
    async with billing_worker(temporal_client, task_queue, session_maker, stripe_billing):
        handle = await temporal_client.start_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=workflow_id,
            task_queue=task_queue,
        )
        for _ in range(200):  # the first charge is declined; the run waits a day to retry
            if await handle.query(BillingWorkflow.status) == "dunning_wait_day_1":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the run never reached the dunning wait")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    (row,) = await _executions(session_maker, workflow_id)
    assert row.status == "cancelled" and row.closed_at is not None
