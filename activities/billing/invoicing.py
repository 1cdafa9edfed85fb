"""Billing activities: roll up usage into the period's invoice, push it to Stripe, charge it,
record payments, and end a subscription after dunning. Each is idempotent under retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.billing.metering import record_usage
from activities.billing.plan_history import PlanSpan, plan_spans
from activities.billing.pricing import (
    Adjustment,
    InvoiceDraft,
    Period,
    PlanPeriodShare,
    billable_days,
    build_invoice,
    build_prorated_invoice,
    invoice_number,
    to_cents,
)
from activities.billing.schedules import upsert_closed_execution
from activities.billing.stripe_billing import InvoiceLineCents, StripeBilling
from db.models.accounts import Notification, Organization, OrganizationMember
from db.models.billing import (
    LIVE_SUBSCRIPTION_STATUSES,
    Invoice,
    Payment,
    PaymentMethod,
    Plan,
    Subscription,
)
from db.session import session_scope
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
    billing_workflow_id,
)
from workflows.contracts import billing as contracts

MANUAL_PAYMENT_TERMS = timedelta(days=14)

# One statement: claim every unbilled usage record up to this period (late records of earlier
# periods included) for the invoice, and sum what was claimed by type.
ROLL_UP_SQL = text(
    """
    WITH billed AS (
        UPDATE usage_records SET invoice_id = :invoice_id
        WHERE organization_id = :organization_id AND invoice_id IS NULL AND period <= :period
        RETURNING usage_type, quantity
    )
    SELECT usage_type, sum(quantity) AS quantity FROM billed GROUP BY usage_type
    """
)
# The same claim when the plan changed during the period, summed per plan span as well: span i
# holds the records from the i-th change on (`thresholds` are the changes' times); records
# before the first change, late ones of earlier periods included, go to the first plan.
ROLL_UP_BY_SPAN_SQL = text(
    """
    WITH billed AS (
        UPDATE usage_records SET invoice_id = :invoice_id
        WHERE organization_id = :organization_id AND invoice_id IS NULL AND period <= :period
        RETURNING usage_type, quantity, recorded_at
    )
    SELECT usage_type, width_bucket(recorded_at, CAST(:thresholds AS timestamptz[])) AS span,
           sum(quantity) AS quantity
    FROM billed GROUP BY 1, 2
    """
)
PERIOD_NOT_ENDED = "PeriodNotEnded"


# What an organization keeps in the object store at the close of a period: run artifacts not
# expired by then, and stage logs that were moved to the object store (short logs stay in
# Postgres chunks and are not billed as storage). Runs are reached through the organization's
# projects, both lookups served by indexes, so the roll-up never scans every run.
STORAGE_BYTES_SQL = text(
    """
    WITH runs AS (
        SELECT r.id FROM pipeline_runs r
        WHERE r.project_id IN (
                SELECT p.id FROM projects p WHERE p.organization_id = :organization_id
            )
          AND r.organization_id = :organization_id
    )
    SELECT
        (SELECT coalesce(sum(a.size_bytes), 0) FROM artifacts a
          WHERE a.run_id IN (SELECT id FROM runs)
            AND a.created_at < :period_end
            AND (a.expires_at IS NULL OR a.expires_at > :period_end))
      + (SELECT coalesce(sum(se.log_size_bytes), 0) FROM stage_executions se
          WHERE se.run_id IN (SELECT id FROM runs)
            AND se.log_object_key IS NOT NULL
            AND se.created_at < :period_end) AS stored_bytes
    """
)
BYTES_PER_GB = Decimal(10**9)  # decimal gigabytes, as the unit on the invoice says
GB_QUANTUM = Decimal("0.000001")  # the scale of usage_records.quantity


def storage_key(organization_id: uuid.UUID, period: Period) -> str:
    return f"storage:{organization_id}:{period.key}"


async def record_storage_usage(
    session: AsyncSession, organization_id: uuid.UUID, period: Period
) -> Decimal:
    """One storage_gb usage record per (organization, period), measured at the period's close
    and dated inside the period, so the roll-up that follows bills it. Idempotent by key."""
    stored = int(
        await session.scalar(
            STORAGE_BYTES_SQL,
            {"organization_id": organization_id, "period_end": period.end},
        )
        or 0
    )
    gigabytes = (Decimal(stored) / BYTES_PER_GB).quantize(GB_QUANTUM, rounding=ROUND_HALF_UP)
    await record_usage(
        session,
        organization_id=organization_id,
        project_id=None,
        usage_type="storage_gb",
        quantity=gigabytes,
        idempotency_key=storage_key(organization_id, period),
        recorded_at=period.end - timedelta(microseconds=1),
        source_refs={"bytes": stored, "measured_at": period.end.isoformat()},
    )
    return gigabytes


def included_quantities(plan: Plan) -> dict[str, Decimal | None]:
    """Included quantity per usage type; None = unlimited (NULL on the plan)."""

    def maybe(value: int | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return {
        "build_minutes": maybe(plan.included_build_minutes),
        "agent_tokens": maybe(plan.included_agent_tokens),
        "storage_gb": maybe(plan.included_storage_gb),
        "bandwidth_gb": maybe(plan.included_bandwidth_gb),
        "api_requests": maybe(plan.included_api_requests),
    }


def unit_prices(plan: Plan) -> dict[str, Decimal]:
    """Overage price per usage type from the plan; NULL means the type is not billed."""
    prices = {
        "build_minutes": plan.overage_build_minute_price,
        "storage_gb": plan.overage_storage_gb_price,
        "bandwidth_gb": plan.overage_bandwidth_gb_price,
        "agent_tokens": plan.overage_agent_token_price,
        "api_requests": plan.overage_api_request_price,
    }
    return {key: value for key, value in prices.items() if value is not None}


async def owner_user_ids(session: AsyncSession, organization_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(OrganizationMember.user_id).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.role == "owner",
        )
    )
    return list(rows.all())


async def notify_owners(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    kind: str,
    title: str,
    body: str,
    data: dict[str, object],
) -> None:
    for user_id in await owner_user_ids(session, organization_id):
        session.add(
            Notification(
                user_id=user_id,
                organization_id=organization_id,
                type=kind,
                title=title,
                body=body,
                data=data,
            )
        )


async def free_plan_id(session: AsyncSession) -> uuid.UUID | None:
    return (await session.scalars(select(Plan.id).where(Plan.slug == "free"))).first()


async def move_to_free_plan(
    session: AsyncSession, subscription: Subscription, *, status: str, at: datetime
) -> None:
    """End `subscription` with `status` and put the organization on an active Free subscription."""
    subscription.status = status
    subscription.ended_at = at
    subscription.cancelled_at = subscription.cancelled_at or at
    await session.flush()
    free_id = await free_plan_id(session)
    if free_id is None:
        return
    period = Period.containing(at)
    session.add(
        Subscription(
            organization_id=subscription.organization_id,
            plan_id=free_id,
            status="active",
            current_period_start=at,
            current_period_end=period.end,
            stripe_customer_id=subscription.stripe_customer_id,
        )
    )


async def close_execution(
    session: AsyncSession,
    organization_id: uuid.UUID,
    period_key: str,
    *,
    status: str = "completed",
    error: str | None = None,
) -> None:
    """Close this workflow's workflow_executions row from inside one of its activities.

    An upsert: a fast run (a $0 invoice) can finish before its starter commits the row, whose
    later insert (ON CONFLICT DO NOTHING) then leaves this closed row alone."""
    try:
        info = activity.info()
    except RuntimeError:  # called outside an activity (benchmarks, scripts)
        return
    await upsert_closed_execution(
        session,
        organization_id=organization_id,
        period_key=period_key,
        workflow_id=info.workflow_id or "",
        run_id=info.workflow_run_id or "",
        workflow_type=info.workflow_type or "BillingWorkflow",
        task_queue=info.task_queue,
        status=status,
        error=error,
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

    # ------------------------------------------------------------------ invoice

    @contracts.CREATE_INVOICE.implement
    async def create_invoice(self, request: InvoiceRequest) -> InvoiceSummary:
        """The (organization, period) invoice, created at most once (unique org + period_start)."""
        period = Period.parse(request.period)
        organization_id = uuid.UUID(request.organization_id)
        # The workflow's clock when it asked (the activity's own for older workflows).
        as_of = request.as_of or datetime.now(UTC)
        if period.end > as_of:
            # Refused for good: the workflow fails, and its ID can be started again once the
            # period is over.
            raise ApplicationError(
                f"period {period.key} has not ended; it can be invoiced from "
                f"{period.end.isoformat()}",
                type=PERIOD_NOT_ENDED,
                non_retryable=True,
            )
        async with session_scope(self.session_maker) as session:
            summary = await self._create_invoice(session, organization_id, period)
            if not summary.collect_with_stripe:
                await close_execution(session, organization_id, period.key)
            return summary

    async def _create_invoice(
        self, session: AsyncSession, organization_id: uuid.UUID, period: Period
    ) -> InvoiceSummary:
        subscription = (
            await session.scalars(
                select(Subscription)
                .where(
                    Subscription.organization_id == organization_id,
                    Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
                )
                .with_for_update()
            )
        ).first()
        # Read after the lock: a concurrent run of the same period has committed by now.
        existing = (
            await session.scalars(
                select(Invoice).where(
                    Invoice.organization_id == organization_id,
                    Invoice.period_start == period.start,
                )
            )
        ).first()
        if existing is not None:
            return self._summary(existing, created=False)
        if subscription is None:
            return InvoiceSummary(reason="no live subscription")
        if subscription.current_period_start >= period.end:
            return InvoiceSummary(reason="period closed before the subscription started")

        now = datetime.now(UTC)
        spans = await plan_spans(session, subscription, period)
        closing_plan = await session.get_one(Plan, spans[-1].plan_id)

        expired_trial = False
        if subscription.status == "trialing" and (
            subscription.trial_end is None or subscription.trial_end <= period.end
        ):
            expired_trial = self.stripe is not None and not await self._has_default_card(
                session, organization_id
            )

        service_start = max(subscription.current_period_start, period.start)
        days = billable_days(period, service_start=service_start, trial_end=subscription.trial_end)
        first_billable = period.end - timedelta(days=days)
        if expired_trial:
            days = 0

        adjustments: list[Adjustment] = []
        previous_credit = (
            await session.scalars(
                select(Invoice.credit_carried_forward).where(
                    Invoice.organization_id == organization_id,
                    Invoice.period_start == period.previous().start,
                )
            )
        ).first()
        if previous_credit:
            adjustments.append(Adjustment("Credit from the previous invoice", -previous_credit))

        number = invoice_number(str(organization_id), period)
        invoice_id = uuid.uuid4()
        inserted = await session.execute(
            pg_insert(Invoice)
            .values(
                id=invoice_id,
                organization_id=organization_id,
                subscription_id=subscription.id,
                invoice_number=number,
                period_start=period.start,
                period_end=period.end,
                status="draft",
                workflow_id=billing_workflow_id(str(organization_id), period.key),
            )
            .on_conflict_do_nothing()
            .returning(Invoice.id)
        )
        if inserted.scalar_one_or_none() is None:
            raise RuntimeError(f"invoice {number} appeared concurrently; retrying")
        await record_storage_usage(session, organization_id, period)
        claim = {"invoice_id": invoice_id, "organization_id": organization_id, "period": period.key}
        if len(spans) == 1:
            usage = {
                row.usage_type: Decimal(row.quantity)
                for row in await session.execute(ROLL_UP_SQL, claim)
            }
            draft = build_invoice(
                plan_name=closing_plan.name,
                plan_price=closing_plan.price_monthly or Decimal(0),
                period=period,
                days=days,
                usage=usage,
                included=included_quantities(closing_plan),
                adjustments=adjustments,
                tax_rate=self.tax_rate,
                unit_prices=unit_prices(closing_plan),
            )
        else:
            draft = await self._prorated_draft(
                session, claim, period, spans, first_billable, adjustments
            )
        collect_with_stripe = self.stripe is not None and draft.total > 0
        status = "open" if draft.total > 0 else "paid"
        await session.execute(
            update(Invoice)
            .where(Invoice.id == invoice_id)
            .values(
                status=status,
                line_items=[line.as_json() for line in draft.lines],
                subtotal=draft.subtotal,
                tax_rate=draft.tax_rate,
                tax=draft.tax,
                total=draft.total,
                credit_carried_forward=draft.credit_carried_forward,
                collection_method=(
                    "charge_automatically" if collect_with_stripe else "send_invoice"
                ),
                issued_at=now,
                due_at=now if collect_with_stripe else now + MANUAL_PAYMENT_TERMS,
                paid_at=now if status == "paid" else None,
            )
        )
        await self._close_period(session, subscription, period, expired_trial)
        if not collect_with_stripe and draft.total > 0:
            await notify_owners(
                session,
                organization_id,
                kind="billing.invoice_issued",
                title=f"Invoice {number} issued",
                body=f"Total {draft.total} USD, due in {MANUAL_PAYMENT_TERMS.days} days.",
                data={"invoice_id": str(invoice_id), "total": str(draft.total)},
            )
        return InvoiceSummary(
            invoice_id=str(invoice_id),
            invoice_number=number,
            total=str(draft.total),
            status=status,
            created=True,
            collect_with_stripe=collect_with_stripe,
        )

    async def _prorated_draft(
        self,
        session: AsyncSession,
        claim: dict[str, object],
        period: Period,
        spans: list[PlanSpan],
        first_billable: datetime,
        adjustments: list[Adjustment],
    ) -> InvoiceDraft:
        """Each plan of the period for the time it was in effect (every change, not only the
        last): its fee for its billable time, its usage against its prorated allowance."""
        usage: list[dict[str, Decimal]] = [{} for _ in spans]
        rows = await session.execute(
            ROLL_UP_BY_SPAN_SQL, {**claim, "thresholds": [span.start for span in spans[1:]]}
        )
        for row in rows:
            bucket = usage[min(max(int(row.span), 0), len(spans) - 1)]
            bucket[row.usage_type] = bucket.get(row.usage_type, Decimal(0)) + Decimal(row.quantity)
        shares: list[PlanPeriodShare] = []
        for span, span_usage in zip(spans, usage, strict=True):
            plan = await session.get_one(Plan, span.plan_id)
            billed_from = max(span.start, first_billable)
            shares.append(
                PlanPeriodShare(
                    plan_name=plan.name,
                    plan_price=plan.price_monthly or Decimal(0),
                    start=span.start,
                    end=span.end,
                    billed_from=billed_from,
                    billed_to=max(span.end, billed_from),
                    usage=span_usage,
                    included=included_quantities(plan),
                    unit_prices=unit_prices(plan),
                )
            )
        return build_prorated_invoice(
            period=period, shares=shares, adjustments=adjustments, tax_rate=self.tax_rate
        )

    async def _close_period(
        self,
        session: AsyncSession,
        subscription: Subscription,
        period: Period,
        expired_trial: bool,
    ) -> None:
        """Advance the subscription past `period`: trial end, cancellation."""
        if subscription.current_period_end <= period.end:
            subscription.current_period_start = period.end
            subscription.current_period_end = period.next().end
        trial_over = subscription.trial_end is None or subscription.trial_end <= period.end
        if subscription.status == "trialing" and trial_over:
            if expired_trial:
                await move_to_free_plan(session, subscription, status="expired", at=period.end)
                await notify_owners(
                    session,
                    subscription.organization_id,
                    kind="billing.trial_expired",
                    title="Your trial ended",
                    body="No payment method was on file; the organization is on the Free plan.",
                    data={"subscription_id": str(subscription.id)},
                )
                return
            subscription.status = "active"
        if subscription.cancel_at_period_end:
            await move_to_free_plan(session, subscription, status="cancelled", at=period.end)

    async def _has_default_card(self, session: AsyncSession, organization_id: uuid.UUID) -> bool:
        found = await session.scalars(
            select(PaymentMethod.id).where(
                PaymentMethod.organization_id == organization_id,
                PaymentMethod.is_default.is_(True),
                PaymentMethod.detached_at.is_(None),
            )
        )
        return found.first() is not None

    def _summary(self, invoice: Invoice, *, created: bool) -> InvoiceSummary:
        return InvoiceSummary(
            invoice_id=str(invoice.id),
            invoice_number=invoice.invoice_number,
            total=str(invoice.total),
            status=invoice.status,
            created=created,
            collect_with_stripe=(
                self.stripe is not None and invoice.status == "open" and invoice.total > 0
            ),
            stripe_invoice_id=invoice.stripe_invoice_id,
        )

    # ------------------------------------------------------------------ Stripe

    def _stripe(self) -> StripeBilling:
        if self.stripe is None:
            raise LookupError("Stripe is not configured")
        return self.stripe

    @contracts.PUSH_INVOICE_TO_STRIPE.implement
    async def push_invoice_to_stripe(self, request: StripeInvoiceRequest) -> StripeInvoiceRef:
        """Customer (once per organization), invoice, items and finalize, each with its key."""
        stripe = self._stripe()
        invoice_id = uuid.UUID(request.invoice_id)
        async with self.session_maker() as session:
            invoice = await session.get_one(Invoice, invoice_id)
            organization = await session.get_one(Organization, invoice.organization_id)
        customer_id = organization.stripe_customer_id
        if customer_id is None:
            async with heartbeating():
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
        lines = [
            InvoiceLineCents(str(line["description"]), to_cents(Decimal(str(line["amount"]))))
            for line in invoice.line_items
            if Decimal(str(line["amount"])) != 0
        ]
        if invoice.tax > 0:
            lines.append(
                InvoiceLineCents(f"Tax ({invoice.tax_rate * 100:.2f}%)", to_cents(invoice.tax))
            )
        async with heartbeating():
            stripe_invoice_id = await stripe.create_invoice(
                customer_id=customer_id,
                invoice_number=invoice.invoice_number,
                organization_id=str(organization.id),
                lines=lines,
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

    @contracts.CHARGE_INVOICE.implement
    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        """Pay the invoice with the default card; PaymentDeclined is left to the dunning loop."""
        async with self.session_maker() as session:
            invoice = await session.get_one(Invoice, uuid.UUID(request.invoice_id))
        if invoice.status == "paid":  # paid out of band (webhook, hosted page)
            return ChargeResult(paid=True, amount_paid_cents=to_cents(invoice.amount_paid))
        async with heartbeating():
            result = await self._stripe().pay_invoice(
                stripe_invoice_id=request.stripe_invoice_id,
                invoice_number=request.invoice_number,
                attempt=request.attempt,
            )
        return ChargeResult(
            paid=True, charge_id=result.charge_id, amount_paid_cents=result.amount_paid_cents
        )

    @contracts.RECORD_PAYMENT.implement
    async def record_payment(self, record: PaymentRecord) -> None:
        """The payment row of one attempt (idempotent by key) and its effect on the invoice and
        subscription; owners are notified once per failed attempt."""
        now = datetime.now(UTC)
        async with session_scope(self.session_maker) as session:
            invoice = (
                await session.scalars(
                    select(Invoice)
                    .where(Invoice.id == uuid.UUID(record.invoice_id))
                    .with_for_update()
                )
            ).one()
            charge = record.charge
            default_card = (
                await session.scalars(
                    select(PaymentMethod.id).where(
                        PaymentMethod.organization_id == invoice.organization_id,
                        PaymentMethod.is_default.is_(True),
                    )
                )
            ).first()
            inserted = await session.execute(
                pg_insert(Payment)
                .values(
                    invoice_id=invoice.id,
                    organization_id=invoice.organization_id,
                    payment_method_id=default_card,
                    amount=invoice.total,
                    currency=invoice.currency,
                    status="succeeded" if charge.paid else "failed",
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
            subscription = (
                await session.scalars(
                    select(Subscription)
                    .where(
                        Subscription.organization_id == invoice.organization_id,
                        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
                    )
                    .with_for_update()
                )
            ).first()
            if charge.paid:
                if invoice.status != "paid":
                    invoice.status = "paid"
                    invoice.amount_paid = invoice.total
                    invoice.paid_at = now
                if subscription is not None and subscription.status == "past_due":
                    subscription.status = "active"
                await close_execution(
                    session, invoice.organization_id, Period.containing(invoice.period_start).key
                )
                return
            if subscription is not None and subscription.status != "past_due":
                subscription.status = "past_due"
            if new_row:
                retry = (
                    f"We will retry in {record.next_retry_in_days} day(s)."
                    if record.next_retry_in_days is not None
                    else "This was the last attempt."
                )
                await notify_owners(
                    session,
                    invoice.organization_id,
                    kind="billing.payment_failed",
                    title=f"Payment for invoice {invoice.invoice_number} failed",
                    body=f"{charge.failure_message or 'The card was declined.'} {retry}",
                    data={"invoice_id": str(invoice.id), "attempt": record.attempt + 1},
                )

    @contracts.END_SUBSCRIPTION_FOR_NONPAYMENT.implement
    async def end_subscription_for_nonpayment(self, request: EndSubscriptionRequest) -> None:
        """After the last dunning attempt: invoice uncollectible, subscription cancelled, Free."""
        now = datetime.now(UTC)
        organization_id = uuid.UUID(request.organization_id)
        async with session_scope(self.session_maker) as session:
            invoice = await session.get_one(Invoice, uuid.UUID(request.invoice_id))
            if invoice.status == "paid":
                return
            invoice.status = "uncollectible"
            subscription = (
                await session.scalars(
                    select(Subscription)
                    .where(
                        Subscription.organization_id == organization_id,
                        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
                    )
                    .with_for_update()
                )
            ).first()
            if subscription is None or subscription.status != "past_due":
                return  # already handled by an earlier attempt of this activity
            await move_to_free_plan(session, subscription, status="cancelled", at=now)
            await close_execution(
                session, organization_id, Period.containing(invoice.period_start).key
            )
            await notify_owners(
                session,
                organization_id,
                kind="billing.subscription_cancelled",
                title="Subscription cancelled for non-payment",
                body=f"Invoice {invoice.invoice_number} stayed unpaid; you are on the Free plan.",
                data={"invoice_id": str(invoice.id)},
            )

    @contracts.CLOSE_FAILED_EXECUTION.implement
    async def close_failed_execution(self, request: CloseExecutionRequest) -> None:
        """The workflow gave up (an activity failed for good, or it was cancelled): its
        workflow_executions row must not stay `running`."""
        async with session_scope(self.session_maker) as session:
            await close_execution(
                session,
                uuid.UUID(request.organization_id),
                request.period,
                status=request.status,
                error=request.error,
            )
