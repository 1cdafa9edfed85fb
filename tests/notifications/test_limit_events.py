"""A plan limit refusing a request announces billing.limit_reached once per organization, limit
and month, after the unchanged 402 answer; refusals without a limit announce nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from db.models.billing import Plan
from tests.billing.conftest import seeded_plans
from tests.factories import make_org
from tests.notifications.support import Receiver, notification_outcome


@pytest.fixture(scope="module")
async def plans(
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[dict[str, Plan]]:
    async with seeded_plans(session_maker) as seeded:
        yield seeded


async def test_limit_reached_is_announced_once(
    notify_api: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notifications: Worker,
    receiver: Receiver,
    plans: dict[str, Plan],
) -> None:
    org = await make_org(session_maker)
    hook = await notify_api.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["billing.limit_reached"]},
        headers=org.headers,
    )
    assert hook.status_code == 201, hook.text
    body: dict[str, Any] = {"name": "First", "project_type": "api"}
    assert (
        await notify_api.post("/v1/projects", json=body, headers=org.headers)
    ).status_code == 201
    for attempt in range(3):
        refused = await notify_api.post(
            "/v1/projects", json={"name": f"More {attempt}", "project_type": "api"},
            headers=org.headers,
        )  # fmt: skip
        assert refused.status_code == 402, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (refused.json()["limit"], refused.json()["plan"]) == ("projects", "free")

    month = datetime.now(UTC).strftime("%Y-%m")
    key = f"billing.limit_reached:{org.org_id}:projects:{month}"
    assert (await notification_outcome(temporal_client, key)).failed == 0
    [request] = receiver.requests
    sent = json.loads(request.body)
    assert sent["type"] == "billing.limit_reached"
    assert (sent["data"]["limit"], sent["data"]["plan"], sent["data"]["maximum"]) == (
        "projects",
        "free",
        1,
    )
    inbox = (await notify_api.get("/v1/notifications", headers=org.headers)).json()
    assert [n["type"] for n in inbox["items"]] == ["billing.limit_reached"]
