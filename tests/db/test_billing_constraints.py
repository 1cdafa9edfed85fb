"""The database rejects bad billing rows: one live subscription per organization, one default
payment method, invoice arithmetic and uniqueness, idempotent and exact usage records."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Invoice,
    PaymentMethod,
    Subscription,
    UsageRecord,
)
from tests.db.support import (
    NOW,
    add_rows,
    new_org,
    new_plan,
    rejects,
    suffix,
)


async def test_one_live_subscription_per_organization(db_session: AsyncSession) -> None:
    org, plan = await new_org(db_session), await new_plan(db_session)
    period = {"current_period_start": NOW, "current_period_end": NOW + timedelta(days=30)}
    await add_rows(db_session, Subscription(organization_id=org.id, plan_id=plan.id, **period))
    await rejects(
        db_session,
        Subscription(organization_id=org.id, plan_id=plan.id, status="trialing", **period),
    )
    # History is fine: cancelled and expired subscriptions do not count.
    await add_rows(
        db_session,
        Subscription(organization_id=org.id, plan_id=plan.id, status="cancelled", **period),
    )
    await rejects(
        db_session,
        Subscription(
            organization_id=org.id,
            plan_id=plan.id,
            status="expired",
            current_period_start=NOW,
            current_period_end=NOW,
        ),
    )


async def test_one_default_payment_method_and_card_checks(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    card = {"organization_id": org.id, "brand": "visa", "exp_month": 12, "exp_year": 2030}
    await add_rows(
        db_session,
        PaymentMethod(
            stripe_payment_method_id=f"pm_{suffix()}", last4="4242", is_default=True, **card
        ),
    )
    await add_rows(
        db_session, PaymentMethod(stripe_payment_method_id=f"pm_{suffix()}", last4="1111", **card)
    )
    await rejects(
        db_session,
        PaymentMethod(
            stripe_payment_method_id=f"pm_{suffix()}", last4="0000", is_default=True, **card
        ),
    )
    await rejects(
        db_session,
        PaymentMethod(stripe_payment_method_id=f"pm_{suffix()}", last4="42x4", **card),
    )


async def test_invoice_arithmetic_and_uniqueness(db_session: AsyncSession) -> None:
    org = await new_org(db_session)

    def invoice(**overrides: Any) -> Invoice:
        """A $59 + 10% invoice of the organization for the month from NOW, numbered afresh."""
        fields: dict[str, Any] = {
            "period_start": NOW,
            "period_end": NOW + timedelta(days=31),
            "subtotal": Decimal("59.00"),
            "tax_rate": Decimal("0.1000"),
            "tax": Decimal("5.90"),
            "total": Decimal("64.90"),
        }
        return Invoice(
            organization_id=org.id, invoice_number=f"FL-{suffix()}", **{**fields, **overrides}
        )

    await add_rows(db_session, invoice())
    # Same organization and period: one invoice only, whatever its number.
    await rejects(db_session, invoice())
    await rejects(
        db_session,
        invoice(
            total=Decimal("64.91"),
            period_start=NOW + timedelta(days=40),
            period_end=NOW + timedelta(days=70),
        ),
    )
    stored = await db_session.scalar(select(Invoice.total).where(Invoice.organization_id == org.id))
    assert stored == Decimal("64.90")


async def test_usage_records_idempotent_and_exact(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    key = f"pipeline-run-{suffix()}:build_minutes"
    row = {
        "organization_id": org.id,
        "usage_type": "build_minutes",
        "unit": "min",
        "period": "2026-01",
    }
    await add_rows(
        db_session, UsageRecord(idempotency_key=key, quantity=Decimal("3.333333"), **row)
    )
    await rejects(db_session, UsageRecord(idempotency_key=key, quantity=Decimal("1"), **row))
    await rejects(
        db_session, UsageRecord(idempotency_key=f"{key}:neg", quantity=Decimal("-1"), **row)
    )
    await rejects(
        db_session,
        UsageRecord(
            idempotency_key=f"{key}:t", quantity=Decimal("1"), **{**row, "usage_type": "coffee"}
        ),
    )
    await rejects(
        db_session,
        UsageRecord(
            idempotency_key=f"{key}:p", quantity=Decimal("1"), **{**row, "period": "2026-13"}
        ),
    )
    stored = await db_session.scalar(
        select(UsageRecord.quantity).where(UsageRecord.idempotency_key == key)
    )
    assert stored == Decimal("3.333333")
