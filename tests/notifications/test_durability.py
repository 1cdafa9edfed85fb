"""Notifications survive the worker: one stopped between two tries of a delivery is replaced and
the delivery goes through once. Emitting never raises, even when Temporal refuses the start."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.notifications import emit, sources
from forgeline.settings import Settings
from tests.factories import make_org
from tests.notifications.support import (
    Receiver,
    fast_settings,
    notification_outcome,
    notification_worker,
    wait_until,
)


async def test_a_worker_stopped_between_tries_is_replaced(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    receiver: Receiver,
) -> None:
    patient = fast_settings(
        notify_settings,
        notification_max_attempts=6,
        notification_retry_initial_seconds=0.5,
        notification_retry_max_seconds=0.5,
    )
    org = await make_org(session_maker)
    hook = await api_client.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["deployment.rolled_back"]},
        headers=org.headers,
    )
    assert hook.status_code == 201
    receiver.statuses = [500, 500]
    key = f"deployment.rolled_back:{uuid.uuid4()}"
    event = emit.event(
        patient, key=key, event_type="deployment.rolled_back", organization_id=org.org_id,
        title="Rolled back", body="Health checks failed; the previous version serves.", data={},
    )  # fmt: skip

    async def tried_once() -> bool:
        return len(receiver.requests) >= 1

    async with notification_worker(temporal_client, patient, session_maker):
        assert await emit.emit(temporal_client, patient, event)
        await wait_until(tried_once)
    # No worker now: the next try waits on the server, not in a process.
    async with notification_worker(temporal_client, patient, session_maker):
        outcome = await notification_outcome(temporal_client, key)
    assert outcome.failed == 0
    statuses = [r.status for r in receiver.requests]
    assert statuses[-1] == 200 and statuses.count(200) == 1 and 500 in statuses
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


async def test_emitting_never_raises(
    temporal_address: str,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org = await make_org(session_maker)
    refused = await Client.connect(
        temporal_address,
        namespace=f"missing-{uuid.uuid4().hex[:8]}",
        data_converter=temporal_client.data_converter,
    )
    event = emit.event(
        settings, key=f"run.failed:{uuid.uuid4()}", event_type="run.failed",
        organization_id=org.org_id, title="t", body="b", data={},
    )  # fmt: skip
    assert await emit.emit(refused, settings, event) is False
    # Nothing to tell about a run that does not exist; a broken start is logged, not raised.
    await sources.announce_run(refused, session_maker, settings, str(uuid.uuid4()))
    await sources.announce_deployment(refused, session_maker, settings, str(uuid.uuid4()), "failed")
