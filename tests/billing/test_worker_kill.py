"""Kill the worker (SIGKILL) after Stripe committed the charge but before the payment is
recorded, or in the middle of the invoice transaction: the retried attempt on a new worker
makes one invoice, one charge, one payment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from temporalio.client import Client, WorkflowHandle

from core.billing.metering import record_usage
from core.billing.periods import Period
from core.billing.pricing import round_cents, share_of_period
from db.models.billing import Invoice, Payment, Subscription, UsageRecord
from db.session import session_scope
from tests.billing.conftest import record_change, subscribe
from tests.billing.fake_stripe import FakeStripe
from tests.runs.helpers import wait_for
from workflows.billing import BillingWorkflow
from workflows.billing_models import BillingInput, BillingResult, billing_workflow_id

LAST_MONTH = Period.containing(datetime.now(UTC)).previous()


async def _start_worker(task_queue: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.billing.worker_process",
        task_queue,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready"
    return proc


def worker_env(database_url: str, temporal_address: str, fake_stripe: FakeStripe) -> dict[str, str]:
    """A worker process's environment: this session's database and Temporal, the fake Stripe."""
    return {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "STRIPE_API_KEY": "sk_test_fake",
        "STRIPE_API_BASE": fake_stripe.url,
        "FORGELINE_STRIPE_TIMEOUT_SECONDS": "30",
    }


async def bill_last_month(
    client: Client, org_id: uuid.UUID, task_queue: str
) -> WorkflowHandle[Any, BillingResult]:
    return await client.start_workflow(
        BillingWorkflow.run,
        BillingInput(organization_id=str(org_id), period=LAST_MONTH.key),
        id=billing_workflow_id(str(org_id), LAST_MONTH.key),
        task_queue=task_queue,
    )


async def stop_workers(*procs: asyncio.subprocess.Process | None) -> None:
    """SIGTERM each worker process still running, and wait for it."""
    for proc in procs:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def test_sigkill_between_charge_and_record_payment(
    temporal_client,
    temporal_address,
    database_url,
    task_queue,
    session_maker,
    plans,
    fake_stripe,
    stripe_billing,
):
    sub = await subscribe(
        session_maker, plans, plan="starter", started=LAST_MONTH.start, stripe=stripe_billing
    )
    committed, release = asyncio.Event(), asyncio.Event()

    async def hold_pay_response(method: str, path: str) -> None:
        if path.endswith("/pay") and not committed.is_set():
            committed.set()
            await release.wait()  # the worker dies while waiting for this response

    fake_stripe.after_commit = hold_pay_response
    env = worker_env(database_url, temporal_address, fake_stripe)
    first = await _start_worker(task_queue, env)
    second = None
    try:
        handle = await bill_last_month(temporal_client, sub.org_id, task_queue)
        await asyncio.wait_for(committed.wait(), 60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        release.set()
        assert len(fake_stripe.successful_charges()) == 1
        second = await _start_worker(task_queue, env)
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        await stop_workers(first, second)
    assert result.status == "paid" and result.total == "19.00"
    assert len(fake_stripe.successful_charges()) == 1
    async with session_maker() as session:
        payments = (
            await session.scalars(select(Payment).where(Payment.organization_id == sub.org_id))
        ).all()
        invoice = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).one()
    assert [(p.status, str(p.amount)) for p in payments] == [("succeeded", "19.00")]
    assert invoice.status == "paid"


async def test_sigkill_in_the_middle_of_invoicing_a_period_with_plan_changes(
    temporal_client,
    temporal_address,
    database_url,
    task_queue,
    session_maker,
    plans,
    fake_stripe,
    stripe_billing,
):
    """The worker dies inside the invoice transaction (invoice row written, usage being rolled
    up, nothing committed): the retried attempt on a new worker bills the period once, every
    plan for its time, and Stripe charges it once."""
    sub = await subscribe(
        session_maker, plans, plan="starter", started=LAST_MONTH.start, stripe=stripe_billing
    )
    changed_at = LAST_MONTH.start + timedelta(days=12, hours=5)
    async with session_scope(session_maker) as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
        await record_change(session, subscription, plans["pro"].id, changed_at)
        await record_usage(
            session,
            organization_id=sub.org_id,
            project_id=None,
            usage_type="build_minutes",
            quantity=Decimal(10),
            idempotency_key=f"kill-{sub.org_id}",
            recorded_at=LAST_MONTH.start + timedelta(days=2),
        )
    env = worker_env(database_url, temporal_address, fake_stripe)
    blocker = session_maker()
    # Holding the usage row makes the roll-up wait inside the invoice transaction.
    await blocker.execute(
        text("SELECT 1 FROM usage_records WHERE idempotency_key = :k FOR UPDATE"),
        {"k": f"kill-{sub.org_id}"},
    )
    first = await _start_worker(task_queue, env)
    second = None
    try:
        handle = await bill_last_month(temporal_client, sub.org_id, task_queue)

        async def rolling_up() -> bool:
            async with session_maker() as session:
                waiting = await session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%UPDATE usage_records SET invoice_id%'"
                    )
                )
            return bool(waiting)

        await wait_for(rolling_up, timeout=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await blocker.rollback()
        second = await _start_worker(task_queue, env)
        # Retried once the dead attempt's start-to-close timeout (60 s) has passed.
        result = await asyncio.wait_for(handle.result(), 150)
    finally:
        await blocker.close()
        await stop_workers(first, second)
    starter = round_cents(Decimal(19) * share_of_period(LAST_MONTH, LAST_MONTH.start, changed_at))
    pro = round_cents(Decimal(49) * share_of_period(LAST_MONTH, changed_at, LAST_MONTH.end))
    assert result.status == "paid" and Decimal(result.total) == starter + pro
    assert len(fake_stripe.successful_charges()) == 1
    async with session_maker() as session:
        invoices = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).all()
        payments = (
            await session.scalars(select(Payment).where(Payment.organization_id == sub.org_id))
        ).all()
        billed = await session.scalar(
            select(UsageRecord.invoice_id).where(
                UsageRecord.idempotency_key == f"kill-{sub.org_id}"
            )
        )
    assert len(invoices) == 1 and invoices[0].status == "paid"
    assert [p.status for p in payments] == ["succeeded"] and billed == invoices[0].id
