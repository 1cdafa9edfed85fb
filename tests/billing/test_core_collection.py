"""The billing core runs without Temporal (a script, a benchmark): the period's invoice, a
failed charge recorded by concurrent duplicate calls, and the end of a subscription after
dunning, each applied once; a step outside any workflow leaves no execution row."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.billing.charging import Charging
from core.billing.errors import PeriodNotEnded
from core.billing.invoicing import Invoicing, ensure_period_ended
from core.billing.periods import Period
from db.models.accounts import Notification, OrganizationMember
from db.models.billing import Invoice, Payment, Plan, Subscription
from db.models.operations import WorkflowExecution
from db.session import session_scope
from forgeline.statuses.billing import InvoiceStatus, PaymentStatus, SubscriptionStatus
from tests.billing.conftest import subscribe
from workflows.billing_models import (
    ChargeResult,
    EndSubscriptionRequest,
    InvoiceSummary,
    PaymentRecord,
)

THIS_MONTH = Period.containing(datetime.now(UTC))
LAST_MONTH = THIS_MONTH.previous()


async def _count(session_maker, query) -> int:
    async with session_maker() as session:
        return int(await session.scalar(query) or 0)


async def test_collection_steps_apply_once_under_concurrent_duplicates(session_maker, plans):
    sub = await subscribe(session_maker, plans, plan="pro", started=LAST_MONTH.start)
    org_id = sub.org_id
    invoicing = Invoicing(collects_with_stripe=True, tax_rate=Decimal("0"))

    async def create() -> InvoiceSummary:
        async with session_scope(session_maker) as session:
            return await invoicing.create_invoice(session, org_id, LAST_MONTH)

    first, second = await asyncio.gather(create(), create())
    assert {s.created for s in (first, second)} == {True, False}
    summary = first if first.created else second
    assert summary.invoice_id is not None and second.invoice_id == first.invoice_id
    assert summary.status == InvoiceStatus.OPEN and summary.collect_with_stripe
    assert Decimal(summary.total) == plans["pro"].price_monthly

    charging = Charging(session_maker, None)
    declined = PaymentRecord(
        invoice_id=summary.invoice_id,
        attempt=0,
        charge=ChargeResult(paid=False, failure_message="Your card was declined."),
        next_retry_in_days=1,
    )
    await asyncio.gather(*(charging.record_payment(declined, None) for _ in range(3)))

    owners = await _count(
        session_maker,
        select(func.count()).where(
            OrganizationMember.organization_id == org_id, OrganizationMember.role == "owner"
        ),
    )
    assert owners >= 1
    payments = await _count(
        session_maker, select(func.count()).where(Payment.organization_id == org_id)
    )
    failed = await _count(
        session_maker,
        select(func.count()).where(
            Payment.organization_id == org_id, Payment.status == PaymentStatus.FAILED
        ),
    )
    assert payments == failed == 1
    assert (
        await _count(
            session_maker,
            select(func.count()).where(
                Notification.organization_id == org_id,
                Notification.type == "billing.payment_failed",
            ),
        )
        == owners
    )
    async with session_maker() as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert subscription.status == SubscriptionStatus.PAST_DUE

    end = EndSubscriptionRequest(invoice_id=summary.invoice_id, organization_id=str(org_id))
    await asyncio.gather(*(charging.end_subscription_for_nonpayment(end, None) for _ in range(3)))
    async with session_maker() as session:
        invoice = await session.get_one(Invoice, summary.invoice_id)
        subscriptions = (
            await session.scalars(
                select(Subscription).where(Subscription.organization_id == org_id)
            )
        ).all()
        free = (await session.scalars(select(Plan).where(Plan.slug == "free"))).one()
    assert invoice.status == InvoiceStatus.UNCOLLECTIBLE
    by_status = sorted((s.status, s.plan_id == free.id) for s in subscriptions)
    assert by_status == [(SubscriptionStatus.ACTIVE, True), (SubscriptionStatus.CANCELLED, False)]
    assert (
        await _count(
            session_maker,
            select(func.count()).where(
                Notification.organization_id == org_id,
                Notification.type == "billing.subscription_cancelled",
            ),
        )
        == owners
    )
    # Called outside any workflow: no execution row is invented for it.
    assert (
        await _count(
            session_maker,
            select(func.count()).where(WorkflowExecution.organization_id == org_id),
        )
        == 0
    )


async def test_hostile_requests_are_refused_before_any_write(session_maker, plans):
    with pytest.raises(PeriodNotEnded, match="has not ended"):
        ensure_period_ended(THIS_MONTH, datetime.now(UTC))
    with pytest.raises(ValueError, match="YYYY-MM"):
        Period.parse("2026-13'; DROP TABLE invoices; --")
    sub = await subscribe(session_maker, plans, plan="pro", started=LAST_MONTH.start)
    async with session_scope(session_maker) as session:
        summary = await Invoicing(collects_with_stripe=False).create_invoice(
            session, sub.org_id, LAST_MONTH
        )
    assert summary.status == InvoiceStatus.OPEN and not summary.collect_with_stripe
    # No Stripe configured: pushing is refused for good (a non-retryable LookupError), and
    # nothing about the invoice changes.
    with pytest.raises(LookupError, match="Stripe is not configured"):
        await Charging(session_maker, None).push_invoice_to_stripe(
            uuid.UUID(summary.invoice_id or "")
        )
    async with session_maker() as session:
        invoice = await session.get_one(Invoice, summary.invoice_id)
    assert invoice.stripe_invoice_id is None and invoice.status == InvoiceStatus.OPEN
