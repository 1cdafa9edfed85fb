"""Actions the system takes by itself are in the audit log with actor `system`, once each even
when the step that records them is retried: automatic rollback, scheduled billing runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.billing.periods import Period
from core.billing.schedules import start_due_billing_runs
from core.deployments.projections import record_rollback
from db.models.deployments import Deployment
from db.session import session_scope
from tests.billing.conftest import seeded_plans, subscribe
from tests.deployments.helpers import make_environment
from tests.factories import make_org
from workflows.billing_models import StartBillingRunsRequest


async def system_entries(
    api_client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, object]]:
    answer = await api_client.get("/v1/audit-logs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["items"] if e["actor_type"] == "system"]


async def test_an_automatic_rollback_is_audited_once_as_the_system(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    project_id, environment_id = await make_environment(
        session_maker, org.org_id, env_type="production"
    )
    previous, failing = uuid.uuid4(), uuid.uuid4()
    async with session_scope(session_maker) as session:
        for deployment_id, status in ((previous, "superseded"), (failing, "verifying")):
            session.add(
                Deployment(
                    id=deployment_id,
                    environment_id=environment_id,
                    project_id=project_id,
                    organization_id=org.org_id,
                    version=status,
                    status=status,
                    provider="docker",
                )
            )
            await session.flush()
    # The activity that records it is retried: the entry is written once.
    for _ in range(2):
        async with session_scope(session_maker) as session:
            await record_rollback(
                session,
                deployment_id=str(failing),
                reason="health checks failed 3 times",
                previous_id=str(previous),
                health_summary={},
            )
    entries = await system_entries(api_client, org.headers, resource_id=str(failing))
    assert [(e["action"], e["severity"]) for e in entries] == [
        ("deployment.rolled_back", "warning")
    ]
    assert entries[0]["new_values"] == {"status": "rolled_back", "rolled_back_to_id": str(previous)}


async def test_a_scheduled_billing_run_is_audited_as_the_system(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> None:
    started = datetime(2026, 1, 10, tzinfo=UTC)
    period = Period.containing(started)
    async with seeded_plans(session_maker) as plans:
        subscribed = await subscribe(session_maker, plans, started=started)
        org = subscribed.org
        just_before = uuid.UUID(int=org.org_id.int - 1)
        request = StartBillingRunsRequest(
            period=period.key, after_organization_id=str(just_before), limit=1
        )
        first = await start_due_billing_runs(session_maker, temporal_client, request)
        # The page again (an activity retry): the run is already started, nothing new is audited.
        again = await start_due_billing_runs(session_maker, temporal_client, request)
    assert (first.started, again.started, again.already_started) == (1, 0, 1)
    entries = await system_entries(api_client, org.headers, action="billing.run")
    assert [e["new_values"]["period"] for e in entries] == [period.key]  # type: ignore[index]
    handle = temporal_client.get_workflow_handle(str(entries[0]["new_values"]["workflow_id"]))  # type: ignore[index]
    await handle.terminate(reason="test cleanup: no billing worker runs here")
