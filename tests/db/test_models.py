"""The database itself rejects bad rows: checks, uniques, ownership rules, cascades and set-null."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers

from db.models import (
    ApiKey,
    Deployment,
    Environment,
    Invoice,
    Organization,
    PaymentMethod,
    Pipeline,
    PipelineRun,
    PipelineStage,
    Plan,
    Project,
    StageExecution,
    StageLogChunk,
    Subscription,
    UsageRecord,
    User,
    WebhookPayload,
)

NOW = datetime(2026, 1, 15, tzinfo=UTC)


def _suffix() -> str:
    return uuid.uuid4().hex[:10]


async def _add(session: AsyncSession, *rows: Any) -> None:
    async with session.begin_nested():
        session.add_all(rows)
        await session.flush()


async def _rejects(session: AsyncSession, *rows: Any) -> None:
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            session.add_all(rows)
            await session.flush()


async def _org(session: AsyncSession) -> Organization:
    org = Organization(name="Acme", slug=f"acme-{_suffix()}")
    await _add(session, org)
    return org


async def _user(session: AsyncSession, email: str | None = None) -> User:
    user = User(email=email or f"{_suffix()}@example.com", name="Ada")
    await _add(session, user)
    return user


async def _project(session: AsyncSession, org: Organization, **kw: Any) -> Project:
    project = Project(
        organization_id=org.id,
        name="Site",
        slug=kw.pop("slug", f"site-{_suffix()}"),
        project_type="static_site",
        **kw,
    )
    await _add(session, project)
    return project


async def _pipeline_run(session: AsyncSession, project: Project) -> tuple[Pipeline, PipelineRun]:
    pipeline = Pipeline(project_id=project.id, organization_id=project.organization_id, name="ci")
    await _add(session, pipeline)
    run = PipelineRun(
        pipeline_id=pipeline.id,
        project_id=project.id,
        organization_id=project.organization_id,
        run_number=1,
    )
    await _add(session, run)
    return pipeline, run


def test_mappers_configure() -> None:
    configure_mappers()


async def test_project_owned_by_organization_or_user_not_both(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    user = await _user(db_session)
    base = {"name": "p", "project_type": "spa"}
    await _add(db_session, Project(organization_id=org.id, slug="by-org", **base))
    await _add(db_session, Project(owner_user_id=user.id, slug="by-user", **base))
    await _rejects(
        db_session, Project(organization_id=org.id, owner_user_id=user.id, slug="both", **base)
    )
    await _rejects(db_session, Project(slug="nobody", **base))


async def test_project_slug_unique_per_owner(db_session: AsyncSession) -> None:
    org, other = await _org(db_session), await _org(db_session)
    await _project(db_session, org, slug="www")
    await _project(db_session, other, slug="www")  # another tenant may reuse it
    await _rejects(
        db_session,
        Project(organization_id=org.id, name="dup", slug="www", project_type="spa"),
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("project_type", "mainframe"),
        ("framework", "cobol"),
        ("status", "deleted"),
        ("slug", "Not A Slug"),
    ],
)
async def test_project_checks(db_session: AsyncSession, field: str, value: str) -> None:
    org = await _org(db_session)
    values: dict[str, Any] = {
        "organization_id": org.id,
        "name": "p",
        "slug": f"p-{_suffix()}",
        "project_type": "spa",
    }
    values[field] = value
    await _rejects(db_session, Project(**values))


async def test_user_email_unique_case_insensitively(db_session: AsyncSession) -> None:
    email = f"Ada.{_suffix()}@Example.com"
    await _user(db_session, email)
    await _rejects(db_session, User(email=email.lower(), name="Imposter"))
    await _rejects(db_session, User(email=email.upper(), name="Imposter"))


async def test_api_key_hash_must_be_sha256_hex_and_unique(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    digest = uuid.uuid4().hex * 2
    await _add(
        db_session,
        ApiKey(organization_id=org.id, name="ci", key_prefix=f"fl_{_suffix()}", key_hash=digest),
    )
    await _rejects(
        db_session,
        ApiKey(organization_id=org.id, name="dup", key_prefix=f"fl_{_suffix()}", key_hash=digest),
    )
    await _rejects(
        db_session,
        ApiKey(organization_id=org.id, name="raw", key_prefix=f"fl_{_suffix()}", key_hash="secret"),
    )


async def test_environment_name_unique_per_project_and_types_checked(
    db_session: AsyncSession,
) -> None:
    project = await _project(db_session, await _org(db_session))
    env = {"project_id": project.id, "provider": "docker"}
    await _add(db_session, Environment(name="production", env_type="production", **env))
    await _rejects(db_session, Environment(name="production", env_type="staging", **env))
    await _rejects(db_session, Environment(name="qa", env_type="qa", **env))
    await _rejects(
        db_session, Environment(name="x", env_type="staging", project_id=project.id, provider="ftp")
    )


async def test_run_numbers_and_stage_attempts_unique(db_session: AsyncSession) -> None:
    project = await _project(db_session, await _org(db_session))
    pipeline, run = await _pipeline_run(db_session, project)
    await _rejects(
        db_session,
        PipelineRun(pipeline_id=pipeline.id, project_id=project.id, run_number=1),
    )
    await _rejects(
        db_session,
        PipelineRun(pipeline_id=pipeline.id, project_id=project.id, run_number=2, status="done"),
    )
    await _add(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=1))
    await _add(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=2))
    await _rejects(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=2))
    await _rejects(db_session, StageExecution(run_id=run.id, stage_name="lint", status="exploded"))
    await _rejects(
        db_session,
        PipelineStage(pipeline_id=pipeline.id, name="s", position=0, stage_type="x"),
    )
    await _rejects(
        db_session,
        PipelineStage(
            pipeline_id=pipeline.id, name="s", position=0, stage_type="test", timeout_seconds=0
        ),
    )


async def test_organization_delete_cascades_through_the_tree(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    project = await _project(db_session, org)
    env = Environment(project_id=project.id, name="prod", env_type="production", provider="docker")
    await _add(db_session, env)
    _, run = await _pipeline_run(db_session, project)
    execution = StageExecution(run_id=run.id, stage_name="build")
    await _add(db_session, execution)
    await _add(
        db_session,
        StageLogChunk(
            stage_execution_id=execution.id, seq=0, first_line=0, line_count=1, content="ok\n"
        ),
    )
    await db_session.execute(delete(Organization).where(Organization.id == org.id))
    for model, column, value in [
        (Project, Project.id, project.id),
        (Environment, Environment.id, env.id),
        (PipelineRun, PipelineRun.id, run.id),
        (StageLogChunk, StageLogChunk.stage_execution_id, execution.id),
    ]:
        count = await db_session.scalar(
            select(func.count()).select_from(model).where(column == value)
        )
        assert count == 0, model.__tablename__


async def test_set_null_keeps_history(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    user = await _user(db_session)
    key = ApiKey(
        organization_id=org.id,
        created_by_user_id=user.id,
        name="k",
        key_prefix=f"fl_{_suffix()}",
        key_hash=uuid.uuid4().hex * 2,
    )
    await _add(db_session, key)
    project = await _project(db_session, org)
    env = Environment(project_id=project.id, name="prod", env_type="production", provider="docker")
    await _add(db_session, env)
    _, run = await _pipeline_run(db_session, project)
    deployment = Deployment(
        environment_id=env.id,
        project_id=project.id,
        organization_id=org.id,
        pipeline_run_id=run.id,
        version="abc123",
        provider="docker",
    )
    await _add(db_session, deployment)

    await db_session.execute(delete(PipelineRun).where(PipelineRun.id == run.id))
    await db_session.execute(delete(User).where(User.id == user.id))
    assert (
        await db_session.scalar(
            select(Deployment.pipeline_run_id).where(Deployment.id == deployment.id)
        )
        is None
    )
    assert (
        await db_session.scalar(select(ApiKey.created_by_user_id).where(ApiKey.id == key.id))
        is None
    )


async def test_deployment_status_checked(db_session: AsyncSession) -> None:
    project = await _project(db_session, await _org(db_session))
    env = Environment(project_id=project.id, name="s", env_type="staging", provider="static")
    await _add(db_session, env)
    await _rejects(
        db_session,
        Deployment(
            environment_id=env.id,
            project_id=project.id,
            version="1",
            provider="static",
            status="exploded",
        ),
    )


async def test_webhook_deliveries_deduplicated(db_session: AsyncSession) -> None:
    delivery = f"d-{_suffix()}"
    row = {"provider": "github", "event_type": "push", "signature_valid": True}
    await _add(db_session, WebhookPayload(delivery_id=delivery, **row))
    await _rejects(db_session, WebhookPayload(delivery_id=delivery, **row))
    await _add(db_session, WebhookPayload(delivery_id=delivery, **{**row, "provider": "gitlab"}))


async def _plan(session: AsyncSession) -> Plan:
    plan = Plan(slug=f"test-{_suffix()}", name="Test", price_monthly=Decimal("19.00"))
    await _add(session, plan)
    return plan


async def test_one_live_subscription_per_organization(db_session: AsyncSession) -> None:
    org, plan = await _org(db_session), await _plan(db_session)
    period = {"current_period_start": NOW, "current_period_end": NOW + timedelta(days=30)}
    await _add(db_session, Subscription(organization_id=org.id, plan_id=plan.id, **period))
    await _rejects(
        db_session,
        Subscription(organization_id=org.id, plan_id=plan.id, status="trialing", **period),
    )
    # History is fine: cancelled and expired subscriptions do not count.
    await _add(
        db_session,
        Subscription(organization_id=org.id, plan_id=plan.id, status="cancelled", **period),
    )
    await _rejects(
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
    org = await _org(db_session)
    card = {"organization_id": org.id, "brand": "visa", "exp_month": 12, "exp_year": 2030}
    await _add(
        db_session,
        PaymentMethod(
            stripe_payment_method_id=f"pm_{_suffix()}", last4="4242", is_default=True, **card
        ),
    )
    await _add(
        db_session, PaymentMethod(stripe_payment_method_id=f"pm_{_suffix()}", last4="1111", **card)
    )
    await _rejects(
        db_session,
        PaymentMethod(
            stripe_payment_method_id=f"pm_{_suffix()}", last4="0000", is_default=True, **card
        ),
    )
    await _rejects(
        db_session,
        PaymentMethod(stripe_payment_method_id=f"pm_{_suffix()}", last4="42x4", **card),
    )


async def test_invoice_arithmetic_and_uniqueness(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    period = {"period_start": NOW, "period_end": NOW + timedelta(days=31)}
    money = {"subtotal": Decimal("59.00"), "tax_rate": Decimal("0.1000"), "tax": Decimal("5.90")}
    await _add(
        db_session,
        Invoice(
            organization_id=org.id,
            invoice_number=f"FL-{_suffix()}",
            total=Decimal("64.90"),
            **period,
            **money,
        ),
    )
    # Same organization and period: one invoice only, whatever its number.
    await _rejects(
        db_session,
        Invoice(
            organization_id=org.id,
            invoice_number=f"FL-{_suffix()}",
            total=Decimal("64.90"),
            **period,
            **money,
        ),
    )
    await _rejects(
        db_session,
        Invoice(
            organization_id=org.id,
            invoice_number=f"FL-{_suffix()}",
            total=Decimal("64.91"),
            period_start=NOW + timedelta(days=40),
            period_end=NOW + timedelta(days=70),
            **money,
        ),
    )
    stored = await db_session.scalar(select(Invoice.total).where(Invoice.organization_id == org.id))
    assert stored == Decimal("64.90")


async def test_usage_records_idempotent_and_exact(db_session: AsyncSession) -> None:
    org = await _org(db_session)
    key = f"pipeline-run-{_suffix()}:build_minutes"
    row = {
        "organization_id": org.id,
        "usage_type": "build_minutes",
        "unit": "min",
        "period": "2026-01",
    }
    await _add(db_session, UsageRecord(idempotency_key=key, quantity=Decimal("3.333333"), **row))
    await _rejects(db_session, UsageRecord(idempotency_key=key, quantity=Decimal("1"), **row))
    await _rejects(
        db_session, UsageRecord(idempotency_key=f"{key}:neg", quantity=Decimal("-1"), **row)
    )
    await _rejects(
        db_session,
        UsageRecord(
            idempotency_key=f"{key}:t", quantity=Decimal("1"), **{**row, "usage_type": "coffee"}
        ),
    )
    await _rejects(
        db_session,
        UsageRecord(
            idempotency_key=f"{key}:p", quantity=Decimal("1"), **{**row, "period": "2026-13"}
        ),
    )
    stored = await db_session.scalar(
        select(UsageRecord.quantity).where(UsageRecord.idempotency_key == key)
    )
    assert stored == Decimal("3.333333")
