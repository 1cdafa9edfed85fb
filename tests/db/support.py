"""Rows for the database-constraint tests, each added in a savepoint of the test's session so a
refused one leaves the rest of the test usable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Organization,
    Pipeline,
    PipelineRun,
    Plan,
    Project,
    User,
)

NOW = datetime(2026, 1, 15, tzinfo=UTC)


def suffix() -> str:
    return uuid.uuid4().hex[:10]


async def add_rows(session: AsyncSession, *rows: Any) -> None:
    async with session.begin_nested():
        session.add_all(rows)
        await session.flush()


async def rejects(session: AsyncSession, *rows: Any) -> None:
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            session.add_all(rows)
            await session.flush()


async def new_org(session: AsyncSession) -> Organization:
    org = Organization(name="Acme", slug=f"acme-{suffix()}")
    await add_rows(session, org)
    return org


async def new_user(session: AsyncSession, email: str | None = None) -> User:
    user = User(email=email or f"{suffix()}@example.com", name="Ada")
    await add_rows(session, user)
    return user


async def new_project(session: AsyncSession, org: Organization, **kw: Any) -> Project:
    project = Project(
        organization_id=org.id,
        name="Site",
        slug=kw.pop("slug", f"site-{suffix()}"),
        project_type="static_site",
        **kw,
    )
    await add_rows(session, project)
    return project


async def new_pipeline_run(session: AsyncSession, project: Project) -> tuple[Pipeline, PipelineRun]:
    pipeline = Pipeline(project_id=project.id, organization_id=project.organization_id, name="ci")
    await add_rows(session, pipeline)
    run = PipelineRun(
        pipeline_id=pipeline.id,
        project_id=project.id,
        organization_id=project.organization_id,
        run_number=1,
    )
    await add_rows(session, run)
    return pipeline, run


async def new_plan(session: AsyncSession) -> Plan:
    plan = Plan(slug=f"test-{suffix()}", name="Test", price_monthly=Decimal("19.00"))
    await add_rows(session, plan)
    return plan
