"""Deployments go live in the order they were requested: the environment lock grants by request
time (not by when a request reaches it), and a deployment delayed past a newer one that is already
live (a worker crash, a slow retry) ends without replacing it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.deployments import repository, service
from db.session import session_scope
from forgeline.settings import Settings
from tests.deployments.helpers import (
    deployment_row,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    static_site,
    wait_status,
)
from tests.deployments.proxy import via_proxy
from tests.factories import make_org
from workflows.deployment_lock import EnvironmentDeploymentLock, LockState
from workflows.deployment_models import LockRequest


async def test_an_older_deployment_never_replaces_a_newer_live_one(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    task_queue: str,
) -> None:
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    _, env_id = await make_environment(
        session_maker, org.org_id, provider="static", config={"health_check_passes": 1}
    )
    # v1 is requested first, but its workflow is held back (as a crashed worker would).
    async with session_scope(session_maker) as session:
        env, project = await repository.environment_for(session, org.org_id, env_id)
        older, older_input = await service.create_deployment(
            session,
            env,
            project,
            static_site(sources, "v1"),
            triggered_by_user_id=None,
        )
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        newer = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "v2"),
            task_queue=task_queue,
        )
        live = await wait_status(session_maker, newer, ("active", "failed"))
        assert live.status == "active", live.error
        # The held-back request now runs, twice at once (a retried start): it must not go live.
        await asyncio.gather(
            service.start_workflow(temporal_client, older_input, task_queue=task_queue),
            service.start_workflow(temporal_client, older_input, task_queue=task_queue),
        )
        ended = await wait_status(
            session_maker, older.id, ("active", "cancelled", "failed", "superseded")
        )
    assert ended.status == "cancelled"
    assert str(newer) in (ended.error or "")
    assert (await deployment_row(session_maker, newer)).status == "active"
    assert live.url is not None
    target, headers = via_proxy(live.url, settings.proxy_http_port)
    async with httpx.AsyncClient() as http:
        page = await http.get(target, headers=headers)
    assert page.status_code == 200 and "v2" in page.text


async def _lock_state(handle: object) -> tuple[str | None, list[str]]:
    view = await handle.query(EnvironmentDeploymentLock.state)  # type: ignore[attr-defined]
    return view.holder, view.queue


async def test_the_lock_grants_in_request_order(temporal_client: Client, task_queue: str) -> None:
    """Requests that reach the lock out of order (the older one retried late) are granted in the
    order they were made; a duplicate request changes nothing; requests without a time keep
    arrival order."""
    from temporalio.worker import Worker

    env_id = str(uuid.uuid4())
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def req(name: str, minutes: int | None) -> LockRequest:
        return LockRequest(
            environment_id=env_id,
            workflow_id=f"deployment-{name}-{env_id}",
            deployment_id=str(uuid.uuid4()),
            requested_at=base + timedelta(minutes=minutes) if minutes is not None else None,
        )

    holder, late, early, early_again, untimed = (
        req("holder", 0),
        req("late", 2),
        req("early", 1),
        req("early", 1),
        req("untimed", None),
    )
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[EnvironmentDeploymentLock]
    ):
        handle = await temporal_client.start_workflow(
            EnvironmentDeploymentLock.run,
            LockState(environment_id=env_id),
            id=f"environment-lock-{env_id}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        await handle.signal(EnvironmentDeploymentLock.request, holder)

        async def held() -> bool:
            return (await _lock_state(handle))[0] == holder.workflow_id

        while not await held():
            await asyncio.sleep(0.05)
        for request in (late, early, early_again, untimed):
            await handle.signal(EnvironmentDeploymentLock.request, request)
        assert await _lock_state(handle) == (
            holder.workflow_id,
            [early.workflow_id, late.workflow_id, untimed.workflow_id],
        )
        await handle.signal(EnvironmentDeploymentLock.release, holder.workflow_id)
        while (await _lock_state(handle))[0] != early.workflow_id:
            await asyncio.sleep(0.05)
        await handle.terminate("test over")
