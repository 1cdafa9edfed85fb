"""A run's build-slot limit as its plan is loaded: the organization's override, else its live
subscription's plan, else the Free plan (unlimited plans get the product's ceiling)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from core.runs.plan import UNLIMITED_CONCURRENT_BUILDS, load_plan
from db.models.accounts import Organization
from db.models.billing import PlanFeature
from db.session import driver_connection, session_scope
from tests.billing.conftest import subscribe
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage


async def limit_of_a_run(session_maker, settings, org_id) -> int:
    pipeline_id = await make_pipeline(session_maker, org_id, [stage("s", "true")])
    run = await create_run(session_maker, settings, org_id, pipeline_id)
    async with driver_connection(session_maker) as conn:
        plan = await load_plan(conn, str(run.id))
    assert plan is not None and [s.name for s in plan.stages] == ["s"]
    return plan.concurrent_builds


async def test_the_limit_comes_from_override_then_subscription_then_free(
    session_maker, settings, plans
) -> None:
    started = datetime(2026, 11, 1, tzinfo=UTC)
    free = await make_org(session_maker)
    assert await limit_of_a_run(session_maker, settings, free.org_id) == 1
    team = await subscribe(session_maker, plans, plan="pro", started=started)
    assert await limit_of_a_run(session_maker, settings, team.org.org_id) == 5
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Organization)
            .where(Organization.id == team.org.org_id)
            .values(settings={"concurrent_builds": 7})
        )
    assert await limit_of_a_run(session_maker, settings, team.org.org_id) == 7


async def set_starter_limit(session_maker, plans, value: int | None) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PlanFeature)
            .where(
                PlanFeature.plan_id == plans["starter"].id,
                PlanFeature.feature_key == "concurrent_builds",
            )
            .values(limit_value=value)
        )


async def test_an_unlimited_plan_gets_the_ceiling(session_maker, settings, plans) -> None:
    started = datetime(2026, 11, 1, tzinfo=UTC)
    starter = await subscribe(session_maker, plans, plan="starter", started=started)
    await set_starter_limit(session_maker, plans, None)
    try:
        limit = await limit_of_a_run(session_maker, settings, starter.org.org_id)
        assert limit == UNLIMITED_CONCURRENT_BUILDS
    finally:
        await set_starter_limit(session_maker, plans, 2)
