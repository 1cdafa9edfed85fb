"""Events delivered to real receivers: signed webhooks (Standard Webhooks), e-mail through a real
SMTP server, a Slack fake; retries with backoff, a receiver down past every retry and redelivered
later, and one delivery for an event emitted twice at once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.notifications import emit
from db.models.notifications import NotificationDelivery, NotificationEvent
from forgeline.settings import Settings
from forgeline.standard_webhooks import SignatureError, verify
from tests.factories import OrgFixture, make_org
from tests.notifications.support import Receiver, SmtpSink, history_payloads, wait_until
from workflows.notification import NotificationWorkflow
from workflows.notifications_models import NotificationOutcome, notification_workflow_id


def run_failed(settings: Settings, org: OrgFixture, **data: Any) -> Any:
    run_id = str(uuid.uuid4())
    return emit.event(
        settings,
        key=f"run.failed:{run_id}",
        event_type="run.failed",
        organization_id=org.org_id,
        title="Run failed: ci #7 of Shop on main",
        body="Stage test exited with 1.",
        data={"run_id": run_id, "url": f"http://localhost:8000/v1/runs/{run_id}", **data},
    )


async def outcome_of(client: Client, key: str) -> NotificationOutcome:
    handle = client.get_workflow_handle_for(NotificationWorkflow.run, notification_workflow_id(key))
    return await handle.result()


async def add_endpoint(api: httpx.AsyncClient, org: OrgFixture, url: str) -> dict[str, Any]:
    response = await api.post("/v1/webhook-endpoints", json={"url": url}, headers=org.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_signed_webhook_and_email_arrive(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
    smtp: SmtpSink,
) -> None:
    org = await make_org(session_maker)
    endpoint = await add_endpoint(notify_api, org, receiver.url)
    secret = endpoint["secret"]
    event = run_failed(notify_settings, org)
    assert await emit.emit(temporal_client, notify_settings, event)
    outcome = await outcome_of(temporal_client, event.key)
    assert outcome == NotificationOutcome(delivered=2, failed=0)

    [request] = receiver.requests
    verify(secret, request.headers, request.body, now=int(time.time()))
    document = json.loads(request.body)
    assert document["type"] == "run.failed"
    assert document["data"]["run_id"] == event.data["run_id"]
    assert request.headers["webhook-id"].startswith("msg_")

    [message] = smtp.messages
    assert message["To"] == org.email
    assert message["Subject"] == event.title
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Stage test exited with 1." in text and str(event.data["url"]) in text

    # The endpoint's secret never travelled through Temporal.
    payloads = await history_payloads(temporal_client, notification_workflow_id(event.key))
    assert payloads and not any(secret.encode() in p for p in payloads)
    assert not any(secret.removeprefix("whsec_").encode() in p for p in payloads)


async def test_a_500_is_retried_and_delivered_once(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
) -> None:
    org = await make_org(session_maker)
    endpoint = await add_endpoint(notify_api, org, receiver.url)
    receiver.statuses = [500]
    event = run_failed(notify_settings, org)
    await emit.emit(temporal_client, notify_settings, event)
    assert (await outcome_of(temporal_client, event.key)).failed == 0
    assert [r.status for r in receiver.requests] == [500, 200]
    # Same message id on the retry: a receiver can tell it is the same message.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1

    log = await notify_api.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=org.headers
    )
    [delivery] = log.json()["items"]
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 2
    assert [(a["succeeded"], a["status_code"]) for a in delivery["attempts"]] == [
        (False, 500),
        (True, 200),
    ]


async def test_receiver_down_past_the_retries_then_redelivered(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
) -> None:
    org = await make_org(session_maker)
    down = Receiver()
    port = down.port
    endpoint = await add_endpoint(notify_api, org, down.url)
    down.close()  # nothing listens there now: every try is refused
    event = run_failed(notify_settings, org)
    await emit.emit(temporal_client, notify_settings, event)
    outcome = await outcome_of(temporal_client, event.key)
    assert outcome.failed == 1  # the webhook; the e-mail went out

    deliveries = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    [failed] = (await notify_api.get(deliveries, headers=org.headers)).json()["items"]
    assert failed["status"] == "failed" and failed["attempt_count"] == 3
    assert all(not a["succeeded"] and a["status_code"] is None for a in failed["attempts"])

    back = Receiver(port=port)
    try:
        # Asked twice at once: one redelivery; the other is told it is under way.
        both = await asyncio.gather(
            *(
                notify_api.post(f"{deliveries}/{failed['id']}/redeliver", headers=org.headers)
                for _ in range(2)
            )
        )
        assert sorted(r.status_code for r in both) == [202, 409], [r.text for r in both]

        async def delivered() -> bool:
            items = (await notify_api.get(deliveries, headers=org.headers)).json()["items"]
            return bool(items[0]["status"] == "delivered")

        await wait_until(delivered)
        [request] = back.requests
        assert request.headers["webhook-id"] == f"msg_{uuid.UUID(failed['id']).hex}"
        [after] = (await notify_api.get(deliveries, headers=org.headers)).json()["items"]
        assert after["attempt_count"] == 4 and after["redeliveries"] == 1
    finally:
        back.close()


async def test_emitted_twice_at_once_delivers_once(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
) -> None:
    org = await make_org(session_maker)
    await add_endpoint(notify_api, org, receiver.url)
    event = run_failed(notify_settings, org)
    started = await asyncio.gather(
        *(emit.emit(temporal_client, notify_settings, event) for _ in range(5))
    )
    assert sorted(started) == [False] * 4 + [True]
    await outcome_of(temporal_client, event.key)
    assert len(receiver.requests) == 1
    async with session_maker() as session:
        events = await session.scalar(
            select(func.count()).where(NotificationEvent.event_key == event.key)
        )
        webhooks = await session.scalar(
            select(func.count())
            .select_from(NotificationDelivery)
            .join(NotificationEvent)
            .where(
                NotificationEvent.event_key == event.key, NotificationDelivery.channel == "webhook"
            )
        )
    assert (events, webhooks) == (1, 1)


async def test_slack_incoming_webhook(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
) -> None:
    org = await make_org(session_maker)
    response = await notify_api.put(
        "/v1/notification-channels/slack", json={"url": receiver.url}, headers=org.headers
    )
    assert response.status_code == 204, response.text
    event = run_failed(notify_settings, org)
    await emit.emit(temporal_client, notify_settings, event)
    await outcome_of(temporal_client, event.key)
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    text = json.loads(request.body)["text"]
    assert text.startswith(f"*{event.title}*\n") and str(event.data["url"]) in text
    prefs = await notify_api.get("/v1/notification-preferences", headers=org.headers)
    assert prefs.json()["slack_configured"] is True
    # The Slack URL is the channel's credential: read by the activity, never in a payload.
    payloads = await history_payloads(temporal_client, notification_workflow_id(event.key))
    assert payloads and not any(receiver.url.encode() in p for p in payloads)


async def test_a_rotated_secret_signs_from_then_on(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
) -> None:
    org = await make_org(session_maker)
    endpoint = await add_endpoint(notify_api, org, receiver.url)
    rotated = await notify_api.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=org.headers
    )
    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
    event = run_failed(notify_settings, org)
    await emit.emit(temporal_client, notify_settings, event)
    await outcome_of(temporal_client, event.key)
    [request] = receiver.requests
    verify(rotated.json()["secret"], request.headers, request.body, now=int(time.time()))
    with pytest.raises(SignatureError):
        verify(endpoint["secret"], request.headers, request.body, now=int(time.time()))
