"""Deployments and billing announce their transitions: a protected deployment waiting for
approval and how it ended reach a webhook endpoint from the real deployment workflow; an issued
invoice and a failed payment reach the owners' channels (their in-app rows are billing's)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deployments.notifying import NotifyingDeploymentActivities
from core.notifications.sources import announce_invoice, deployment_event
from db.models.accounts import Notification
from forgeline.settings import Settings
from forgeline.statuses.notifications import NotificationEventType
from infra.storage import LocalObjectStore
from tests.api.tenancy_factories import FactoryContext
from tests.deployments.helpers import (
    another_key,
    protected_environment,
    request_deployment,
    running_worker,
    stop,
    wait_status,
)
from tests.factories import make_org
from tests.notifications.support import Receiver, SmtpSink, notification_outcome, wait_until
from workflows.notifications_models import NotificationOutcome

ENDED = {
    "active": "deployment.live",
    "failed": "deployment.failed",
    "rolled_back": "deployment.rolled_back",
}


async def outcome(client: Client, key: str) -> NotificationOutcome:
    found: NotificationOutcome = await notification_outcome(client, key)
    return found


def sent(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests]


async def test_awaiting_approval_then_the_end_of_the_deployment(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
    task_queue: str,
) -> None:
    org = await make_org(session_maker, role="member")  # triggers; the owner approves
    owner = await another_key(session_maker, org.org_id, org.owner_user_id)
    endpoint = await api_client.post(
        "/v1/webhook-endpoints", json={"url": receiver.url}, headers=owner
    )
    assert endpoint.status_code == 201
    env_id = await protected_environment(session_maker, org.org_id, 1)
    activities = NotifyingDeploymentActivities(
        settings=notify_settings,
        session_maker=session_maker,
        temporal=temporal_client,
        docker_client=None,
        store=LocalObjectStore(notify_settings.objects_dir),
    )
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker, temporal_client, org.org_id, env_id, task_queue, user_id=org.user_id
        )
        try:
            await outcome(temporal_client, f"deployment.awaiting_approval:{dep}")
            [waiting] = sent(receiver)
            assert waiting["type"] == "deployment.awaiting_approval"
            assert waiting["data"]["deployment_id"] == str(dep)
            approved = await api_client.post(
                f"/v1/deployments/{dep}/approve", json={"reason": "ship"}, headers=owner
            )
            assert approved.status_code == 200, approved.text
            row = await wait_status(session_maker, dep, tuple(ENDED))
            await outcome(temporal_client, f"{ENDED[row.status]}:{dep}")
        finally:
            await stop(temporal_client, dep)
    assert [d["type"] for d in sent(receiver)] == [
        "deployment.awaiting_approval",
        ENDED[row.status],
    ]


async def test_deployment_statuses_without_news_emit_nothing(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    ctx = FactoryContext(session_maker=session_maker, org=org, settings=settings)
    dep = str(await ctx.ensure("deployment_id"))
    async with session_maker() as session:
        for status in ("queued", "building", "deploying", "verifying", "superseded"):
            assert await deployment_event(session, settings, dep, status) is None
        live = await deployment_event(session, settings, dep, "active")
    assert live is not None and live.key == f"deployment.live:{dep}"


async def test_invoice_issued_and_payment_failed_reach_email_and_webhook(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
    smtp: SmtpSink,
) -> None:
    org = await make_org(session_maker)
    await api_client.post("/v1/webhook-endpoints", json={"url": receiver.url}, headers=org.headers)
    ctx = FactoryContext(session_maker=session_maker, org=org, settings=notify_settings)
    invoice = str(await ctx.ensure("invoice_id"))
    issued, failed = NotificationEventType.INVOICE_ISSUED, NotificationEventType.PAYMENT_FAILED
    for _ in range(2):  # a retried activity announces again: still one event
        await announce_invoice(temporal_client, session_maker, notify_settings, invoice, issued)
    await announce_invoice(
        temporal_client, session_maker, notify_settings, invoice, failed, attempt=1
    )
    await outcome(temporal_client, f"invoice.issued:{invoice}")
    await outcome(temporal_client, f"payment.failed:{invoice}:1")
    assert sorted(d["type"] for d in sent(receiver)) == ["invoice.issued", "payment.failed"]
    await wait_until(lambda: _at_least(smtp, 2))
    assert sorted(str(m["Subject"]) for m in smtp.messages)[0].startswith("Invoice MATRIX-")
    async with session_maker() as session:
        in_app = await session.scalar(
            select(func.count()).where(Notification.organization_id == org.org_id)
        )
    assert in_app == 0  # billing writes the owners' in-app rows in its own transaction


async def _at_least(smtp: SmtpSink, count: int) -> bool:
    return len(smtp.messages) >= count
