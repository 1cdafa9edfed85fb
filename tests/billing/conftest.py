"""Billing fixtures: seeded plans, the fake Stripe server, subscribed organizations, workers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.billing.invoicing import BillingActivities
from activities.billing.schedules import BillingScheduleActivities
from core.billing.periods import Period
from db.models.accounts import Organization
from db.models.billing import PaymentMethod, Plan, Subscription, SubscriptionPlanChange
from db.seed import seed_reference_data
from db.session import session_scope
from forgeline.temporal_client import workflow_runner
from infra.stripe_billing import StripeBilling
from tests.billing.fake_stripe import FakeStripe
from tests.factories import OrgFixture, make_org
from workflows.billing import BillingCycleWorkflow, BillingWorkflow


@asynccontextmanager
async def seeded_plans(
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[dict[str, Plan]]:
    """Seeded plans while the block runs, then the database as it was: subscriptions created in
    the block are deleted, plans that existed before are re-seeded (tests may have edited their
    limits), plans that did not are removed. Other suites sharing this database keep theirs."""
    async with session_maker() as session:
        plans_before = set((await session.scalars(select(Plan.slug))).all())
        subscriptions_before = set((await session.scalars(select(Subscription.id))).all())
    async with session_scope(session_maker) as session:
        await seed_reference_data(session)
    async with session_maker() as session:
        seeded = {plan.slug: plan for plan in (await session.scalars(select(Plan))).all()}
    try:
        yield seeded
    finally:
        async with session_scope(session_maker) as session:
            await session.execute(
                delete(Subscription).where(Subscription.id.not_in(subscriptions_before))
            )
            if plans_before:
                await seed_reference_data(session)
            await session.execute(delete(Plan).where(Plan.slug.in_(set(seeded) - plans_before)))


@pytest.fixture(scope="module")
async def plans(
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[dict[str, Plan]]:
    """Seeded plans for one module (see seeded_plans for what is restored afterwards): with plans
    present every organization without a subscription is on Free, whose limits would surprise
    other domains' tests that share this database."""
    async with seeded_plans(session_maker) as seeded:
        yield seeded


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    server = FakeStripe(hang_seconds=4)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def stripe_billing(fake_stripe: FakeStripe) -> AsyncIterator[StripeBilling]:
    client = StripeBilling("sk_test_fake", api_base=fake_stripe.url, timeout=1.5)
    yield client
    await client.close()


@dataclass
class SubscribedOrg:
    org: OrgFixture
    subscription_id: uuid.UUID

    @property
    def org_id(self) -> uuid.UUID:
        return self.org.org_id


async def subscribe(
    session_maker: async_sessionmaker[AsyncSession],
    plans: dict[str, Plan],
    *,
    plan: str = "pro",
    started: datetime,
    trial_end: datetime | None = None,
    stripe: StripeBilling | None = None,
    card: str | None = "pm_card_visa",
    org: OrgFixture | None = None,
) -> SubscribedOrg:
    """A fresh organization on `plan` since `started`; with a Stripe customer + card when given."""
    org = org or await make_org(session_maker)
    period = Period.containing(started)
    async with session_scope(session_maker) as session:
        subscription = Subscription(
            organization_id=org.org_id,
            plan_id=plans[plan].id,
            status="trialing" if trial_end else "active",
            current_period_start=started,
            current_period_end=period.end,
            trial_end=trial_end,
        )
        session.add(subscription)
        await session.flush()
        if stripe is not None and card is not None:
            customer = await stripe.ensure_customer(
                organization_id=str(org.org_id), name="Test org", email=None
            )
            details = await stripe.attach_card(
                customer_id=customer, payment_method_id=card, make_default=True
            )
            await session.execute(
                update(Organization)
                .where(Organization.id == org.org_id)
                .values(stripe_customer_id=customer)
            )
            session.add(
                PaymentMethod(
                    organization_id=org.org_id,
                    stripe_payment_method_id=details.payment_method_id,
                    brand=details.brand,
                    last4=details.last4,
                    exp_month=details.exp_month,
                    exp_year=details.exp_year,
                    country=details.country,
                    is_default=True,
                )
            )
        return SubscribedOrg(org=org, subscription_id=subscription.id)


async def record_change(
    session: AsyncSession, subscription: Subscription, plan_id: uuid.UUID, at: datetime
) -> None:
    """A plan change made at `at` (in the past), as the API records one now."""
    session.add(
        SubscriptionPlanChange(
            subscription_id=subscription.id,
            organization_id=subscription.organization_id,
            from_plan_id=subscription.plan_id,
            to_plan_id=plan_id,
            changed_at=at,
        )
    )
    subscription.plan_id = plan_id
    await session.flush()


HISTORIES = Path(__file__).parent / "histories"


async def record_history(client: Client, workflow_id: str, name: str) -> None:
    """With FORGELINE_RECORD_HISTORIES=1, save the workflow's history for the replay test."""
    if os.environ.get("FORGELINE_RECORD_HISTORIES") != "1":
        return
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


def billing_worker(
    client: Client,
    task_queue: str,
    session_maker: async_sessionmaker[AsyncSession],
    stripe: StripeBilling | None,
    tax_rate: Decimal = Decimal("0"),
    extra_workflows: tuple[type, ...] = (),
) -> Worker:
    billing = BillingActivities(session_maker, stripe, tax_rate)
    fan_out = BillingScheduleActivities(session_maker, client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BillingWorkflow, BillingCycleWorkflow, *extra_workflows],
        activities=[
            billing.create_invoice,
            billing.push_invoice_to_stripe,
            billing.charge_invoice,
            billing.record_payment,
            billing.end_subscription_for_nonpayment,
            billing.close_failed_execution,
            fan_out.start_due_billing_runs,
        ],
        workflow_runner=workflow_runner(),
    )
