"""Another organization's webhook endpoints, deliveries and notifications are 404 on every
route, whatever the caller's role; nothing of theirs changes."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.notifications import NotificationDelivery, WebhookEndpoint
from forgeline.settings import Settings
from tests.api.notification_factories import delivery_factory, notification_factory
from tests.api.tenancy_factories import FactoryContext
from tests.factories import make_org


async def test_other_tenants_ids_are_404(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    owner = await make_org(session_maker)
    intruder = await make_org(session_maker)  # an owner too: every scope of its own org
    ctx = FactoryContext(session_maker=session_maker, org=owner, settings=settings)
    delivery = await delivery_factory(ctx)
    endpoint = ctx.ids["endpoint_id"]
    notification = await notification_factory(ctx)
    base = f"/v1/webhook-endpoints/{endpoint}"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("PATCH", base, {"url": "http://169.254.169.254/"}),
        ("POST", f"{base}/rotate-secret", None),
        ("DELETE", base, None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/deliveries/{delivery}/redeliver", None),
        ("POST", f"/v1/notifications/{notification}/read", None),
    ]
    for method, path, body in calls:
        response = await api_client.request(method, path, json=body, headers=intruder.headers)
        assert response.status_code == 404, (method, path, response.text)
    # Their own endpoint with the owner's delivery id: still 404 (the pair must match).
    own = await api_client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=intruder.headers
    )
    mixed = await api_client.post(
        f"/v1/webhook-endpoints/{own.json()['id']}/deliveries/{delivery}/redeliver",
        headers=intruder.headers,
    )
    assert mixed.status_code == 404
    listed = await api_client.get("/v1/webhook-endpoints", headers=intruder.headers)
    assert [e["id"] for e in listed.json()] == [own.json()["id"]]

    async with session_maker() as session:
        kept = await session.get(WebhookEndpoint, endpoint)
        row = await session.scalar(
            select(NotificationDelivery).where(NotificationDelivery.id == delivery)
        )
    assert kept is not None and kept.enabled and kept.url == "http://127.0.0.1:9/matrix"
    assert row is not None and row.status == "failed" and row.redeliveries == 0
    random = await api_client.get(f"/v1/webhook-endpoints/{uuid.uuid4()}", headers=owner.headers)
    assert random.status_code == 404
