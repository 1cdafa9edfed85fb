"""Subscription use cases: read, subscribe, change plan or cancel at period end. A plan change
applies at once; the period's invoice charges each plan for the time it was in effect. The
caller commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing import repository
from core.billing.periods import Period
from core.billing.plan_history import change_plan
from core.billing.plans import subscribable_plan
from core.principal import Principal
from db.models.billing import Plan, Subscription
from forgeline.errors import Conflict, NotFound, PaymentRequired, ValidationFailed
from forgeline.statuses.billing import SubscriptionStatus


@dataclass(frozen=True)
class SubscriptionView:
    subscription: Subscription
    plan_slug: str
    pending_plan_slug: str | None


async def view(session: AsyncSession, subscription: Subscription) -> SubscriptionView:
    plan = await session.get_one(Plan, subscription.plan_id)
    pending = (
        await session.get(Plan, subscription.pending_plan_id)
        if subscription.pending_plan_id
        else None
    )
    return SubscriptionView(subscription, plan.slug, pending.slug if pending else None)


async def current(session: AsyncSession, organization_id: uuid.UUID) -> SubscriptionView:
    """The live subscription, else the latest ended one; NotFound when there never was one."""
    subscription = await repository.live_subscription(
        session, organization_id
    ) or await repository.latest_subscription(session, organization_id)
    if subscription is None:
        raise NotFound("No subscription: the organization is on the Free plan")
    return await view(session, subscription)


async def _require_card(
    session: AsyncSession, organization_id: uuid.UUID, plan: Plan, message: str
) -> None:
    if not await repository.has_default_card(session, organization_id):
        raise PaymentRequired(message, limit="payment_method", plan=plan.slug)


async def subscribe(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    *,
    plan_slug: str,
    trial_days: int,
    cards_required: bool,
) -> SubscriptionView:
    """Subscribe to `plan_slug` (leaving Free is a plan change). `cards_required`: payments
    are collected by card, so a paid plan without a trial needs a default card first."""
    org_id = principal.organization_id
    plan = await subscribable_plan(session, plan_slug)
    existing = await repository.live_subscription(session, org_id, lock=True)
    if existing is not None:
        existing_plan = await session.get_one(Plan, existing.plan_id)
        if existing_plan.slug != "free":
            raise Conflict(
                "The organization already has a subscription; change it with PATCH",
                subscription_id=str(existing.id),
            )
        return await change(
            session, principal, origin, plan_slug=plan_slug, cards_required=cards_required
        )
    if cards_required and (plan.price_monthly or 0) > 0 and trial_days == 0:
        await _require_card(
            session, org_id, plan, f"Add a payment method before subscribing to {plan.name}"
        )
    now = datetime.now(UTC)
    subscription = Subscription(
        organization_id=org_id,
        plan_id=plan.id,
        status=SubscriptionStatus.TRIALING if trial_days else SubscriptionStatus.ACTIVE,
        current_period_start=now,
        current_period_end=Period.containing(now).end,
        trial_end=now + timedelta(days=trial_days) if trial_days else None,
    )
    session.add(subscription)
    await session.flush()
    await write_audit(
        session,
        principal,
        origin,
        "subscription.create",
        "subscription",
        subscription.id,
        new={"plan": plan.slug, "status": subscription.status, "trial_days": trial_days},
    )
    return await view(session, subscription)


async def change(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    *,
    plan_slug: str | None = None,
    cancel_at_period_end: bool | None = None,
    cards_required: bool,
) -> SubscriptionView:
    """Move to `plan_slug` now and/or set cancellation at the period's end."""
    if plan_slug is None and cancel_at_period_end is None:
        raise ValidationFailed("Nothing to change: give plan and/or cancel_at_period_end")
    subscription = await repository.live_subscription(session, principal.organization_id, lock=True)
    if subscription is None:
        raise NotFound("No subscription to change; subscribe with POST first")
    old = {
        "plan_id": str(subscription.plan_id),
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }
    if plan_slug is not None:
        plan = await subscribable_plan(session, plan_slug)
        if plan.id != subscription.plan_id:
            if (
                cards_required
                and (plan.price_monthly or 0) > 0
                and subscription.status != SubscriptionStatus.TRIALING
            ):
                await _require_card(
                    session,
                    principal.organization_id,
                    plan,
                    f"Add a payment method before moving to {plan.name}",
                )
            await change_plan(session, subscription, plan.id)
    if cancel_at_period_end is not None:
        subscription.cancel_at_period_end = cancel_at_period_end
        subscription.cancelled_at = datetime.now(UTC) if cancel_at_period_end else None
    await session.flush()
    await write_audit(
        session,
        principal,
        origin,
        "subscription.update",
        "subscription",
        subscription.id,
        old=old,
        new={
            "plan_id": str(subscription.plan_id),
            "cancel_at_period_end": subscription.cancel_at_period_end,
        },
    )
    return await view(session, subscription)
