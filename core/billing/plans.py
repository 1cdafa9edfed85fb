"""The plan catalogue: public plans with their features, and the plan a subscriber names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.billing import Plan, PlanFeature
from forgeline.errors import ValidationFailed


@dataclass(frozen=True)
class CataloguePlan:
    plan: Plan
    features: list[PlanFeature]


async def public_plans(session: AsyncSession) -> list[CataloguePlan]:
    """Active public plans in catalogue order, each with its features by key."""
    plans = (
        await session.scalars(
            select(Plan).where(Plan.is_public, Plan.is_active).order_by(Plan.sort_order, Plan.slug)
        )
    ).all()
    features = (
        await session.scalars(
            select(PlanFeature)
            .where(PlanFeature.plan_id.in_([p.id for p in plans]))
            .order_by(PlanFeature.feature_key)
        )
    ).all()
    by_plan: dict[uuid.UUID, list[PlanFeature]] = {}
    for feature in features:
        by_plan.setdefault(feature.plan_id, []).append(feature)
    return [CataloguePlan(plan, by_plan.get(plan.id, [])) for plan in plans]


async def subscribable_plan(session: AsyncSession, slug: str) -> Plan:
    """The active plan `slug` with a list price; ValidationFailed otherwise."""
    plan = (await session.scalars(select(Plan).where(Plan.slug == slug, Plan.is_active))).first()
    if plan is None:
        raise ValidationFailed(f"Unknown plan {slug!r}", field="plan")
    if plan.price_monthly is None:
        raise ValidationFailed(
            f"The {plan.name} plan has custom pricing; contact sales to subscribe", field="plan"
        )
    return plan
