"""Forge sign-in and link requests complete only in the browser that started them, against the
fake forge (real HTTP, the real authlib client) and real Postgres: an attacker's link or
sign-in opened in a victim's browser is refused with nothing written (no link, no session, the
code never exchanged); a consumed state, a tampered or foreign cookie and an expired request
are refused; ten concurrent callbacks with the right cookie complete once."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import func, select, update

from api.console.auth import SESSION_COOKIE
from core.accounts.context import utcnow
from db.models.accounts import User, UserSession
from db.models.oauth import OAuthState
from db.session import session_scope
from tests.api.support import PASSWORD, client_at, signup
from tests.integrations.test_oauth_link_proof import PROBLEM, identity_links, link
from tests.integrations.test_oauth_sign_in import callback, forge_user, start

COOKIE = "forgeline_oauth_binding"
CALLBACK = "/v1/auth/oauth/github/callback"


async def sessions_of(session_maker: Any, user_id: uuid.UUID | str) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).where(UserSession.user_id == uuid.UUID(str(user_id)))
        )
    return int(count or 0)


async def pending(session_maker: Any, url: str) -> bool:
    state = parse_qs(urlsplit(url).query)["state"][0]
    digest = hashlib.sha256(state.encode()).hexdigest()
    async with session_maker() as session:
        return await session.get(OAuthState, digest) is not None


def refused_as_foreign(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("/oauth-browser-mismatch")
    assert "token" not in r.json()
    assert "set-cookie" not in r.headers


async def test_attackers_link_opened_in_a_victims_browser_links_nothing(
    app, api_client, oauth_api, oauth, session_maker
) -> None:
    attacker = await signup(api_client)  # api_client is the attacker's browser
    attacker_id = attacker["user"]["id"]
    started = await link(api_client, attacker["session"]["token"], {"password": PASSWORD})
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    assert api_client.cookies.get(COOKIE) and api_client.cookies[COOKIE] not in url
    sessions_before = await sessions_of(session_maker, attacker_id)
    victim = forge_user(f"victim-{uuid.uuid4().hex[:8]}@example.com")
    # The victim's forge has authorized the app already: it redirects straight back.
    code, state = oauth.authorize(url, victim)
    exchanges = oauth.exchanges
    async with client_at(app) as browser:
        refused_as_foreign(await callback(browser, "github", code, state))
        page = await browser.get(
            CALLBACK, params={"code": code, "state": state}, headers={"Accept": "text/html"}
        )
        assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
        assert "not started in this browser" in page.text
        assert not browser.cookies.get(SESSION_COOKIE)
    assert await identity_links(session_maker, victim["id"]) == []
    assert await sessions_of(session_maker, attacker_id) == sessions_before
    assert oauth.exchanges == exchanges  # the victim's code never reached the forge
    # The victim signing in with their forge account later gets an account of their own.
    async with client_at(app) as browser:
        own = await callback(
            browser, "github", *oauth.authorize(await start(browser), forge_user(victim["email"]))
        )
    assert own.status_code == 200 and own.json()["user_id"] != attacker_id


async def test_attackers_sign_in_opened_in_a_victims_browser_signs_nothing_in(
    app, api_client, oauth_api, oauth, session_maker
) -> None:
    attacker = forge_user(f"a-{uuid.uuid4().hex[:8]}@example.com")
    mine = await callback(api_client, "github", *oauth.authorize(await start(api_client), attacker))
    assert mine.status_code == 200, mine.text
    attacker_id = mine.json()["user_id"]
    # The attacker approves their own request and hands its callback URL to the victim.
    url = await start(api_client)
    code, state = oauth.authorize(url, attacker)
    before = await sessions_of(session_maker, attacker_id)
    async with client_at(app) as browser:
        refused_as_foreign(await callback(browser, "github", code, state))
    async with client_at(app) as browser:  # one that started a console sign-in of its own
        browser.cookies.set("forgeline_oauth_console", "1", path="/v1/auth/oauth")
        page = await browser.get(CALLBACK, params={"code": code, "state": state})
        assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
        assert "set-cookie" not in page.headers
    assert await sessions_of(session_maker, attacker_id) == before
    assert await pending(session_maker, url)  # untouched: it is still the starter's
    # The client that started it (a script keeping the cookie) completes it.
    done = await callback(api_client, "github", code, state)
    assert done.status_code == 200 and done.json()["user_id"] == attacker_id
    assert await sessions_of(session_maker, attacker_id) == before + 1


async def test_a_consumed_state_is_refused(api_client, oauth_api, oauth, session_maker) -> None:
    url = await start(api_client)
    cookie = api_client.cookies[COOKIE]
    code, state = oauth.authorize(url, forge_user())
    first = await callback(api_client, "github", code, state)
    assert first.status_code == 200, first.text
    assert not api_client.cookies.get(COOKIE)  # cleared by the callback
    assert "Max-Age=0" in first.headers["set-cookie"] or "expires=" in first.headers["set-cookie"]
    sessions = await sessions_of(session_maker, first.json()["user_id"])
    # Replayed, even with the cookie kept aside.
    api_client.cookies.set(COOKIE, cookie, path=CALLBACK)
    again = await callback(api_client, "github", code, state)
    assert again.status_code == 400 and again.json()["type"].endswith("/oauth-state-invalid")
    assert await sessions_of(session_maker, first.json()["user_id"]) == sessions


async def test_ten_concurrent_callbacks_with_the_cookie_complete_once(
    api_client, oauth_api, oauth, session_maker
) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    code, state = oauth.authorize(await start(api_client), forge_user(email))
    answers = await asyncio.gather(
        *(callback(api_client, "github", code, state) for _ in range(10))
    )
    assert sorted(r.status_code for r in answers) == [200] + [400] * 9
    async with session_maker() as session:
        user_id = await session.scalar(select(User.id).where(User.email == email))
    assert user_id is not None
    assert await sessions_of(session_maker, user_id) == 1
    # The same for a link request.
    owner = await signup(api_client)
    started = await link(api_client, owner["session"]["token"], {"password": PASSWORD})
    identity = forge_user()
    code, state = oauth.authorize(started.json()["authorization_url"], identity)
    before = await sessions_of(session_maker, owner["user"]["id"])
    answers = await asyncio.gather(
        *(callback(api_client, "github", code, state) for _ in range(10))
    )
    assert sorted(r.status_code for r in answers) == [200] + [400] * 9
    assert [r.json()["linked"] for r in answers if r.status_code == 200] == [True]
    assert await identity_links(session_maker, identity["id"]) == [uuid.UUID(owner["user"]["id"])]
    assert await sessions_of(session_maker, owner["user"]["id"]) == before + 1


async def test_tampered_and_foreign_cookies_are_refused(
    app, api_client, oauth_api, oauth, session_maker
) -> None:
    user = forge_user(f"t-{uuid.uuid4().hex[:8]}@example.com")
    url = await start(api_client)
    cookie = api_client.cookies[COOKIE]
    code, state = oauth.authorize(url, user)
    async with client_at(app) as other:
        await start(other)  # another browser's own pending request and cookie
        foreign = other.cookies[COOKIE]
    flipped = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")
    hostile = ["", flipped, foreign, cookie + "x", "x" * 4000, "'; DROP TABLE oauth_states; --"]
    for value in hostile:
        async with client_at(app) as browser:
            r = await browser.get(
                CALLBACK,
                params={"code": code, "state": state},
                headers={"Cookie": f"{COOKIE}={value}"},
            )
            refused_as_foreign(r)
    # A cookie of the right value under another forge's callback path does not reach GitHub's.
    async with client_at(app) as browser:
        browser.cookies.set(COOKIE, cookie, path="/v1/auth/oauth/gitlab/callback")
        refused_as_foreign(await callback(browser, "github", code, state))
    assert await pending(session_maker, url)
    assert (await callback(api_client, "github", code, state)).status_code == 200


async def test_an_expired_request_is_refused_and_dropped(
    api_client, oauth_api, oauth, session_maker
) -> None:
    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    url = await start(api_client)
    code, state = oauth.authorize(url, forge_user(email))
    async with session_scope(session_maker) as session:
        await session.execute(
            update(OAuthState)
            .where(OAuthState.state_hash == hashlib.sha256(state.encode()).hexdigest())
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = await callback(api_client, "github", code, state)
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    async with session_maker() as session:
        assert await session.scalar(select(func.count()).where(User.email == email)) == 0
    await start(api_client)  # each start drops expired requests
    assert not await pending(session_maker, url)


async def test_the_binding_cookie_attributes(app, api_client, oauth_api) -> None:
    answers = [
        await api_client.get("/v1/auth/oauth/github/start"),
        await api_client.get("/v1/auth/oauth/gitlab/start?redirect=true"),
    ]
    for r, provider in zip(answers, ("github", "gitlab"), strict=True):
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE))
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path", "samesite"} <= attributes
        assert "secure" not in attributes  # http public URL: a Secure cookie would never return
        assert f"Path=/v1/auth/oauth/{provider}/callback" in cookie
        assert "SameSite=lax" in cookie and "Max-Age=600" in cookie
    previous = app.state.settings
    app.state.settings = previous.model_copy(update={"public_base_url": "https://ci.example"})
    try:
        r = await api_client.get("/v1/auth/oauth/github/start")
    finally:
        app.state.settings = previous
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"__Secure-{COOKIE}=") and "; Secure" in cookie
