"""Sign-in, sign-up, reset and TOTP throttles under attack: per address and per account, shared
by API processes, bounded, and pruned when they expire."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from sqlalchemy import func, select, update

from core.accounts import throttle
from db.models.accounts import (
    AuthThrottle,
)
from tests.api.support import (
    PASSWORD,
    bearer,
    client_at,
    login,
    signup,
)
from tests.conftest import loopback_client_address

# ---------------------------------------------------------------- 8 and 24: throttles


def _retry_after(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    return int(response.headers["Retry-After"])


async def test_concurrent_guesses_from_two_addresses_spend_only_their_own_allowance(app, client):
    owner = await signup(client)  # signed up (and so signed in) from the client's address
    email = owner["user"]["email"]
    attackers = [client_at(app) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(login(api, email, "wrong password!") for api in attackers for _ in range(20))
        )
        for index in range(2):
            mine = Counter(r.status_code for r in results[index * 20 : (index + 1) * 20])
            # Exactly the allowance per (account, address), however the requests interleave.
            assert mine == {401: 10, 429: 10}, mine
        assert all(0 < _retry_after(r) <= 900 for r in results if r.status_code == 429)
        # The owner is not locked out: not from their address, nor from a new one.
        assert (await login(client, email)).status_code == 200
        async with client_at(app) as elsewhere:
            assert (await login(elsewhere, email)).status_code == 200
    finally:
        for api in attackers:
            await api.aclose()


async def test_a_distributed_guesser_cannot_lock_the_owner_out(app, client):
    owner = await signup(client)
    email = owner["user"]["email"]
    ceiling = throttle.LOGIN_PER_ACCOUNT.max_hits
    per_pair = throttle.LOGIN_PER_ACCOUNT_ADDRESS.max_hits
    attackers = [client_at(app) for _ in range(ceiling // per_pair + 1)]
    try:
        results = await asyncio.gather(
            *(login(api, email, "wrong password!") for api in attackers for _ in range(per_pair))
        )
        counts = Counter(r.status_code for r in results)
        assert counts[401] == ceiling and counts[429] == len(results) - ceiling, counts
        # A new address is slowed down with the rest ...
        async with client_at(app) as stranger:
            refused = await login(stranger, email)
            assert 0 < _retry_after(refused) <= 3600
            # ... but the owner's known address signs in, and that clears the account's count.
            assert (await login(client, email)).status_code == 200
            assert (await login(stranger, email)).status_code == 200
    finally:
        for api in attackers:
            await api.aclose()


async def test_spraying_many_accounts_from_one_address_is_limited(app):
    limit = throttle.LOGIN_PER_ADDRESS.max_hits
    async with client_at(app) as sprayer:
        statuses = []
        for batch in range(0, limit + 5, 15):
            results = await asyncio.gather(
                *(
                    login(sprayer, f"victim-{uuid.uuid4().hex[:8]}@example.com", "Summer2026!")
                    for _ in range(min(15, limit + 5 - batch))
                )
            )
            statuses += [r.status_code for r in results]
        assert Counter(statuses) == {401: limit, 429: 5}
        # IPv6 neighbours in one /64 share the allowance; IPv4-mapped is the IPv4 address.
        assert throttle.client_address_key("2001:db8::1") == throttle.client_address_key(
            "2001:db8::ffff:1"
        )
        assert throttle.client_address_key("::ffff:127.0.0.9") == "127.0.0.9"


async def test_failures_after_the_password_check_still_count(app, client):
    """A sign-in that fails after its attempt was counted (wrong organization here; a crash
    would do the same) keeps the count: only a completed sign-in clears it."""
    owner = await signup(client)
    email = owner["user"]["email"]
    async with client_at(app) as other:
        for _ in range(throttle.LOGIN_PER_ACCOUNT_ADDRESS.max_hits):
            forbidden = await other.post(
                "/v1/auth/login",
                json={"email": email, "password": PASSWORD, "organization_slug": "not-mine"},
            )
            assert forbidden.status_code == 403
        _retry_after(await login(other, email))


async def test_throttles_are_shared_by_api_processes(app, settings, session_maker):
    from api.app import create_app

    second_process = create_app(settings, session_maker=session_maker)
    address = loopback_client_address()
    email = f"shared-{uuid.uuid4().hex[:8]}@example.com"
    async with client_at(app, address) as one, client_at(second_process, address) as two:
        statuses = [(await login(api, email, "guess guess")).status_code for api in (one, two) * 6]
    assert statuses == [401] * 10 + [429, 429]


async def test_signup_reset_and_totp_are_throttled(app, client):
    async with client_at(app) as farm:
        statuses = []
        for _ in range(throttle.SIGNUP_PER_ADDRESS.max_hits + 1):
            response = await farm.post(
                "/v1/auth/signup",
                json={
                    "email": f"farm-{uuid.uuid4().hex[:8]}@example.com",
                    "password": PASSWORD,
                    "name": "Farm",
                    "organization_name": f"Farm {uuid.uuid4().hex[:6]}",
                },
            )
            statuses.append(response.status_code)
        assert statuses[-1] == 429 and set(statuses[:-1]) == {201}

        victim = "mailbomb-" + uuid.uuid4().hex[:8] + "@example.com"
        resets = [
            (await farm.post("/v1/auth/password-reset/request", json={"email": victim})).status_code
            for _ in range(throttle.RESET_PER_ACCOUNT_ADDRESS.max_hits + 1)
        ]
        assert resets[-1] == 429 and set(resets[:-1]) == {202}

    owner = await signup(client)
    headers = bearer(owner["session"]["token"])
    secret = (await client.post("/v1/auth/totp/enroll", headers=headers)).json()["secret"]
    current = pyotp.TOTP(secret).now()
    wrong = f"{(int(current) + 500_000) % 1_000_000:06d}"
    tries = await asyncio.gather(
        *(
            client.post("/v1/auth/totp/confirm", headers=headers, json={"code": wrong})
            for _ in range(throttle.TOTP_PER_USER.max_hits + 3)
        )
    )
    assert Counter(r.status_code for r in tries) == {422: throttle.TOTP_PER_USER.max_hits, 429: 3}
    # Even the right code waits now: the counter is what stops a walk through the codes.
    _retry_after(
        await client.post("/v1/auth/totp/confirm", headers=headers, json={"code": current})
    )


async def test_throttle_rows_expire_and_are_pruned(app, session_maker):
    """The counters' table is bounded: a row lives one window, and attempts prune expired rows
    (the in-memory map of the former limiter grew with every e-mail tried)."""
    assert not hasattr(app.state, "login_limiter")
    address = loopback_client_address()
    emails = [f"prune-{uuid.uuid4().hex[:8]}@example.com" for _ in range(40)]
    async with client_at(app, address) as api:
        await asyncio.gather(*(login(api, email, "guess guess") for email in emails))
    subjects = [throttle.subject_digest(e, throttle.client_address_key(address)) for e in emails]
    subjects += [throttle.subject_digest(e) for e in emails]
    subjects.append(throttle.subject_digest(throttle.client_address_key(address)))
    async with session_maker() as session:
        mine = AuthThrottle.subject.in_(subjects)
        assert await session.scalar(select(func.count()).where(mine)) == 81
        # Their windows end (as they would after an hour) ...
        await session.execute(
            update(AuthThrottle)
            .where(mine)
            .values(
                window_start=AuthThrottle.window_start - timedelta(hours=2),
                # Oldest first in the prune order, ahead of whatever else expired meanwhile.
                expires_at=datetime(2000, 1, 1, tzinfo=UTC),
            )
        )
        await session.commit()
    # ... and one attempt by anyone else removes them.
    async with client_at(app) as anyone:
        await login(anyone, f"other-{uuid.uuid4().hex[:8]}@example.com", "guess guess")
    async with session_maker() as session:
        assert await session.scalar(select(func.count()).where(mine)) == 0
    # Whatever else expired goes batch by batch.
    while await app.state.auth_throttles.prune():
        pass
    async with session_maker() as session:
        expired = await session.scalar(
            select(func.count()).where(AuthThrottle.expires_at <= func.now())
        )
    assert expired == 0
