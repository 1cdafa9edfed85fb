"""A year of monthly billing, a trial converting and a dunning cycle, in seconds (time skipping)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.billing.metering import record_usage
from core.billing.periods import Period
from core.billing.pricing import round_cents
from db.models.accounts import Notification
from db.models.billing import Invoice, Payment, Plan, Subscription
from db.session import session_scope
from infra.stripe_billing import StripeBilling
from tests.billing.conftest import billing_worker, record_history, subscribe
from tests.billing.year_driver import MonthlyBillingDriver, MonthsInput
from workflows.billing_models import billing_workflow_id

TAX = Decimal("0.10")


async def _drive(env, task_queue, org_id, first: Period, months: int):
    return await env.client.execute_workflow(
        MonthlyBillingDriver.run,
        MonthsInput(organization_id=str(org_id), first_period=first.key, months=months),
        id=f"driver-{uuid.uuid4()}",
        task_queue=task_queue,
    )


def driver_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    session_maker: async_sessionmaker[AsyncSession],
    stripe_billing: StripeBilling,
) -> Worker:
    """The billing worker at the test's tax rate, with the driver that bills month after month."""
    return billing_worker(
        env.client,
        task_queue,
        session_maker,
        stripe_billing,
        TAX,
        extra_workflows=(MonthlyBillingDriver,),
    )


async def test_a_year_of_monthly_billing(
    time_skipping_env, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    env = time_skipping_env
    first = Period.containing(await env.get_current_time())
    sub = await subscribe(
        session_maker, plans, plan="pro", started=first.start, stripe=stripe_billing
    )
    periods = [first]
    for _ in range(11):
        periods.append(periods[-1].next())
    async with session_scope(session_maker) as session:
        for i, period in enumerate(periods):
            # 2000 included; month i uses 100 x i minutes more -> $2 x i overage.
            await record_usage(
                session,
                organization_id=sub.org_id,
                project_id=None,
                usage_type="build_minutes",
                quantity=2000 + 100 * i,
                idempotency_key=f"year-{sub.org_id}-{i}",
                recorded_at=period.start + timedelta(days=3),
            )
    async with driver_worker(env, task_queue, session_maker, stripe_billing):
        results = await _drive(env, task_queue, sub.org_id, first, 12)

    expected = [round_cents((Decimal(49) + 2 * i) * (1 + TAX)) for i in range(12)]
    assert [Decimal(r.total) for r in results] == expected
    assert {r.status for r in results} == {"paid"}
    async with session_maker() as session:
        invoices = (
            await session.scalars(
                select(Invoice)
                .where(Invoice.organization_id == sub.org_id)
                .order_by(Invoice.period_start)
            )
        ).all()
        payments = (
            await session.scalars(select(Payment).where(Payment.organization_id == sub.org_id))
        ).all()
    assert [i.period_start for i in invoices] == [p.start for p in periods]
    assert [i.total for i in invoices] == expected
    assert len({i.invoice_number for i in invoices}) == 12
    assert sorted(p.amount for p in payments) == sorted(expected)
    assert len(fake_stripe.successful_charges()) == 12


async def test_trial_converts_to_active(
    time_skipping_env, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    env = time_skipping_env
    first = Period.containing(await env.get_current_time())
    trial_end = first.start + timedelta(days=14)
    sub = await subscribe(
        session_maker,
        plans,
        plan="pro",
        started=first.start,
        trial_end=trial_end,
        stripe=stripe_billing,
    )
    async with driver_worker(env, task_queue, session_maker, stripe_billing):
        results = await _drive(env, task_queue, sub.org_id, first, 2)
    paid_days = first.days - 14
    trial_month = round_cents(round_cents(Decimal(49) * paid_days / first.days) * (1 + TAX))
    assert [Decimal(r.total) for r in results] == [trial_month, Decimal("53.90")]
    async with session_maker() as session:
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert subscription.status == "active"


async def test_dunning_ends_in_cancellation_and_free_plan(
    time_skipping_env, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    env = time_skipping_env
    first = Period.containing(await env.get_current_time())
    sub = await subscribe(
        session_maker,
        plans,
        plan="starter",
        started=first.start,
        stripe=stripe_billing,
        card="pm_card_chargeDeclined",
    )
    async with driver_worker(env, task_queue, session_maker, stripe_billing):
        before = await env.get_current_time()
        (result,) = await _drive(env, task_queue, sub.org_id, first, 1)
        after = await env.get_current_time()
        await record_history(
            env.client, billing_workflow_id(str(sub.org_id), first.key), "billing_dunning_cancelled"
        )
    assert result.status == "uncollectible" and result.subscription_cancelled
    assert result.charge_attempts == 4
    assert after - before >= first.end - before + timedelta(days=7)
    async with session_maker() as session:
        subs = (
            await session.execute(
                select(Subscription.status, Plan.slug)
                .join(Plan, Plan.id == Subscription.plan_id)
                .where(Subscription.organization_id == sub.org_id)
                .order_by(Subscription.created_at)
            )
        ).all()
        payments = (
            await session.scalars(
                select(Payment.status).where(Payment.organization_id == sub.org_id)
            )
        ).all()
        kinds = (
            await session.scalars(
                select(Notification.type)
                .where(Notification.organization_id == sub.org_id)
                .order_by(Notification.created_at)
            )
        ).all()
        invoice = (
            await session.scalars(select(Invoice).where(Invoice.organization_id == sub.org_id))
        ).one()
    assert [tuple(row) for row in subs] == [("cancelled", "starter"), ("active", "free")]
    assert list(payments) == ["failed"] * 4
    assert list(kinds) == ["billing.payment_failed"] * 4 + ["billing.subscription_cancelled"]
    assert invoice.status == "uncollectible"
    assert fake_stripe.successful_charges() == []
    assert datetime.now(UTC)  # wall clock untouched by time skipping


async def test_trial_without_a_card_expires_to_free(
    time_skipping_env, task_queue, session_maker, plans, fake_stripe, stripe_billing
):
    env = time_skipping_env
    first = Period.containing(await env.get_current_time())
    sub = await subscribe(
        session_maker,
        plans,
        plan="pro",
        started=first.start,
        trial_end=first.start + timedelta(days=14),
        stripe=stripe_billing,
        card=None,
    )
    async with driver_worker(env, task_queue, session_maker, stripe_billing):
        (result,) = await _drive(env, task_queue, sub.org_id, first, 1)
    assert (result.total, result.status) == ("0.00", "paid")
    async with session_maker() as session:
        subs = (
            await session.execute(
                select(Subscription.status, Plan.slug)
                .join(Plan, Plan.id == Subscription.plan_id)
                .where(Subscription.organization_id == sub.org_id)
                .order_by(Subscription.created_at)
            )
        ).all()
    assert [tuple(row) for row in subs] == [("expired", "pro"), ("active", "free")]
