"""The period's invoice: created at most once per (organization, period), from the plans in
effect over the period and the usage claimed for it; the subscription then moves past it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing import repository
from core.billing.errors import PeriodNotEnded
from core.billing.metering import record_usage
from core.billing.periods import Period
from core.billing.plan_history import PlanSpan, plan_spans
from core.billing.pricing import (
    Adjustment,
    InvoiceDraft,
    PlanPeriodShare,
    billable_days,
    build_invoice,
    build_prorated_invoice,
    included_quantities,
    invoice_number,
    unit_prices,
)
from core.billing.repository import UsageClaim
from core.billing.subscription_periods import close_period, trial_over
from db.models.billing import Invoice, Plan, Subscription
from forgeline.statuses.billing import CollectionMethod, InvoiceStatus
from workflows.billing_models import InvoiceSummary, billing_workflow_id

MANUAL_PAYMENT_TERMS = timedelta(days=14)
BYTES_PER_GB = Decimal(10**9)  # decimal gigabytes, as the unit on the invoice says
GB_QUANTUM = Decimal("0.000001")  # the scale of usage_records.quantity


def storage_key(organization_id: uuid.UUID, period: Period) -> str:
    return f"storage:{organization_id}:{period.key}"


async def record_storage_usage(
    session: AsyncSession, organization_id: uuid.UUID, period: Period
) -> Decimal:
    """One storage_gb usage record per (organization, period), measured at the period's close
    and dated inside the period, so the roll-up that follows bills it. Idempotent by key."""
    stored = await repository.stored_bytes(session, organization_id, period.end)
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


def ensure_period_ended(period: Period, as_of: datetime) -> None:
    if period.end > as_of:
        raise PeriodNotEnded(
            f"period {period.key} has not ended; it can be invoiced from {period.end.isoformat()}",
            period=period.key,
            ends_at=period.end.isoformat(),
        )


@dataclass(frozen=True)
class Invoicing:
    """`collects_with_stripe`: invoices with a total are charged through Stripe (else they are
    issued for manual collection)."""

    collects_with_stripe: bool
    tax_rate: Decimal = Decimal("0")

    def summary(self, invoice: Invoice, *, created: bool) -> InvoiceSummary:
        return InvoiceSummary(
            invoice_id=str(invoice.id),
            invoice_number=invoice.invoice_number,
            total=str(invoice.total),
            status=invoice.status,
            created=created,
            collect_with_stripe=(
                self.collects_with_stripe
                and invoice.status == InvoiceStatus.OPEN
                and invoice.total > 0
            ),
            stripe_invoice_id=invoice.stripe_invoice_id,
        )

    async def create_invoice(
        self, session: AsyncSession, organization_id: uuid.UUID, period: Period
    ) -> InvoiceSummary:
        """The (organization, period) invoice, created at most once (unique org + period_start)."""
        subscription = await repository.live_subscription(session, organization_id, lock=True)
        # Read after the lock: a concurrent run of the same period has committed by now.
        existing = await repository.invoice_of_period(session, organization_id, period)
        if existing is not None:
            return self.summary(existing, created=False)
        if subscription is None:
            return InvoiceSummary(reason="no live subscription")
        if subscription.current_period_start >= period.end:
            return InvoiceSummary(reason="period closed before the subscription started")

        now = datetime.now(UTC)
        spans = await plan_spans(session, subscription, period)
        closing_plan = await session.get_one(Plan, spans[-1].plan_id)

        expired_trial = False
        if trial_over(subscription, period):
            expired_trial = self.collects_with_stripe and not await repository.has_default_card(
                session, organization_id
            )

        service_start = max(subscription.current_period_start, period.start)
        days = billable_days(period, service_start=service_start, trial_end=subscription.trial_end)
        first_billable = period.end - timedelta(days=days)
        if expired_trial:
            days = 0

        adjustments: list[Adjustment] = []
        previous_credit = await repository.credit_carried_from(
            session, organization_id, period.previous()
        )
        if previous_credit:
            adjustments.append(Adjustment("Credit from the previous invoice", -previous_credit))

        number = invoice_number(str(organization_id), period)
        invoice_id = await self._insert_draft(session, subscription, period, number)
        await record_storage_usage(session, organization_id, period)
        claim = UsageClaim(invoice_id, organization_id, period)
        if len(spans) == 1:
            draft = build_invoice(
                plan_name=closing_plan.name,
                plan_price=closing_plan.price_monthly or Decimal(0),
                period=period,
                days=days,
                usage=await repository.roll_up(session, claim),
                included=included_quantities(closing_plan),
                adjustments=adjustments,
                tax_rate=self.tax_rate,
                unit_prices=unit_prices(closing_plan),
            )
        else:
            draft = await self._prorated_draft(session, claim, spans, first_billable, adjustments)
        collect_with_stripe = self.collects_with_stripe and draft.total > 0
        status = InvoiceStatus.OPEN if draft.total > 0 else InvoiceStatus.PAID
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
                    CollectionMethod.CHARGE_AUTOMATICALLY
                    if collect_with_stripe
                    else CollectionMethod.SEND_INVOICE
                ),
                issued_at=now,
                due_at=now if collect_with_stripe else now + MANUAL_PAYMENT_TERMS,
                paid_at=now if status == InvoiceStatus.PAID else None,
            )
        )
        await close_period(session, subscription, period, expired_trial=expired_trial)
        if not collect_with_stripe and draft.total > 0:
            await repository.notify_owners(
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

    @staticmethod
    async def _insert_draft(
        session: AsyncSession, subscription: Subscription, period: Period, number: str
    ) -> uuid.UUID:
        invoice_id = uuid.uuid4()
        organization_id = subscription.organization_id
        inserted = await session.execute(
            pg_insert(Invoice)
            .values(
                id=invoice_id,
                organization_id=organization_id,
                subscription_id=subscription.id,
                invoice_number=number,
                period_start=period.start,
                period_end=period.end,
                status=InvoiceStatus.DRAFT,
                workflow_id=billing_workflow_id(str(organization_id), period.key),
            )
            .on_conflict_do_nothing()
            .returning(Invoice.id)
        )
        if inserted.scalar_one_or_none() is None:
            raise RuntimeError(f"invoice {number} appeared concurrently; retrying")
        return invoice_id

    async def _prorated_draft(
        self,
        session: AsyncSession,
        claim: UsageClaim,
        spans: list[PlanSpan],
        first_billable: datetime,
        adjustments: list[Adjustment],
    ) -> InvoiceDraft:
        """Each plan of the period for the time it was in effect (every change, not only the
        last): its fee for its billable time, its usage against its prorated allowance."""
        usage = await repository.roll_up_by_span(session, claim, [span.start for span in spans[1:]])
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
            period=claim.period, shares=shares, adjustments=adjustments, tax_rate=self.tax_rate
        )
