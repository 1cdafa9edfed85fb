"""The console's deployment actions: who may decide (and what the others are told), rollback and
promote with CSRF and tenancy checks, over HTTP with the real app, Postgres and Temporal."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.deployments import Deployment
from db.session import session_scope
from tests.console.helpers import csrf_of, make_deployment, make_run, sign_in
from tests.factories import make_org
from workflows.deployment import deployment_workflow_id


async def test_members_who_may_not_decide_are_told_why(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await make_org(session_maker, role="viewer")
    rows = await make_run(session_maker, viewer)
    waiting = await make_deployment(
        session_maker, viewer, rows.project_id, status="awaiting_approval"
    )
    await sign_in(api_client, viewer)
    page = await api_client.get(f"/projects/{rows.project_id}/deployments")
    assert page.status_code == 200
    assert "Your role (viewer) cannot approve" in page.text
    assert f"/deployments/{waiting}/approve" not in page.text
    assert "Roll back" not in page.text and "Promote" not in page.text
    token = csrf_of(page.text)
    refused = await api_client.post(
        f"/deployments/{waiting}/approve", data={"csrf": token, "reason": "looks fine"}
    )
    assert refused.status_code == 403

    admin = await make_org(session_maker, role="admin")
    rows = await make_run(session_maker, admin)
    mine = await make_deployment(session_maker, admin, rows.project_id, status="awaiting_approval")
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Deployment)
            .where(Deployment.id == mine)
            .values(triggered_by_user_id=admin.user_id)
        )
    api_client.cookies.clear()
    await sign_in(api_client, admin)
    page = await api_client.get(f"/projects/{rows.project_id}/deployments")
    assert "You requested this deployment; another member has to approve it." in page.text
    assert f"/deployments/{mine}/approve" not in page.text


async def test_rollback_and_promote_need_csrf_the_tenant_and_a_healthy_source(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows = await make_run(session_maker, org)
    live = await make_deployment(session_maker, org, rows.project_id, status="active", url=None)
    failed = await make_deployment(session_maker, org, rows.project_id, status="failed")
    theirs_rows = await make_run(session_maker, other)
    theirs = await make_deployment(session_maker, other, theirs_rows.project_id, status="active")
    async with session_maker() as session:
        envs = {
            d: e
            for d, e in (
                await session.execute(
                    select(Deployment.id, Deployment.environment_id).where(
                        Deployment.id.in_([live, failed, theirs])
                    )
                )
            ).all()
        }
    await sign_in(api_client, org)
    page = await api_client.get(f"/projects/{rows.project_id}/deployments")
    token = csrf_of(page.text)
    assert f'action="/deployments/{live}/rollback"' in page.text
    assert f'action="/deployments/{live}/promote"' in page.text
    for action, extra in (("rollback", {}), ("promote", {"environment": str(envs[failed])})):
        url = f"/deployments/{live}/{action}"
        assert (await api_client.post(url, data=extra)).status_code == 403, action
        assert (await api_client.post(url, data={**extra, "csrf": "0" * 64})).status_code == 403
    # Nothing earlier to roll back to: a conflict, nothing written.
    nothing = await api_client.post(f"/deployments/{live}/rollback", data={"csrf": token})
    assert nothing.status_code == 409
    # Another tenant's deployment, or another tenant's environment as the target: 404.
    foreign = await api_client.post(f"/deployments/{theirs}/rollback", data={"csrf": token})
    assert foreign.status_code == 404
    foreign_target = await api_client.post(
        f"/deployments/{live}/promote", data={"csrf": token, "environment": str(envs[theirs])}
    )
    assert foreign_target.status_code == 404
    hostile = await api_client.post(
        f"/deployments/{live}/promote", data={"csrf": token, "environment": "<script>"}
    )
    assert hostile.status_code == 404
    unhealthy = await api_client.post(
        f"/deployments/{failed}/promote", data={"csrf": token, "environment": str(envs[live])}
    )
    assert unhealthy.status_code == 409
    async with session_scope(session_maker) as session:  # published files to release again
        await session.execute(
            update(Deployment)
            .where(Deployment.id == live)
            .values(artifact_key=f"deployments/{live}/site")
        )
    promoted = await api_client.post(
        f"/deployments/{live}/promote", data={"csrf": token, "environment": str(envs[failed])}
    )
    assert promoted.status_code == 303, promoted.text
    async with session_maker() as session:
        created = (
            await session.scalars(select(Deployment).where(Deployment.promoted_from_id == live))
        ).all()
    assert len(created) == 1 and created[0].environment_id == envs[failed]
    assert created[0].triggered_by_user_id == org.user_id
    handle = temporal_client.get_workflow_handle(deployment_workflow_id(str(created[0].id)))
    await handle.terminate("test over")
