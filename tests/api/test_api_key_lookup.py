"""An API key resolved and counted in one statement (core/accounts/api_key_lookup.py): only a
request that presents the key's secret spends its rate limit; revoked, expired and orphaned keys
count nothing; concurrent requests of one key get one count each, refused ones included."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.accounts import security
from db.models.accounts import ApiKey, ApiKeyRateWindow, OrganizationMember
from tests.factories import make_org


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def same_prefix_forgery(raw: str) -> str:
    """A well-formed key (valid checksum) with `raw`'s displayed prefix and another secret."""
    start = len(security.API_KEY_PREFIX)
    body = raw[start : start + security._RANDOM_LEN]
    keep = security.DISPLAY_PREFIX_LENGTH - start
    swapped = "".join("A" if c != "A" else "B" for c in body[keep:])
    random_part = body[:keep] + swapped
    forged = security.API_KEY_PREFIX + random_part + security._checksum(random_part)
    assert security.api_key_well_formed(forged) and forged != raw
    assert forged[: security.DISPLAY_PREFIX_LENGTH] == raw[: security.DISPLAY_PREFIX_LENGTH]
    return forged


async def counted(session_maker: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> int:
    async with session_maker() as session:
        hits = await session.scalar(
            select(func.coalesce(func.sum(ApiKeyRateWindow.hits), 0)).where(
                ApiKeyRateWindow.api_key_id == key_id
            )
        )
    return int(hits or 0)


async def test_a_wrong_secret_with_the_real_prefix_spends_nothing(api_client, session_maker):
    org = await make_org(session_maker, rate_limit_per_minute=3)
    forged = same_prefix_forgery(org.api_key)
    answers = await asyncio.gather(
        *(api_client.get("/v1/me", headers=bearer(forged)) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {401}
    assert await counted(session_maker, org.api_key_id) == 0
    # The key's own limit is intact: 3 requests pass, the 4th is refused.
    for _ in range(3):
        assert (await api_client.get("/v1/me", headers=org.headers)).status_code == 200
    assert (await api_client.get("/v1/me", headers=org.headers)).status_code == 429
    assert await counted(session_maker, org.api_key_id) == 4


async def test_revoked_expired_and_orphaned_keys_count_nothing(api_client, session_maker):
    revoked = await make_org(session_maker)
    expired = await make_org(session_maker)
    orphaned = await make_org(session_maker, role="member")
    async with session_maker() as session:
        now = datetime.now(UTC)
        await session.execute(
            update(ApiKey).where(ApiKey.id == revoked.api_key_id).values(revoked_at=now)
        )
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == expired.api_key_id)
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.execute(
            delete(OrganizationMember).where(OrganizationMember.user_id == orphaned.user_id)
        )
        await session.commit()
    for org, reason in ((revoked, "revoked"), (expired, "expired"), (orphaned, "no longer")):
        answer = await api_client.get("/v1/projects", headers=org.headers)
        assert answer.status_code == 401 and reason in answer.json()["detail"], answer.text
        assert await counted(session_maker, org.api_key_id) == 0


async def test_concurrent_requests_of_one_key_are_each_counted_once(api_client, session_maker):
    org = await make_org(session_maker, rate_limit_per_minute=5)
    answers = await asyncio.gather(
        *(api_client.get("/v1/projects", headers=org.headers) for _ in range(12))
    )
    codes = sorted(a.status_code for a in answers)
    # The count may straddle a minute boundary (then the sliding estimate admits a few more),
    # but never more than the limit of the one window plus what the previous window leaves.
    assert codes.count(200) >= 5 and set(codes) <= {200, 429}
    assert await counted(session_maker, org.api_key_id) == 12
    refused = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)


async def test_an_unknown_prefix_and_a_garbled_key_are_401(api_client, session_maker):
    org = await make_org(session_maker)
    unknown = security.generate_api_key().raw
    assert (await api_client.get("/v1/me", headers=bearer(unknown))).status_code == 401
    garbled = org.api_key[:-1] + ("A" if org.api_key[-1] != "A" else "B")
    assert (await api_client.get("/v1/me", headers=bearer(garbled))).status_code == 401
    # SQL in the key is only ever a bind parameter: refused by the checksum, or not found.
    for hostile in ("fl_live_' OR 1=1 --", security.API_KEY_PREFIX + "'" * 40):
        answer = await api_client.get("/v1/me", headers=bearer(hostile))
        assert answer.status_code == 401
    assert (await api_client.get("/v1/me", headers=org.headers)).status_code == 200
