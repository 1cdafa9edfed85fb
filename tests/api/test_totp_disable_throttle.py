"""Switching the second factor off is throttled like switching it on: a stolen session cannot
walk the million codes of `/v1/auth/totp/disable`. Concurrent guesses spend one shared allowance
(PostgreSQL, every API process), and once it is spent even the right code waits, so TOTP stays
on. Real API on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pyotp
from sqlalchemy import select

from core.accounts import throttle
from db.models.accounts import User
from tests.api.support import bearer, client_at, signup


async def totp_enabled(session_maker, user_id: str) -> bool:
    async with session_maker() as session:
        enabled = await session.scalar(
            select(User.totp_enabled).where(User.id == uuid.UUID(user_id))
        )
    return bool(enabled)


async def test_disabling_totp_is_throttled_even_for_the_right_code(
    app, client, session_maker
) -> None:
    owner = await signup(client)
    user_id = owner["user"]["id"]
    headers = bearer(owner["session"]["token"])
    secret = (await client.post("/v1/auth/totp/enroll", headers=headers)).json()["secret"]
    totp = pyotp.TOTP(secret)
    confirmed = await client.post(
        "/v1/auth/totp/confirm", headers=headers, json={"code": totp.now()}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert await totp_enabled(session_maker, user_id)

    wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
    # Malformed codes are refused by their shape and spend nothing of the allowance.
    for bad in ("", "1" * 5000, "12345\x00", "\uff11\uff12\uff13\uff14\uff15\uff16"):
        r = await client.post("/v1/auth/totp/disable", headers=headers, json={"code": bad})
        assert r.status_code == 422, (bad[:10], r.text)
    # From two client addresses at once: the allowance is the account's, not the address's.
    other = client_at(app)
    try:
        tries = await asyncio.gather(
            *(
                (client if n % 2 else other).post(
                    "/v1/auth/totp/disable", headers=headers, json={"code": wrong}
                )
                for n in range(throttle.TOTP_PER_USER.max_hits + 3)
            )
        )
        counts = Counter(r.status_code for r in tries)
        assert counts == {422: throttle.TOTP_PER_USER.max_hits, 429: 3}, counts
        assert all(int(r.headers["Retry-After"]) > 0 for r in tries if r.status_code == 429)
        # The right code, spent allowance: still refused, and the second factor stays on.
        right = await other.post(
            "/v1/auth/totp/disable", headers=headers, json={"code": totp.now()}
        )
        assert right.status_code == 429, right.text
        assert int(right.headers["Retry-After"]) > 0
    finally:
        await other.aclose()
    assert await totp_enabled(session_maker, user_id)
