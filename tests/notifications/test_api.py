"""The notification routes: the caller's inbox (pages, unread count, mark read), preferences with
defaults, and webhook endpoints (secret shown once, SSRF rules, other tenants' ids are 404)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.app import create_app
from db.models.accounts import Notification
from db.models.notifications import WebhookEndpoint
from db.session import session_scope
from forgeline.settings import Settings
from tests.factories import OrgFixture, make_org


async def add_notifications(
    sessions: async_sessionmaker[AsyncSession], org: OrgFixture, count: int, **extra: Any
) -> list[uuid.UUID]:
    ids = []
    async with session_scope(sessions) as session:
        for index in range(count):
            row = Notification(
                user_id=extra.get("user_id", org.user_id),
                organization_id=extra.get("organization_id", org.org_id),
                type="run.failed",
                title=f"Run failed #{index}",
            )
            session.add(row)
            await session.flush()
            ids.append(row.id)
    return ids


async def test_inbox_pages_unread_and_mark_read(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    other = await make_org(session_maker)
    mine = await add_notifications(session_maker, org, 3)
    # Account-wide (no organization) counts too; another member's and another org's do not.
    await add_notifications(session_maker, org, 1, organization_id=None)
    theirs = await add_notifications(session_maker, other, 1)
    await add_notifications(session_maker, other, 1, user_id=org.user_id)

    first = (await api_client.get("/v1/notifications?limit=3", headers=org.headers)).json()
    assert first["unread_count"] == 4 and len(first["items"]) == 3 and first["next_cursor"]
    rest = await api_client.get(
        f"/v1/notifications?limit=3&cursor={first['next_cursor']}", headers=org.headers
    )
    assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None

    read = await api_client.post(f"/v1/notifications/{mine[0]}/read", headers=org.headers)
    assert read.status_code == 200 and read.json()["read_at"]
    again = await api_client.post(f"/v1/notifications/{mine[0]}/read", headers=org.headers)
    assert again.json()["read_at"] == read.json()["read_at"]
    unread = (await api_client.get("/v1/notifications?unread=true", headers=org.headers)).json()
    assert unread["unread_count"] == 3 and mine[0] not in [i["id"] for i in unread["items"]]

    foreign = await api_client.post(f"/v1/notifications/{theirs[0]}/read", headers=org.headers)
    assert foreign.status_code == 404
    marked = (await api_client.post("/v1/notifications/read", headers=org.headers)).json()
    assert marked == {"marked": 3, "unread_count": 0}
    other_inbox = (await api_client.get("/v1/notifications", headers=other.headers)).json()
    assert other_inbox["unread_count"] == 1  # marking mine read left theirs alone

    for bad in ("limit=0", "limit=100000", "cursor=not-a-cursor"):
        response = await api_client.get(f"/v1/notifications?{bad}", headers=org.headers)
        assert response.status_code == 422, bad


async def test_preferences_defaults_changes_and_refusals(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    member = await make_org(session_maker, role="member")
    prefs = (await api_client.get("/v1/notification-preferences", headers=org.headers)).json()
    assert prefs["member"]["run.failed"] == {"in_app": True, "email": True}
    assert prefs["member"]["run.fixed"] == {"in_app": True, "email": False}
    assert prefs["organization"]["invoice.issued"] == {"webhook": True, "slack": True}
    assert prefs["slack_configured"] is False

    # Two changes at once: both kept (the preferences row serializes them).
    changes = [{"run.failed": {"email": False}}, {"deployment.live": {"email": True}}]
    done = await asyncio.gather(
        *(
            api_client.put("/v1/notification-preferences", json={"member": c}, headers=org.headers)
            for c in changes
        )
    )
    assert [r.status_code for r in done] == [200, 200]
    prefs = (await api_client.get("/v1/notification-preferences", headers=org.headers)).json()
    assert prefs["member"]["run.failed"]["email"] is False
    assert prefs["member"]["deployment.live"]["email"] is True

    refused = [
        {"member": {"run.exploded": {"email": True}}},
        {"member": {"run.failed": {"webhook": True}}},
        {"organization": {"run.failed": {"email": True}}},
        {"member": {"run.failed": {"email": "yes please"}}},
        {"everyone": {}},
    ]
    for body in refused:
        response = await api_client.put(
            "/v1/notification-preferences", json=body, headers=org.headers
        )
        assert response.status_code == 422, body
    org_change = {"organization": {"run.fixed": {"slack": False}}}
    forbidden = await api_client.put(
        "/v1/notification-preferences", json=org_change, headers=member.headers
    )
    assert forbidden.status_code == 403
    allowed = await api_client.put(
        "/v1/notification-preferences", json=org_change, headers=org.headers
    )
    assert allowed.json()["organization"]["run.fixed"]["slack"] is False
    # The member's own choices are theirs: the owner's change did not touch them.
    mine = (await api_client.get("/v1/notification-preferences", headers=member.headers)).json()
    assert mine["member"]["run.failed"]["email"] is True


async def test_webhook_endpoints_crud_secret_once(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    created = await api_client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "event_types": ["run.failed"]},
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    path = f"/v1/webhook-endpoints/{body['id']}"
    shown = (await api_client.get(path, headers=org.headers)).json()
    assert "secret" not in shown and shown["event_types"] == ["run.failed"]
    listed = (await api_client.get("/v1/webhook-endpoints", headers=org.headers)).json()
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]
    async with session_maker() as session:
        stored = await session.scalar(
            select(WebhookEndpoint.secret_encrypted).where(WebhookEndpoint.id == body["id"])
        )
    assert stored and body["secret"] not in stored and "whsec_" not in stored

    patched = await api_client.patch(
        path, json={"enabled": False, "event_types": []}, headers=org.headers
    )
    assert patched.json()["enabled"] is False and patched.json()["event_types"] == []
    bad = await api_client.patch(path, json={"event_types": ["nope"]}, headers=org.headers)
    assert bad.status_code == 422
    member = await make_org(session_maker, role="member")
    assert (
        await api_client.get("/v1/webhook-endpoints", headers=member.headers)
    ).status_code == 403
    assert (await api_client.delete(path, headers=org.headers)).status_code == 204
    assert (await api_client.get(path, headers=org.headers)).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "https://169.254.169.254/",
        "https://10.0.0.8/hooks",
        "http://10.20.30.40:8080/hooks",
        "https://[::ffff:169.254.169.254]/",
        "file:///etc/passwd",
        "https://2130706433/",
    ],
)
async def test_endpoint_urls_that_reach_inside_are_422(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], url: str
) -> None:
    org = await make_org(session_maker)
    created = await api_client.post("/v1/webhook-endpoints", json={"url": url}, headers=org.headers)
    assert created.status_code == 422, created.text
    ok = await api_client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=org.headers
    )
    patched = await api_client.patch(
        f"/v1/webhook-endpoints/{ok.json()['id']}", json={"url": url}, headers=org.headers
    )
    assert patched.status_code == 422
    slack = await api_client.put(
        "/v1/notification-channels/slack", json={"url": url}, headers=org.headers
    )
    assert slack.status_code == 422


@pytest.fixture
async def production_api(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as production runs it, where loopback is an internal address like any other."""
    app = create_app(
        settings.model_copy(update={"environment": "production"}),
        session_maker=session_maker,
        temporal_client=temporal_client,
    )
    transport = httpx.ASGITransport(app=app, client=("127.9.9.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/hooks", "https://127.0.0.1/hooks", "https://[::1]/hooks"]
)
async def test_loopback_refused_in_production(
    production_api: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    url: str,
) -> None:
    org = await make_org(session_maker)
    created = await production_api.post(
        "/v1/webhook-endpoints", json={"url": url}, headers=org.headers
    )
    assert created.status_code == 422, created.text
    assert "internal addresses" in created.json()["detail"]
    slack = await production_api.put(
        "/v1/notification-channels/slack", json={"url": url}, headers=org.headers
    )
    assert slack.status_code == 422
