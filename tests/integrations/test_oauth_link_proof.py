"""Linking a GitHub/GitLab account to a signed-in user needs the account's password (and TOTP
code when enabled) with the link request, against the fake forge and real Postgres: a session
alone, a passwordless account, a wrong password or code are refused with nothing written and
are counted by the login throttles; the right proof links; two users linking one forge account
at once: one wins, the other gets a 409."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
from sqlalchemy import func, select

from core.accounts import throttle
from db.models.oauth import OAuthState
from db.models.projects import GitProviderConnection
from tests.api.support import PASSWORD, bearer, client_at, login, signup
from tests.integrations.test_oauth_sign_in import callback, forge_user, links_of, start

PROBLEM = "application/problem+json"


async def link(
    api: httpx.AsyncClient, token: str, body: dict[str, Any] | None, provider: str = "github"
) -> httpx.Response:
    return await api.post(f"/v1/auth/oauth/{provider}/link", headers=bearer(token), json=body)


async def link_requests_of(session_maker: Any, user_id: uuid.UUID | str) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).where(OAuthState.link_user_id == uuid.UUID(str(user_id)))
        )
    return int(count or 0)


async def identity_links(session_maker: Any, account_id: int) -> list[uuid.UUID | None]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(GitProviderConnection.user_id).where(
                GitProviderConnection.provider == "github",
                GitProviderConnection.external_account_id == str(account_id),
            )
        )
        return list(rows)


async def test_a_session_alone_cannot_link(api_client, oauth_api, oauth, session_maker) -> None:
    owner = await signup(api_client)
    token, user_id = owner["session"]["token"], owner["user"]["id"]
    for body in (None, {}, {"password": ""}, {"totp_code": "123456"}, {"password": "x" * 257}):
        r = await link(api_client, token, body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    assert await link_requests_of(session_maker, user_id) == 0
    # An account created by a forge sign-in has no password to confirm: it cannot link
    # another forge with that session, whatever it sends.
    forged = await callback(
        api_client,
        "github",
        *oauth.authorize(await start(api_client), forge_user(f"f-{uuid.uuid4().hex[:8]}@x.io")),
    )
    assert forged.status_code == 200 and forged.json()["created"] is True
    r = await link(api_client, forged.json()["token"], {"password": PASSWORD}, "gitlab")
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith("/reauthentication-required")
    assert "password" in r.json()["detail"]
    assert await link_requests_of(session_maker, forged.json()["user_id"]) == 0
    # An unauthenticated request never reaches the proof.
    r = await api_client.post("/v1/auth/oauth/github/link", json={"password": PASSWORD})
    assert r.status_code == 401


async def test_the_password_and_totp_code_are_checked(
    api_client, oauth_api, oauth, session_maker
) -> None:
    owner = await signup(api_client)
    token, user_id = owner["session"]["token"], owner["user"]["id"]
    headers = bearer(token)
    secret = (await api_client.post("/v1/auth/totp/enroll", headers=headers)).json()["secret"]
    totp = pyotp.TOTP(secret)
    confirmed = await api_client.post(
        "/v1/auth/totp/confirm", headers=headers, json={"code": totp.now()}
    )
    assert confirmed.status_code == 200, confirmed.text

    wrong_code = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
    missing = await link(api_client, token, {"password": PASSWORD})
    assert missing.status_code == 403 and missing.json()["type"].endswith(
        "/reauthentication-required"
    )
    assert "TOTP" in missing.json()["detail"]
    for body in (
        {"password": "not the password", "totp_code": wrong_code},
        {"password": PASSWORD, "totp_code": wrong_code},
    ):
        r = await link(api_client, token, body)
        assert r.status_code == 403, r.text
        assert r.json()["type"].endswith("/reauthentication-failed")
    assert await link_requests_of(session_maker, user_id) == 0

    # The confirm call burned the current step; the next step's code is fresh.
    fresh = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    proven = await link(api_client, token, {"password": PASSWORD, "totp_code": fresh})
    assert proven.status_code == 200, proven.text
    # The code is spent: a second link request with it is refused.
    again = await link(api_client, token, {"password": PASSWORD, "totp_code": fresh})
    assert again.status_code == 403
    identity = forge_user()
    linked = await callback(
        api_client, "github", *oauth.authorize(proven.json()["authorization_url"], identity)
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["linked"] is True and linked.json()["user_id"] == user_id
    assert await identity_links(session_maker, identity["id"]) == [uuid.UUID(user_id)]


async def test_wrong_passwords_spend_the_login_allowance(
    app, api_client, oauth_api, oauth, session_maker
) -> None:
    owner = await signup(api_client)
    token, user_id, email = owner["session"]["token"], owner["user"]["id"], owner["user"]["email"]
    allowance = throttle.LOGIN_PER_ACCOUNT_ADDRESS.max_hits
    # A stolen session guessing the password from its own address, concurrently.
    async with client_at(app) as thief:
        tries = await asyncio.gather(
            *(link(thief, token, {"password": f"guess {n}"}) for n in range(allowance + 3))
        )
        counts = Counter(r.status_code for r in tries)
        assert counts == {403: allowance, 429: 3}, counts
        assert all(int(r.headers["Retry-After"]) > 0 for r in tries if r.status_code == 429)
        # One allowance with the login: the right password is refused there too now.
        assert (await login(thief, email)).status_code == 429
        assert (await link(thief, token, {"password": PASSWORD})).status_code == 429
    assert await link_requests_of(session_maker, user_id) == 0
    # The owner, from their own address, is not locked out.
    mine = await link(api_client, token, {"password": PASSWORD})
    assert mine.status_code == 200, mine.text
    assert await link_requests_of(session_maker, user_id) == 1


async def test_one_forge_account_linked_to_two_users_at_once_links_one(
    app, api_client, oauth_api, oauth, session_maker
) -> None:
    for _ in range(3):
        first, second = await signup(api_client), await signup(api_client)
        identity = forge_user()
        # Each user in a browser of their own: the callback needs its start's binding cookie.
        async with client_at(app) as one, client_at(app) as two:
            urls = []
            for owner, browser in ((first, one), (second, two)):
                r = await link(browser, owner["session"]["token"], {"password": PASSWORD})
                assert r.status_code == 200, r.text
                urls.append(r.json()["authorization_url"])
            grants = [oauth.authorize(url, identity) for url in urls]
            answers = await asyncio.gather(
                *(
                    callback(browser, "github", code, state)
                    for browser, (code, state) in zip((one, two), grants, strict=True)
                )
            )
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        loser = next(r for r in answers if r.status_code == 409)
        assert loser.headers["content-type"].startswith(PROBLEM)
        assert "linked to another account" in loser.json()["detail"]
        assert "token" not in loser.json()
        winner = next(r for r in answers if r.status_code == 200).json()["user_id"]
        assert await identity_links(session_maker, identity["id"]) == [uuid.UUID(winner)]
        other = second if winner == first["user"]["id"] else first
        assert await links_of(session_maker, uuid.UUID(other["user"]["id"])) == 0
