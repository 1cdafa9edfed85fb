"""Collecting an invoice: push it to Stripe, charge the default card, record each attempt's
payment, and end the subscription when the last dunning attempt fails.

Stripe calls run outside any database transaction; each write is its own short one. Every
step is idempotent under retries (Stripe idempotency keys, unique payment keys, status checks).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.billing import repository
from core.billing.executions import ExecutionRef, close_execution
from core.billing.periods import Period
from core.billing.pricing import to_cents
from core.billing.subscription_periods import move_to_free_plan
from db.models.accounts import Organization
from db.models.billing import Invoice, Payment
from db.session import session_scope
from forgeline.statuses.billing import InvoiceStatus, PaymentStatus, SubscriptionStatus
from infra.stripe_billing import InvoiceLineCents, StripeBilling
from workflows.billing_models import (
    ChargeRequest,
    ChargeResult,
    EndSubscriptionRequest,
    PaymentRecord,
    StripeInvoiceRef,
)

# Wraps each long external call: the activity heartbeats through it, a script passes nothing.
KeepAlive = Callable[[], AbstractAsyncContextManager[None]]


def stripe_lines(invoice: Invoice) -> list[InvoiceLineCents]:
    """The invoice's non-zero lines in cents, tax as a line of its own."""
    lines = [
        InvoiceLineCents(str(line["description"]), to_cents(Decimal(str(line["amount"]))))
        for line in invoice.line_items
        if Decimal(str(line["amount"])) != 0
    ]
    if invoice.tax > 0:
        lines.append(
            InvoiceLineCents(f"Tax ({invoice.tax_rate * 100:.2f}%)", to_cents(invoice.tax))
        )
    return lines


@dataclass
class Charging:
    session_maker: async_sessionmaker[AsyncSession]
    stripe: StripeBilling | None
    keep_alive: KeepAlive = field(default=contextlib.nullcontext)

    def _stripe(self) -> StripeBilling:
        if self.stripe is None:
            raise LookupError("Stripe is not configured")
        return self.stripe

    async def push_invoice_to_stripe(self, invoice_id: uuid.UUID) -> StripeInvoiceRef:
        """Customer (once per organization), invoice, items and finalize, each with its key."""
        stripe = self._stripe()
        async with self.session_maker() as session:
            invoice = await session.get_one(Invoice, invoice_id)
            organization = await session.get_one(Organization, invoice.organization_id)
        customer_id = organization.stripe_customer_id
        if customer_id is None:
            async with self.keep_alive():
                customer_id = await stripe.ensure_customer(
                    organization_id=str(organization.id),
                    name=organization.name,
                    email=organization.billing_email,
                )
            async with session_scope(self.session_maker) as session:
                await session.execute(
                    update(Organization)
                    .where(Organization.id == organization.id)
                    .values(stripe_customer_id=customer_id)
                )
        async with self.keep_alive():
            stripe_invoice_id = await stripe.create_invoice(
                customer_id=customer_id,
                invoice_number=invoice.invoice_number,
                organization_id=str(organization.id),
                lines=stripe_lines(invoice),
                currency=invoice.currency.lower(),
            )
            await stripe.finalize_invoice(
                stripe_invoice_id=stripe_invoice_id, invoice_number=invoice.invoice_number
            )
        async with session_scope(self.session_maker) as session:
            await session.execute(
                update(Invoice)
                .where(Invoice.id == invoice_id)
                .values(stripe_invoice_id=stripe_invoice_id)
            )
        return StripeInvoiceRef(
            invoice_id=str(invoice_id),
            stripe_invoice_id=stripe_invoice_id,
            stripe_customer_id=customer_id,
        )

    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        """Pay the invoice with the default card; PaymentDeclined is left to the dunning loop."""
        async with self.session_maker() as session:
            invoice = await session.get_one(Invoice, uuid.UUID(request.invoice_id))
        if invoice.status == InvoiceStatus.PAID:  # paid out of band (webhook, hosted page)
            return ChargeResult(paid=True, amount_paid_cents=to_cents(invoice.amount_paid))
        async with self.keep_alive():
            result = await self._stripe().pay_invoice(
                stripe_invoice_id=request.stripe_invoice_id,
                invoice_number=request.invoice_number,
                attempt=request.attempt,
            )
        return ChargeResult(
            paid=True, charge_id=result.charge_id, amount_paid_cents=result.amount_paid_cents
        )

    async def record_payment(self, record: PaymentRecord, execution: ExecutionRef | None) -> None:
        """The payment row of one attempt (idempotent by key) and its effect on the invoice and
        subscription; owners are notified once per failed attempt."""
        now = datetime.now(UTC)
        async with session_scope(self.session_maker) as session:
            invoice = await repository.invoice_for_update(session, uuid.UUID(record.invoice_id))
            charge = record.charge
            inserted = await session.execute(
                pg_insert(Payment)
                .values(
                    invoice_id=invoice.id,
                    organization_id=invoice.organization_id,
                    payment_method_id=await repository.default_card_id(
                        session, invoice.organization_id
                    ),
                    amount=invoice.total,
                    currency=invoice.currency,
                    status=PaymentStatus.SUCCEEDED if charge.paid else PaymentStatus.FAILED,
                    attempt_number=record.attempt + 1,
                    stripe_charge_id=charge.charge_id,
                    idempotency_key=f"{invoice.invoice_number}:pay:{record.attempt}",
                    failure_code=None if charge.paid else "card_declined",
                    failure_message=charge.failure_message,
                    paid_at=now if charge.paid else None,
                )
                .on_conflict_do_nothing()
                .returning(Payment.id)
            )
            new_row = inserted.scalar_one_or_none() is not None
            subscription = await repository.live_subscription(
                session, invoice.organization_id, lock=True
            )
            if charge.paid:
                if invoice.status != InvoiceStatus.PAID:
                    invoice.status = InvoiceStatus.PAID
                    invoice.amount_paid = invoice.total
                    invoice.paid_at = now
                if subscription is not None and subscription.status == SubscriptionStatus.PAST_DUE:
                    subscription.status = SubscriptionStatus.ACTIVE
                await close_execution(
                    session,
                    execution,
                    invoice.organization_id,
                    Period.containing(invoice.period_start).key,
                )
                return
            if subscription is not None and subscription.status != SubscriptionStatus.PAST_DUE:
                subscription.status = SubscriptionStatus.PAST_DUE
            if new_row:
                retry = (
                    f"We will retry in {record.next_retry_in_days} day(s)."
                    if record.next_retry_in_days is not None
                    else "This was the last attempt."
                )
                await repository.notify_owners(
                    session,
                    invoice.organization_id,
                    kind="billing.payment_failed",
                    title=f"Payment for invoice {invoice.invoice_number} failed",
                    body=f"{charge.failure_message or 'The card was declined.'} {retry}",
                    data={"invoice_id": str(invoice.id), "attempt": record.attempt + 1},
                )

    async def end_subscription_for_nonpayment(
        self, request: EndSubscriptionRequest, execution: ExecutionRef | None
    ) -> None:
        """After the last dunning attempt: invoice uncollectible, subscription cancelled, Free."""
        now = datetime.now(UTC)
        organization_id = uuid.UUID(request.organization_id)
        async with session_scope(self.session_maker) as session:
            invoice = await session.get_one(Invoice, uuid.UUID(request.invoice_id))
            if invoice.status == InvoiceStatus.PAID:
                return
            invoice.status = InvoiceStatus.UNCOLLECTIBLE
            subscription = await repository.live_subscription(session, organization_id, lock=True)
            if subscription is None or subscription.status != SubscriptionStatus.PAST_DUE:
                return  # already handled by an earlier attempt of this activity
            await move_to_free_plan(
                session, subscription, status=SubscriptionStatus.CANCELLED, at=now
            )
            await close_execution(
                session, execution, organization_id, Period.containing(invoice.period_start).key
            )
            await repository.notify_owners(
                session,
                organization_id,
                kind="billing.subscription_cancelled",
                title="Subscription cancelled for non-payment",
                body=f"Invoice {invoice.invoice_number} stayed unpaid; you are on the Free plan.",
                data={"invoice_id": str(invoice.id)},
            )
