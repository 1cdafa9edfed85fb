"""Leases of busy API keys through the API (core/accounts/key_leases.py): a busy key is counted in
blocks and still never passes its limit, in one process or two; a key revoked in this process
stops at once, one revoked elsewhere within the lease TTL; a forged or garbled key never uses,
creates or spends a lease; another tenant's project stays 404 on a leased key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from core.accounts import key_leases
from core.accounts.key_leases import KeyLeases
from db.models.accounts import ApiKey
from forgeline.settings import Settings
from tests.api.test_api_key_lookup import counted, same_prefix_forgery
from tests.factories import OrgFixture, make_org

# Requests that make a fresh key busy enough to be counted in blocks.
WARM = key_leases.HOT_AFTER + 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: Any) -> Iterator[Clock]:
    """The app's leases on a clock the test moves (restored afterwards)."""
    fake = Clock()
    previous = app.state.key_leases
    app.state.key_leases = KeyLeases(clock=fake)
    try:
        yield fake
    finally:
        app.state.key_leases = previous


async def warm(client: httpx.AsyncClient, org: OrgFixture, n: int = WARM) -> None:
    for _ in range(n):
        assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200


async def test_a_busy_key_is_counted_in_blocks(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    org = await make_org(session_maker)
    await warm(api_client, org, 200)
    hits = await counted(session_maker, org.api_key_id)
    # Every request counted, plus what the last block has left (never more than one block).
    assert 200 < hits <= 200 + key_leases.MAX_BLOCK


async def test_a_busy_key_never_passes_its_limit(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    org = await make_org(session_maker, rate_limit_per_minute=60)
    codes = [
        (await api_client.get("/v1/projects", headers=org.headers)).status_code for _ in range(90)
    ]
    # A minute boundary in the middle lets the sliding estimate admit a request or two more.
    assert 60 <= codes.count(200) <= 62 and set(codes) == {200, 429}
    assert await counted(session_maker, org.api_key_id) >= 90


@pytest.fixture
async def second_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process's app on the same database (its own leases)."""
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_concurrent_requests_on_two_processes_stay_within_the_limit(
    api_client: httpx.AsyncClient,
    second_app: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    limit = 120
    org = await make_org(session_maker, rate_limit_per_minute=limit)
    await warm(api_client, org)
    await warm(second_app, org)
    answers = await asyncio.gather(
        *(c.get("/v1/projects", headers=org.headers) for c in (api_client, second_app) * 100)
    )
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}
    admitted = 2 * WARM + codes.count(200)
    assert admitted <= limit + 2
    # Leased slots not used count against the key, never for it.
    assert await counted(session_maker, org.api_key_id) >= 2 * WARM + 200


async def test_concurrent_duplicates_of_a_busy_key_are_each_counted(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    await warm(api_client, org)
    answers = await asyncio.gather(
        *(api_client.get("/v1/projects", headers=org.headers) for _ in range(60))
    )
    assert {a.status_code for a in answers} == {200}
    hits = await counted(session_maker, org.api_key_id)
    assert hits >= WARM + 60


async def test_a_key_revoked_in_this_process_stops_at_once(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    org = await make_org(session_maker)
    await warm(api_client, org, 300)  # blocks of dozens: the lease holds slots now
    gone = await api_client.delete(f"/v1/api-keys/{org.api_key_id}", headers=org.headers)
    assert gone.status_code == 204
    after = await api_client.get("/v1/projects", headers=org.headers)
    assert after.status_code == 401 and "revoked" in after.json()["detail"]


async def test_a_key_revoked_elsewhere_stops_within_the_lease_ttl(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    org = await make_org(session_maker)
    await warm(api_client, org, 300)
    async with session_maker() as session:  # as another API process would revoke it
        await session.execute(
            update(ApiKey).where(ApiKey.id == org.api_key_id).values(revoked_at=datetime.now(UTC))
        )
        await session.commit()
    # Until the TTL: served on the lease, or already refused by a lookup; never anything else.
    soon = await api_client.get("/v1/projects", headers=org.headers)
    assert soon.status_code in (200, 401)
    clock.now += key_leases.LEASE_TTL_SECONDS
    for _ in range(3):
        late = await api_client.get("/v1/projects", headers=org.headers)
        assert late.status_code == 401 and "revoked" in late.json()["detail"]


async def test_forged_and_garbled_keys_never_touch_a_lease(
    app: Any,
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    clock: Clock,
) -> None:
    org = await make_org(session_maker)
    await warm(api_client, org, 300)
    leases: KeyLeases = app.state.key_leases
    tracked = len(leases)
    before = await counted(session_maker, org.api_key_id)
    forged = same_prefix_forgery(org.api_key)
    garbled = (
        forged,
        org.api_key + "x",
        org.api_key[:-1],
        org.api_key.upper(),
        org.api_key + "%00",
        "fl_live_" + "A" * 10_000,
        org.api_key[:-1] + "\u00e9",
    )
    for token in garbled:
        header = {b"Authorization": f"Bearer {token}".encode("latin-1")}
        answer = await api_client.get("/v1/projects", headers=header)
        assert answer.status_code == 401, token[:40]
    assert len(leases) == tracked
    assert await counted(session_maker, org.api_key_id) == before
    assert (await api_client.get("/v1/projects", headers=org.headers)).status_code == 200


async def test_another_tenants_project_stays_404_on_a_leased_key(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    created = await api_client.post(
        "/v1/projects", headers=other.headers, json={"name": "Theirs", "project_type": "api"}
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    await warm(api_client, org, 300)
    for _ in range(5):
        answer = await api_client.get(f"/v1/projects/{project_id}", headers=org.headers)
        assert answer.status_code == 404
        envs = await api_client.get(f"/v1/projects/{project_id}/environments", headers=org.headers)
        assert envs.status_code == 404
