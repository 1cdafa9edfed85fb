"""BillingWorkflow on the real dev server, Postgres and the fake Stripe: exactly-once under faults,
manual collection without Stripe, and the monthly schedule's trigger/backfill/pause."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from core.billing.metering import record_usage
from core.billing.periods import Period
from core.billing.pricing import round_cents, share_of_period
from core.billing.schedules import (
    BILLING_SCHEDULE_ID,
    backfill_billing,
    ensure_billing_schedules,
    pause_billing,
)
from db.models.accounts import Notification
from db.models.billing import Invoice, Payment, Subscription
from db.session import session_scope
from forgeline.settings import BILLING_TASK_QUEUE
from tests.billing.conftest import billing_worker, record_change, record_history, subscribe
from workflows.billing import BillingWorkflow
from workflows.billing_models import BillingInput, BillingResult, billing_workflow_id

LAST_MONTH = Period.containing(datetime.now(UTC)).previous()


async def _add_usage(session_maker, org_id, period: Period, minutes: int) -> None:
    async with session_scope(session_maker) as session:
        for i in range(5):
            await record_usage(
                session,
                organization_id=org_id,
                project_id=None,
                usage_type="build_minutes",
                quantity=minutes // 5,
                idempotency_key=f"test-{org_id}-{period.key}-{i}",
                recorded_at=period.start + timedelta(days=2, hours=i),
            )
        # A retried activity records the same key again: counted once.
        assert not await record_usage(
            session,
            organization_id=org_id,
            project_id=None,
            usage_type="build_minutes",
            quantity=minutes,
            idempotency_key=f"test-{org_id}-{period.key}-0",
            recorded_at=period.start + timedelta(days=2),
        )


async def _invoices(session_maker, org_id) -> list[Invoice]:
    async with session_maker() as session:
        return list(
            (await session.scalars(select(Invoice).where(Invoice.organization_id == org_id))).all()
        )


async def _payments(session_maker, org_id) -> list[Payment]:
    async with session_maker() as session:
        return list(
            (await session.scalars(select(Payment).where(Payment.organization_id == org_id))).all()
        )


async def test_faults_still_give_one_invoice_and_one_charge(
    temporal_client, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    sub = await subscribe(
        session_maker, plans, plan="pro", started=LAST_MONTH.start, stripe=stripe_billing
    )
    await _add_usage(session_maker, sub.org_id, LAST_MONTH, 2500)
    fake_stripe.inject("500", "/v1/invoices")
    fake_stripe.inject("timeout_after_commit", "/v1/invoiceitems")
    fake_stripe.inject("500", "/finalize")
    fake_stripe.inject("drop_after_commit", "/pay")
    fake_stripe.inject("timeout_after_commit", "/pay")  # consumed by the replay: still one charge
    async with billing_worker(
        temporal_client, task_queue, session_maker, stripe_billing, Decimal("0.10")
    ):
        result: BillingResult = await temporal_client.execute_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            task_queue=task_queue,
        )
        assert result.status == "paid"
        assert result.total == "64.90"  # (49 + 500 min x 0.02) x 1.10
        # The same period again (say, after the workflow ID's retention): nothing new anywhere.
        again: BillingResult = await temporal_client.execute_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=f"{billing_workflow_id(str(sub.org_id), LAST_MONTH.key)}-again",
            task_queue=task_queue,
        )
        assert again.invoice_id == result.invoice_id and again.status == "paid"
        await record_history(
            temporal_client,
            billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            "billing_paid_after_faults",
        )

    invoices = await _invoices(session_maker, sub.org_id)
    assert len(invoices) == 1
    invoice = invoices[0]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("59.00"),
        Decimal("5.90"),
        Decimal("64.90"),
    )
    assert invoice.status == "paid" and invoice.amount_paid == Decimal("64.90")
    assert invoice.invoice_number.endswith(LAST_MONTH.compact)
    stripe_invoices = fake_stripe.invoices_by_number(invoice.invoice_number)
    assert len(stripe_invoices) == 1
    assert stripe_invoices[0]["amount_due"] == 6490
    assert len(fake_stripe.successful_charges(stripe_invoices[0]["id"])) == 1
    payments = await _payments(session_maker, sub.org_id)
    assert [(p.status, p.amount) for p in payments] == [("succeeded", Decimal("64.90"))]
    async with session_maker() as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert subscription.current_period_start == LAST_MONTH.end
    assert not fake_stripe.faults


async def test_without_stripe_invoice_is_issued_for_manual_collection(
    temporal_client, task_queue, session_maker, plans
):
    sub = await subscribe(session_maker, plans, plan="starter", started=LAST_MONTH.start)
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        result: BillingResult = await temporal_client.execute_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            task_queue=task_queue,
        )
    assert (result.status, result.total) == ("open", "19.00")
    (invoice,) = await _invoices(session_maker, sub.org_id)
    assert invoice.collection_method == "send_invoice" and invoice.due_at is not None
    async with session_maker() as session:
        kinds = (
            await session.scalars(
                select(Notification.type).where(Notification.organization_id == sub.org_id)
            )
        ).all()
    assert kinds == ["billing.invoice_issued"]


async def test_schedule_backfill_bills_once_and_can_pause(
    temporal_client, session_maker, plans, fake_stripe, stripe_billing
):
    ids = await ensure_billing_schedules(temporal_client, session_maker)
    assert ids == [BILLING_SCHEDULE_ID]
    assert await ensure_billing_schedules(temporal_client, session_maker) == ids  # idempotent
    handle = temporal_client.get_schedule_handle(BILLING_SCHEDULE_ID)
    two_months_ago = LAST_MONTH.previous()
    sub = await subscribe(
        session_maker, plans, plan="starter", started=two_months_ago.start, stripe=stripe_billing
    )
    try:
        async with billing_worker(
            temporal_client, BILLING_TASK_QUEUE, session_maker, stripe_billing
        ):
            # The firing on the 1st of last month closes the month before it.
            fire = LAST_MONTH.start
            for _ in range(2):  # the second backfill of the same firing creates nothing
                await backfill_billing(
                    temporal_client, start=fire, end=fire + timedelta(minutes=10)
                )
                invoices = []
                for _ in range(200):
                    invoices = await _invoices(session_maker, sub.org_id)
                    if invoices and invoices[0].status == "paid":
                        break
                    await asyncio.sleep(0.1)
                assert len(invoices) == 1
                assert invoices[0].period_start == two_months_ago.start
        await pause_billing(temporal_client, paused=True, note="maintenance")
        assert (await handle.describe()).schedule.state.paused
        await pause_billing(temporal_client, paused=False, note="done")
        assert not (await handle.describe()).schedule.state.paused
    finally:
        await handle.delete()
    assert len(fake_stripe.successful_charges()) == 1
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Payment).where(Payment.organization_id == sub.org_id)
        )
    assert count == 1
    assert uuid.UUID(str(sub.org_id))


async def test_plan_change_is_prorated_on_the_next_invoice(
    temporal_client, task_queue, session_maker, plans
):
    sub = await subscribe(session_maker, plans, plan="starter", started=LAST_MONTH.start)
    changed_at = LAST_MONTH.start + timedelta(days=10, hours=15)
    async with session_scope(session_maker) as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
        await record_change(session, subscription, plans["pro"].id, changed_at)
    async with billing_worker(temporal_client, task_queue, session_maker, None):
        result: BillingResult = await temporal_client.execute_workflow(
            BillingWorkflow.run,
            BillingInput(organization_id=str(sub.org_id), period=LAST_MONTH.key),
            id=billing_workflow_id(str(sub.org_id), LAST_MONTH.key),
            task_queue=task_queue,
        )
    # Each plan for the time it was in effect, to the second.
    starter = share_of_period(LAST_MONTH, LAST_MONTH.start, changed_at)
    pro = share_of_period(LAST_MONTH, changed_at, LAST_MONTH.end)
    fees = [round_cents(Decimal(19) * starter), round_cents(Decimal(49) * pro)]
    assert Decimal(result.total) == sum(fees)
    (invoice,) = await _invoices(session_maker, sub.org_id)
    assert [(line["kind"], line["amount"]) for line in invoice.line_items] == [
        ("plan", str(fees[0])),
        ("plan", str(fees[1])),
    ]
    async with session_maker() as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert subscription.plan_id == plans["pro"].id
