"""The database itself rejects bad rows: checks, uniques and ownership rules of tenants, projects,
keys, environments, runs, deployments and webhook deliveries."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers

from db.models import (
    ApiKey,
    Deployment,
    Environment,
    PipelineRun,
    PipelineStage,
    Project,
    StageExecution,
    User,
    WebhookPayload,
)
from tests.db.support import (
    add_rows,
    new_org,
    new_pipeline_run,
    new_project,
    new_user,
    rejects,
    suffix,
)


def test_mappers_configure() -> None:
    configure_mappers()


async def test_project_owned_by_organization_or_user_not_both(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    user = await new_user(db_session)
    base = {"name": "p", "project_type": "spa"}
    await add_rows(db_session, Project(organization_id=org.id, slug="by-org", **base))
    await add_rows(db_session, Project(owner_user_id=user.id, slug="by-user", **base))
    await rejects(
        db_session, Project(organization_id=org.id, owner_user_id=user.id, slug="both", **base)
    )
    await rejects(db_session, Project(slug="nobody", **base))


async def test_project_slug_unique_per_owner(db_session: AsyncSession) -> None:
    org, other = await new_org(db_session), await new_org(db_session)
    await new_project(db_session, org, slug="www")
    await new_project(db_session, other, slug="www")  # another tenant may reuse it
    await rejects(
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
    org = await new_org(db_session)
    values: dict[str, Any] = {
        "organization_id": org.id,
        "name": "p",
        "slug": f"p-{suffix()}",
        "project_type": "spa",
    }
    values[field] = value
    await rejects(db_session, Project(**values))


async def test_user_email_unique_case_insensitively(db_session: AsyncSession) -> None:
    email = f"Ada.{suffix()}@Example.com"
    await new_user(db_session, email)
    await rejects(db_session, User(email=email.lower(), name="Imposter"))
    await rejects(db_session, User(email=email.upper(), name="Imposter"))


async def test_api_key_hash_must_be_sha256_hex_and_unique(db_session: AsyncSession) -> None:
    org = await new_org(db_session)
    digest = uuid.uuid4().hex * 2
    await add_rows(
        db_session,
        ApiKey(organization_id=org.id, name="ci", key_prefix=f"fl_{suffix()}", key_hash=digest),
    )
    await rejects(
        db_session,
        ApiKey(organization_id=org.id, name="dup", key_prefix=f"fl_{suffix()}", key_hash=digest),
    )
    await rejects(
        db_session,
        ApiKey(organization_id=org.id, name="raw", key_prefix=f"fl_{suffix()}", key_hash="secret"),
    )


async def test_environment_name_unique_per_project_and_types_checked(
    db_session: AsyncSession,
) -> None:
    project = await new_project(db_session, await new_org(db_session))
    env = {"project_id": project.id, "provider": "docker"}
    await add_rows(db_session, Environment(name="production", env_type="production", **env))
    await rejects(db_session, Environment(name="production", env_type="staging", **env))
    await rejects(db_session, Environment(name="qa", env_type="qa", **env))
    await rejects(
        db_session, Environment(name="x", env_type="staging", project_id=project.id, provider="ftp")
    )


async def test_run_numbers_and_stage_attempts_unique(db_session: AsyncSession) -> None:
    project = await new_project(db_session, await new_org(db_session))
    pipeline, run = await new_pipeline_run(db_session, project)
    await rejects(
        db_session,
        PipelineRun(pipeline_id=pipeline.id, project_id=project.id, run_number=1),
    )
    await rejects(
        db_session,
        PipelineRun(pipeline_id=pipeline.id, project_id=project.id, run_number=2, status="done"),
    )
    await add_rows(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=1))
    await add_rows(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=2))
    await rejects(db_session, StageExecution(run_id=run.id, stage_name="build", attempt=2))
    await rejects(db_session, StageExecution(run_id=run.id, stage_name="lint", status="exploded"))
    await rejects(
        db_session,
        PipelineStage(pipeline_id=pipeline.id, name="s", position=0, stage_type="x"),
    )
    await rejects(
        db_session,
        PipelineStage(
            pipeline_id=pipeline.id, name="s", position=0, stage_type="test", timeout_seconds=0
        ),
    )


async def test_deployment_status_checked(db_session: AsyncSession) -> None:
    project = await new_project(db_session, await new_org(db_session))
    env = Environment(project_id=project.id, name="s", env_type="staging", provider="static")
    await add_rows(db_session, env)
    await rejects(
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
    delivery = f"d-{suffix()}"
    row = {"provider": "github", "event_type": "push", "signature_valid": True}
    await add_rows(db_session, WebhookPayload(delivery_id=delivery, **row))
    await rejects(db_session, WebhookPayload(delivery_id=delivery, **row))
    await add_rows(
        db_session, WebhookPayload(delivery_id=delivery, **{**row, "provider": "gitlab"})
    )
