"""Billing activities: roll up usage into the period's invoice, push it to Stripe, charge it,
record payments, and end a subscription after dunning. Adapters over core.billing; each step
is idempotent under retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from core.billing.charging import Charging
from core.billing.errors import PeriodNotEnded
from core.billing.executions import ExecutionRef, close_execution
from core.billing.invoicing import Invoicing, ensure_period_ended
from core.billing.periods import Period
from core.notifications.sources import announce_invoice
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.statuses.billing import InvoiceStatus
from forgeline.statuses.notifications import NotificationEventType
from infra.stripe_billing import StripeBilling
from workflows.billing_models import (
    ChargeRequest,
    ChargeResult,
    CloseExecutionRequest,
    EndSubscriptionRequest,
    InvoiceRequest,
    InvoiceSummary,
    PaymentRecord,
    StripeInvoiceRef,
    StripeInvoiceRequest,
)
from workflows.contracts import billing as contracts


def current_execution() -> ExecutionRef | None:
    """The billing run this activity belongs to; None when called outside an activity
    (benchmarks, scripts)."""
    try:
        info = activity.info()
    except RuntimeError:
        return None
    return ExecutionRef(
        workflow_id=info.workflow_id or "",
        run_id=info.workflow_run_id or "",
        workflow_type=info.workflow_type or "BillingWorkflow",
        task_queue=info.task_queue,
    )


@asynccontextmanager
async def heartbeating(every: float = 1.0) -> AsyncIterator[None]:
    """Heartbeat while a single long external call runs, so a dead worker is noticed quickly."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


@dataclass
class BillingActivities:
    session_maker: async_sessionmaker[AsyncSession]
    stripe: StripeBilling | None
    tax_rate: Decimal = Decimal("0")
    # Where invoice and payment events are announced (none: no notifications, e.g. benchmarks).
    temporal: Client | None = None
    settings: Settings | None = None

    def __post_init__(self) -> None:
        self._invoicing = Invoicing(self.stripe is not None, self.tax_rate)
        self._charging = Charging(self.session_maker, self.stripe, keep_alive=heartbeating)

    @contracts.CREATE_INVOICE.implement
    async def create_invoice(self, request: InvoiceRequest) -> InvoiceSummary:
        """The (organization, period) invoice, created at most once (unique org + period_start)."""
        period = Period.parse(request.period)
        organization_id = uuid.UUID(request.organization_id)
        try:
            # The workflow's clock when it asked (the activity's own for older workflows).
            ensure_period_ended(period, request.as_of or datetime.now(UTC))
        except PeriodNotEnded as error:
            # Refused for good: the workflow fails, and its ID can be started again once the
            # period is over.
            raise ApplicationError(
                error.detail, type=contracts.PERIOD_NOT_ENDED, non_retryable=True
            ) from error
        async with session_scope(self.session_maker) as session:
            summary = await self._invoicing.create_invoice(session, organization_id, period)
            if not summary.collect_with_stripe:
                await close_execution(session, current_execution(), organization_id, period.key)
        if summary.invoice_id and summary.status == InvoiceStatus.OPEN:
            await self._announce(summary.invoice_id, NotificationEventType.INVOICE_ISSUED)
        return summary

    async def _announce(
        self, invoice_id: str, kind: NotificationEventType, attempt: int = 0
    ) -> None:
        if self.temporal is not None and self.settings is not None:
            await announce_invoice(
                self.temporal, self.session_maker, self.settings, invoice_id, kind, attempt=attempt
            )

    @contracts.PUSH_INVOICE_TO_STRIPE.implement
    async def push_invoice_to_stripe(self, request: StripeInvoiceRequest) -> StripeInvoiceRef:
        """Customer (once per organization), invoice, items and finalize, each with its key."""
        return await self._charging.push_invoice_to_stripe(uuid.UUID(request.invoice_id))

    @contracts.CHARGE_INVOICE.implement
    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        """Pay the invoice with the default card; PaymentDeclined is left to the dunning loop."""
        return await self._charging.charge_invoice(request)

    @contracts.RECORD_PAYMENT.implement
    async def record_payment(self, record: PaymentRecord) -> None:
        """The payment row of one attempt and its effect on the invoice and subscription."""
        await self._charging.record_payment(record, current_execution())
        if not record.charge.paid:
            await self._announce(
                record.invoice_id, NotificationEventType.PAYMENT_FAILED, record.attempt + 1
            )

    @contracts.END_SUBSCRIPTION_FOR_NONPAYMENT.implement
    async def end_subscription_for_nonpayment(self, request: EndSubscriptionRequest) -> None:
        """After the last dunning attempt: invoice uncollectible, subscription cancelled, Free."""
        await self._charging.end_subscription_for_nonpayment(request, current_execution())

    @contracts.CLOSE_FAILED_EXECUTION.implement
    async def close_failed_execution(self, request: CloseExecutionRequest) -> None:
        """The workflow gave up (an activity failed for good, or it was cancelled): its
        workflow_executions row must not stay `running`."""
        async with session_scope(self.session_maker) as session:
            await close_execution(
                session,
                current_execution(),
                uuid.UUID(request.organization_id),
                request.period,
                status=request.status,
                error=request.error,
            )
