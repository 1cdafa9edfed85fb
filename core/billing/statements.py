"""What an organization reads about its bill (usage of a period, an invoice with its payments)
and closing a period on request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing import repository
from core.billing.errors import PeriodNotEnded
from core.billing.executions import record_billing_execution
from core.billing.periods import Period
from core.billing.schedules import start_billing_workflow
from core.principal import Principal
from core.queries import paginate
from db.models.billing import Invoice, Payment, UsageRecord
from forgeline.errors import NotFound, ValidationFailed


@dataclass(frozen=True)
class ProjectUsage:
    project_id: uuid.UUID | None
    usage_type: str
    quantity: Decimal


@dataclass(frozen=True)
class PeriodUsage:
    period: Period
    totals: dict[str, Decimal] = field(default_factory=dict)  # by usage type, sorted
    by_project: list[ProjectUsage] = field(default_factory=list)


@dataclass(frozen=True)
class InvoiceStatement:
    invoice: Invoice
    payments: list[Payment]


@dataclass(frozen=True)
class BillingRun:
    workflow_id: str
    period: Period
    started: bool  # False: that period's run was already started


async def usage(session: AsyncSession, organization_id: uuid.UUID, period: Period) -> PeriodUsage:
    rows = (
        await session.execute(
            select(UsageRecord.usage_type, UsageRecord.project_id, func.sum(UsageRecord.quantity))
            .where(UsageRecord.organization_id == organization_id, UsageRecord.period == period.key)
            .group_by(UsageRecord.usage_type, UsageRecord.project_id)
            .order_by(UsageRecord.usage_type, UsageRecord.project_id)
        )
    ).all()
    totals: dict[str, Decimal] = {}
    by_project: list[ProjectUsage] = []
    for usage_type, project_id, quantity in rows:
        totals[usage_type] = totals.get(usage_type, Decimal(0)) + Decimal(quantity)
        by_project.append(ProjectUsage(project_id, usage_type, quantity))
    return PeriodUsage(period, dict(sorted(totals.items())), by_project)


async def invoices_page(
    session: AsyncSession, organization_id: uuid.UUID, *, cursor: str | None, limit: int
) -> list[Invoice]:
    """One page of the organization's invoices, newest period first (limit + 1 rows: the extra
    one tells whether a next page exists)."""
    query = paginate(
        select(Invoice).where(Invoice.organization_id == organization_id),
        Invoice.period_start,
        Invoice.id,
        cursor=cursor,
        limit=limit,
    )
    return list((await session.scalars(query)).all())


async def invoice_statement(
    session: AsyncSession, organization_id: uuid.UUID, invoice_id: uuid.UUID
) -> InvoiceStatement:
    """The organization's invoice and its payment attempts; NotFound for another's."""
    invoice = (
        await session.scalars(
            select(Invoice).where(
                Invoice.id == invoice_id, Invoice.organization_id == organization_id
            )
        )
    ).first()
    if invoice is None:
        raise NotFound("Invoice not found")
    payments = (
        await session.scalars(
            select(Payment).where(Payment.invoice_id == invoice.id).order_by(Payment.attempted_at)
        )
    ).all()
    return InvoiceStatement(invoice, list(payments))


async def _period_to_bill(
    session: AsyncSession, organization_id: uuid.UUID, period_text: str | None
) -> Period:
    if period_text is not None:
        return Period.parse(period_text)
    subscription = await repository.live_subscription(session, organization_id)
    if subscription is None:
        raise NotFound("No subscription to bill")
    # The subscription's open period once it has ended (a missed run), else the last month.
    period = Period.containing(subscription.current_period_start)
    if period.end > datetime.now(UTC):
        period = Period.containing(datetime.now(UTC)).previous()
    return period


async def run_billing(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    temporal: Client,
    period_text: str | None,
) -> BillingRun:
    """Close a period now for the caller's organization (same workflow ID as the schedule's)."""
    org_id = principal.organization_id
    period = await _period_to_bill(session, org_id, period_text)
    now = datetime.now(UTC)
    if period.start > now:
        raise ValidationFailed("Cannot bill a period that has not started", field="period")
    if period.end > now:
        raise PeriodNotEnded(
            f"Period {period.key} has not ended: it is invoiced from {period.end.isoformat()},"
            " with each plan charged for the time it was in effect",
            period=period.key,
            ends_at=period.end.isoformat(),
        )
    workflow_id, run_id = await start_billing_workflow(
        temporal, organization_id=org_id, period=period, trigger="api"
    )
    if run_id is not None:
        await record_billing_execution(
            session,
            organization_id=org_id,
            period=period,
            workflow_id=workflow_id,
            run_id=run_id,
            trigger="api",
        )
    await write_audit(
        session,
        principal,
        origin,
        "billing.run",
        "billing_period",
        None,
        new={"period": period.key, "workflow_id": workflow_id, "started": run_id is not None},
    )
    return BillingRun(workflow_id, period, run_id is not None)
