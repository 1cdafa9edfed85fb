"""Migrations and models never drift; the chain upgrades, downgrades and upgrades again; seeding is
idempotent."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select

from db.models.billing import Plan, PlanFeature
from db.regen_migration import alembic_config, scratch_database
from db.roles import MIGRATOR_ROLE
from db.seed import PLANS, seed_reference_data
from db.session import async_database_url, driver_dsn
from forgeline.blocking import run_blocking
from forgeline.embedded.postgres import EmbeddedPostgres

VIEWS = {
    "v_deployment_success_rate",
    "v_pipeline_run_statistics",
    "v_active_workflows",
    "v_active_agent_tasks",
    "v_recent_audit_activity",
    "v_agent_usage_daily",
    "v_project_file_stats",
}
FUNCTIONS = {
    "build_slot_acquire",
    "build_slot_pending",
    "build_slot_promote",
    "build_slot_release",
    "build_slot_set_limit",
}


@pytest.fixture
def fresh_database_url(
    postgres: EmbeddedPostgres | None, migration_database_url: str
) -> Iterator[str]:
    """An empty database on the session's server, dropped afterwards; the migrator's URL to it.

    Embedded, the superuser creates it (test setup only) and hands it to the migrator, which
    then migrates it as `make run` does, without superuser.
    """
    if postgres is None:
        with scratch_database(migration_database_url) as url:
            yield url
        return
    name = f"forgeline_scratch_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        yield async_database_url(postgres.url_for(MIGRATOR_ROLE, name))
    finally:
        postgres.drop_database(name)


def _names(url: str, query: str) -> set[str]:
    async def fetch() -> set[str]:
        conn = await asyncpg.connect(driver_dsn(url))
        try:
            return {row[0] for row in await conn.fetch(query)}
        finally:
            await conn.close()

    return run_blocking(fetch)


def _functions(url: str) -> set[str]:
    return _names(
        url,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public'",
    )


def _relations(url: str) -> tuple[set[str], set[str]]:
    tables = _names(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    views = _names(url, "SELECT viewname FROM pg_views WHERE schemaname = 'public'")
    return tables, views


def test_revision_chain_is_linear_and_fixed() -> None:
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused/unused"))
    assert script.get_heads() == ["0021_build_slot_trigger_order"]
    assert (
        script.get_revision("0021_build_slot_trigger_order").down_revision
        == "0020_commit_status_turns"
    )
    assert (
        script.get_revision("0020_commit_status_turns").down_revision
        == "0019_oauth_browser_binding"
    )
    assert script.get_revision("0019_oauth_browser_binding").down_revision == "0018_oauth_sign_in"
    assert script.get_revision("0018_oauth_sign_in").down_revision == "0017_stage_runtime"
    assert (
        script.get_revision("0017_stage_runtime").down_revision == "0016_github_app_installations"
    )
    assert (
        script.get_revision("0016_github_app_installations").down_revision
        == "0015_pipeline_verification"
    )
    assert (
        script.get_revision("0015_pipeline_verification").down_revision
        == "0014_api_key_rate_windows"
    )
    assert (
        script.get_revision("0014_api_key_rate_windows").down_revision
        == "0013_notification_delivery"
    )
    assert (
        script.get_revision("0013_notification_delivery").down_revision == "0012_pipeline_versions"
    )
    assert (
        script.get_revision("0012_pipeline_versions").down_revision == "0011_pull_request_reports"
    )
    assert script.get_revision("0011_pull_request_reports").down_revision == "0010_failure_classes"
    assert script.get_revision("0010_failure_classes").down_revision == "0009_log_limits"
    assert script.get_revision("0009_log_limits").down_revision == "0007_approvals"
    assert script.get_revision("0007_approvals").down_revision == "0006_accounts_hardening"
    assert script.get_revision("0006_accounts_hardening").down_revision == "0005_billing_periods"
    assert script.get_revision("0005_billing_periods").down_revision == "0004_stage_runners"
    assert script.get_revision("0004_stage_runners").down_revision == "0003_build_slots"
    assert script.get_revision("0003_build_slots").down_revision == "0002_views"
    assert script.get_revision("0002_views").down_revision == "0001_initial"
    assert script.get_revision("0001_initial").down_revision is None


def test_models_and_migrations_do_not_drift(fresh_database_url: str) -> None:
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "head")
    # Raises AutogenerateDiffsDetected if any model differs from the migrated schema.
    command.check(config)


def test_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    from db.base import Base

    config = alembic_config(fresh_database_url)
    command.upgrade(config, "head")
    tables, views = _relations(fresh_database_url)
    assert set(Base.metadata.tables) <= tables
    assert views == VIEWS
    assert _functions(fresh_database_url) == FUNCTIONS

    command.downgrade(config, "base")
    tables, views = _relations(fresh_database_url)
    assert tables == {"alembic_version"}
    assert views == set()
    assert _functions(fresh_database_url) == set()

    command.upgrade(config, "head")
    tables, views = _relations(fresh_database_url)
    assert set(Base.metadata.tables) <= tables
    assert views == VIEWS
    command.check(config)


async def _snapshot(session) -> list[tuple[object, ...]]:
    plans = (await session.execute(select(Plan).order_by(Plan.slug))).scalars().all()
    features = (
        (
            await session.execute(
                select(PlanFeature).order_by(PlanFeature.plan_id, PlanFeature.feature_key)
            )
        )
        .scalars()
        .all()
    )
    return [
        *(
            (p.id, p.slug, p.price_monthly, p.max_projects, p.overage_agent_token_price)
            for p in plans
        ),
        *((f.id, f.plan_id, f.feature_key, f.limit_value, f.enabled) for f in features),
    ]


async def test_seed_twice_gives_the_same_rows(db_session) -> None:
    await seed_reference_data(db_session)
    first = await _snapshot(db_session)
    db_session.expire_all()
    await seed_reference_data(db_session)
    db_session.expire_all()
    second = await _snapshot(db_session)
    assert first == second
    slugs = set((await db_session.execute(select(Plan.slug))).scalars())
    assert {spec.slug for spec in PLANS} <= slugs


async def test_seeded_plans_match_the_seed_design(db_session) -> None:
    from decimal import Decimal

    await seed_reference_data(db_session)
    plans = {
        p.slug: p
        for p in (await db_session.execute(select(Plan))).scalars().all()
        if p.slug in {"free", "starter", "pro", "enterprise"}
    }
    assert plans["free"].price_monthly == Decimal("0.00")
    assert plans["starter"].price_monthly == Decimal("19.00")
    assert plans["pro"].price_monthly == Decimal("49.00")
    assert plans["enterprise"].price_monthly is None  # custom pricing
    assert (plans["free"].max_projects, plans["starter"].max_projects) == (1, 3)
    assert plans["pro"].max_pipelines_per_project is None  # unlimited
    assert plans["pro"].included_build_minutes == 2000
    # Sub-cent unit prices survive exactly (NUMERIC, never float).
    assert plans["pro"].overage_agent_token_price == Decimal("0.000004")
    features = (
        await db_session.execute(
            select(PlanFeature.feature_key, PlanFeature.limit_value).where(
                PlanFeature.plan_id == plans["starter"].id
            )
        )
    ).all()
    assert dict(features)["concurrent_builds"] == 2


def test_offline_mode_renders_the_chain_as_sql_without_a_server() -> None:
    """`alembic upgrade --sql`: the whole chain as a script, no connection made (the URL names
    a closed loopback port)."""
    output = io.StringIO()
    config = alembic_config("postgresql://nobody:pw@127.0.0.1:9/none")
    config.output_buffer = output
    command.upgrade(config, "head", sql=True)
    script = output.getvalue()
    assert "CREATE TABLE organizations" in script
    assert "build_slot_acquire" in script
    assert "UPDATE alembic_version SET version_num='0010_failure_classes'" in script
