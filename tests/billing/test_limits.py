"""Plan limits: each limit refuses the next item with a 402 naming the limit and the plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from core.billing.limits import LIMIT_NAMES, enforce_limit
from core.billing.plan_history import change_plan
from db.models.accounts import OrganizationMember, User
from db.models.billing import Subscription
from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.errors import PaymentRequired
from tests.billing.conftest import subscribe
from tests.factories import make_org


async def _project(session, org_id) -> Project:
    project = Project(
        organization_id=org_id,
        name="P",
        slug=f"p-{uuid.uuid4().hex[:8]}",
        project_type="api",
    )
    session.add(project)
    await session.flush()
    return project


async def _refused(session, org_id, limit, project_id=None) -> PaymentRequired:
    with pytest.raises(PaymentRequired) as caught:
        await enforce_limit(session, org_id, limit, project_id=project_id)
    error = caught.value
    assert error.status_code == 402
    assert error.extra["limit"] == limit and error.extra["plan"] == "free"
    assert "Free" in error.detail
    return error


async def test_project_limit_through_the_api_writes_nothing(api_client, session_maker, plans):
    org = await make_org(session_maker)
    body = {"name": "First", "project_type": "api"}
    assert (
        await api_client.post("/v1/projects", headers=org.headers, json=body)
    ).status_code == 201
    second = await api_client.post(
        "/v1/projects", headers=org.headers, json={"name": "Second", "project_type": "api"}
    )
    assert second.status_code == 402, second.text
    assert second.headers["content-type"].startswith("application/problem+json")
    problem = second.json()
    assert (problem["limit"], problem["plan"], problem["maximum"]) == ("projects", "free", 1)
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Project).where(Project.organization_id == org.org_id)
        )
    assert count == 1


async def test_every_limit_on_the_free_plan(session_maker, plans):
    org = await make_org(session_maker)  # no subscription: the Free plan applies
    async with session_scope(session_maker) as session:
        await enforce_limit(session, org.org_id, "projects")
        project = await _project(session, org.org_id)
        await _refused(session, org.org_id, "projects")

        for i in range(2):
            await enforce_limit(session, org.org_id, "pipelines_per_project", project_id=project.id)
            session.add(Pipeline(project_id=project.id, organization_id=org.org_id, name=f"p{i}"))
            await session.flush()
        await _refused(session, org.org_id, "pipelines_per_project", project.id)

        environments = []
        for name in ("staging", "production"):
            await enforce_limit(
                session, org.org_id, "environments_per_project", project_id=project.id
            )
            env = Environment(project_id=project.id, name=name, env_type=name, provider="static")
            session.add(env)
            environments.append(env)
            await session.flush()
        await _refused(session, org.org_id, "environments_per_project", project.id)

        for i in range(10):
            await enforce_limit(session, org.org_id, "deployments_per_month")
            session.add(
                Deployment(
                    organization_id=org.org_id,
                    project_id=project.id,
                    environment_id=environments[0].id,
                    version=f"v{i}",
                    provider="static",
                )
            )
            await session.flush()
        await _refused(session, org.org_id, "deployments_per_month")

        await enforce_limit(session, org.org_id, "concurrent_builds")
        pipeline = Pipeline(project_id=project.id, organization_id=org.org_id, name="Build")
        session.add(pipeline)
        await session.flush()
        session.add(
            PipelineRun(
                pipeline_id=pipeline.id,
                project_id=project.id,
                organization_id=org.org_id,
                run_number=1,
                status="running",
            )
        )
        await session.flush()
        await _refused(session, org.org_id, "concurrent_builds")

        await enforce_limit(session, org.org_id, "team_members")  # the owner alone: 1 of 2
        user = User(email=f"m-{uuid.uuid4().hex[:8]}@example.com", name="Member")
        session.add(user)
        await session.flush()
        session.add(OrganizationMember(organization_id=org.org_id, user_id=user.id, role="member"))
        await session.flush()
        await _refused(session, org.org_id, "team_members")

        error = await _refused(session, org.org_id, "preview_deployments")
        assert "not included" in error.detail


async def test_upgrade_lifts_limits_immediately(session_maker, plans):
    sub = await subscribe(
        session_maker,
        plans,
        plan="free",
        started=datetime.now(UTC),
    )
    async with session_scope(session_maker) as session:
        await _project(session, sub.org_id)
        await _refused(session, sub.org_id, "projects")
        await _refused(session, sub.org_id, "preview_deployments")
        # A plan change applies at once, limits included.
        subscription = await session.get_one(Subscription, sub.subscription_id)
        await change_plan(session, subscription, plans["pro"].id)
        await enforce_limit(session, sub.org_id, "projects")
        await enforce_limit(session, sub.org_id, "preview_deployments")
        project = await _project(session, sub.org_id)
        # Pro has unlimited pipelines per project.
        for i in range(5):
            session.add(Pipeline(project_id=project.id, organization_id=sub.org_id, name=f"x{i}"))
        await session.flush()
        await enforce_limit(session, sub.org_id, "pipelines_per_project", project_id=project.id)


async def test_unknown_limit_is_a_programming_error(session_maker, plans):
    async with session_maker() as session:
        with pytest.raises(ValueError):
            await enforce_limit(session, uuid.uuid4(), "rockets")
    assert len(LIMIT_NAMES) == 7
