"""Reference data every installation needs: the plans and their features (idempotent upserts).

`await seed_reference_data(session)` inside the caller's unit of work; `python -m db.seed` commits.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.billing import Plan, PlanFeature

MIB = 1024 * 1024

# Unit prices beyond the included quantities (same figures as the invoice arithmetic).
STANDARD_OVERAGE = {
    "overage_build_minute_price": Decimal("0.02"),
    "overage_storage_gb_price": Decimal("0.10"),
    "overage_bandwidth_gb_price": Decimal("0.08"),
    "overage_agent_token_price": Decimal("0.000004"),
    "overage_api_request_price": Decimal("0.00005"),
}


@dataclass(frozen=True)
class FeatureSpec:
    """`limit` None means unlimited; `enabled` False switches the feature off for the plan."""

    limit: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class PlanSpec:
    slug: str
    name: str
    description: str
    price_monthly: Decimal | None
    price_yearly: Decimal | None
    max_projects: int | None
    max_pipelines_per_project: int | None
    max_deployments_per_month: int | None
    included_build_minutes: int | None
    included_agent_tokens: int | None
    custom_domains: bool
    priority_support: bool
    sort_order: int
    overage: dict[str, Decimal | None] = field(default_factory=lambda: dict(STANDARD_OVERAGE))
    features: dict[str, FeatureSpec] = field(default_factory=dict)
    # (api requests, storage GB, bandwidth GB) included per month; None = unlimited.
    included_extras: tuple[int | None, int | None, int | None] = (0, 0, 0)


def _features(
    *,
    team_members: int | None,
    concurrent_builds: int | None,
    artifact_retention_days: int | None,
    log_retention_days: int | None,
    environments_per_project: int | None,
    preview_deployments: bool,
    rollback: bool,
    advanced_caching: bool,
    stage_log_max_bytes: int | None,
    run_disk_mb: int | None,
) -> dict[str, FeatureSpec]:
    return {
        "team_members": FeatureSpec(team_members),
        "concurrent_builds": FeatureSpec(concurrent_builds),
        "artifact_retention_days": FeatureSpec(artifact_retention_days),
        "log_retention_days": FeatureSpec(log_retention_days),
        "environments_per_project": FeatureSpec(environments_per_project),
        "preview_deployments": FeatureSpec(enabled=preview_deployments),
        "rollback": FeatureSpec(enabled=rollback),
        "advanced_caching": FeatureSpec(enabled=advanced_caching),
        # Per stage attempt and per run; None = the operator's caps (FORGELINE_STAGE_LOG_MAX_BYTES,
        # FORGELINE_BUILD_DISK_MB), which also bound every plan's value.
        "stage_log_max_bytes": FeatureSpec(stage_log_max_bytes),
        "run_disk_mb": FeatureSpec(run_disk_mb),
    }


# Seed 000: Free $0 (1 project, 2 pipelines, 10 deployments/mo, 100 build minutes), Starter $19
# (3, 5, 50, 500), Pro $49 (10, unlimited, 200, 2000), Enterprise custom. None = unlimited.
PLANS: tuple[PlanSpec, ...] = (
    PlanSpec(
        slug="free",
        name="Free",
        description="One project to try Forgeline.",
        price_monthly=Decimal("0.00"),
        price_yearly=Decimal("0.00"),
        max_projects=1,
        max_pipelines_per_project=2,
        max_deployments_per_month=10,
        included_build_minutes=100,
        included_agent_tokens=50_000,
        custom_domains=False,
        priority_support=False,
        included_extras=(10_000, 1, 10),
        sort_order=0,
        features=_features(
            team_members=2,
            concurrent_builds=1,
            artifact_retention_days=7,
            log_retention_days=30,
            environments_per_project=2,
            preview_deployments=False,
            rollback=True,
            advanced_caching=False,
            stage_log_max_bytes=4 * MIB,
            run_disk_mb=2048,
        ),
    ),
    PlanSpec(
        slug="starter",
        name="Starter",
        description="Small sites and side projects.",
        price_monthly=Decimal("19.00"),
        price_yearly=Decimal("190.00"),
        max_projects=3,
        max_pipelines_per_project=5,
        max_deployments_per_month=50,
        included_build_minutes=500,
        included_agent_tokens=500_000,
        custom_domains=True,
        priority_support=False,
        included_extras=(100_000, 10, 100),
        sort_order=1,
        features=_features(
            team_members=5,
            concurrent_builds=2,
            artifact_retention_days=30,
            log_retention_days=90,
            environments_per_project=3,
            preview_deployments=True,
            rollback=True,
            advanced_caching=False,
            stage_log_max_bytes=16 * MIB,
            run_disk_mb=5120,
        ),
    ),
    PlanSpec(
        slug="pro",
        name="Pro",
        description="Teams shipping several applications.",
        price_monthly=Decimal("49.00"),
        price_yearly=Decimal("490.00"),
        max_projects=10,
        max_pipelines_per_project=None,
        max_deployments_per_month=200,
        included_build_minutes=2000,
        included_agent_tokens=2_000_000,
        custom_domains=True,
        priority_support=True,
        included_extras=(1_000_000, 100, 1_000),
        sort_order=2,
        features=_features(
            team_members=20,
            concurrent_builds=5,
            artifact_retention_days=90,
            log_retention_days=180,
            environments_per_project=10,
            preview_deployments=True,
            rollback=True,
            advanced_caching=True,
            stage_log_max_bytes=64 * MIB,
            run_disk_mb=10240,
        ),
    ),
    PlanSpec(
        slug="enterprise",
        name="Enterprise",
        description="Custom pricing, limits and support.",
        price_monthly=None,
        price_yearly=None,
        max_projects=None,
        max_pipelines_per_project=None,
        max_deployments_per_month=None,
        included_build_minutes=None,
        included_agent_tokens=None,
        custom_domains=True,
        priority_support=True,
        included_extras=(None, None, None),
        sort_order=3,
        overage=dict.fromkeys(STANDARD_OVERAGE),
        features=_features(
            team_members=None,
            concurrent_builds=50,
            artifact_retention_days=365,
            log_retention_days=365,
            environments_per_project=None,
            preview_deployments=True,
            rollback=True,
            advanced_caching=True,
            stage_log_max_bytes=None,
            run_disk_mb=None,
        ),
    ),
)


async def seed_reference_data(session: AsyncSession) -> None:
    """Upsert every plan (by slug) and plan feature (by plan + key); does not commit."""
    for spec in PLANS:
        values = {
            "slug": spec.slug,
            "name": spec.name,
            "description": spec.description,
            "price_monthly": spec.price_monthly,
            "price_yearly": spec.price_yearly,
            "currency": "USD",
            "max_projects": spec.max_projects,
            "max_pipelines_per_project": spec.max_pipelines_per_project,
            "max_deployments_per_month": spec.max_deployments_per_month,
            "included_build_minutes": spec.included_build_minutes,
            "included_agent_tokens": spec.included_agent_tokens,
            "included_api_requests": spec.included_extras[0],
            "included_storage_gb": spec.included_extras[1],
            "included_bandwidth_gb": spec.included_extras[2],
            "custom_domains": spec.custom_domains,
            "priority_support": spec.priority_support,
            "is_active": True,
            "is_public": True,
            "sort_order": spec.sort_order,
            **spec.overage,
        }
        update = {key: value for key, value in values.items() if key != "slug"}
        plan_stmt = (
            insert(Plan)
            .values(**values)
            .on_conflict_do_update(index_elements=[Plan.slug], set_=update)
            .returning(Plan.id)
        )
        plan_id = (await session.execute(plan_stmt)).scalar_one()
        for key, feature in spec.features.items():
            feature_stmt = (
                insert(PlanFeature)
                .values(
                    plan_id=plan_id,
                    feature_key=key,
                    limit_value=feature.limit,
                    enabled=feature.enabled,
                )
                .on_conflict_do_update(
                    index_elements=[PlanFeature.plan_id, PlanFeature.feature_key],
                    set_={"limit_value": feature.limit, "enabled": feature.enabled},
                )
            )
            await session.execute(feature_stmt)


async def plan_id_by_slug(session: AsyncSession, slug: str) -> uuid.UUID | None:
    """The id of a seeded plan (e.g. "free" for new organizations), or None."""
    return (await session.execute(select(Plan.id).where(Plan.slug == slug))).scalar_one_or_none()


async def _main() -> None:
    from db.session import create_engine, create_session_maker, session_scope
    from forgeline.settings import get_settings

    engine = create_engine(get_settings())
    try:
        async with session_scope(create_session_maker(engine)) as session:
            await seed_reference_data(session)
    finally:
        await engine.dispose()
    print(f"seeded {len(PLANS)} plans")


if __name__ == "__main__":
    asyncio.run(_main())
