"""Sign in with GitHub and GitLab against a fake forge (real HTTP server, the real authlib client)
and real Postgres: first sign-in creates the user, later ones find it; a wrong or replayed
state, a replayed code and a wrong PKCE verifier are refused; a forge account reporting an
existing user's e-mail never takes that account over (its owner links it after signing in and
confirming the password: tests/integrations/test_oauth_link_proof.py);
concurrent callbacks with one code sign in once; an organization can require forge sign-in."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from db.models.accounts import Organization, User
from db.models.projects import GitProviderConnection
from db.session import session_scope
from tests.factories import make_org


def forge_user(email: str | None = None) -> dict[str, Any]:
    account = int(uuid.uuid4().int % 10**9)
    return {
        "id": account,
        "login": f"octo{account}",
        "username": f"octo{account}",
        "email": email,
        "name": "Octo Cat",
    }


async def start(api_client: Any, provider: str = "github", **params: str) -> str:
    r = await api_client.get(f"/v1/auth/oauth/{provider}/start", params=params)
    assert r.status_code == 200, r.text
    return str(r.json()["authorization_url"])


async def callback(api_client: Any, provider: str, code: str, state: str) -> Any:
    return await api_client.get(
        f"/v1/auth/oauth/{provider}/callback", params={"code": code, "state": state}
    )


async def links_of(session_maker: Any, user_id: uuid.UUID) -> int:
    async with session_maker() as session:
        return int(
            await session.scalar(
                select(func.count()).where(GitProviderConnection.user_id == user_id)
            )
            or 0
        )


@pytest.mark.parametrize("provider", ["github", "gitlab"])
async def test_first_sign_in_creates_the_user_then_finds_it(
    api_client, oauth_api, oauth, provider
) -> None:
    user = forge_user(f"new-{uuid.uuid4().hex[:8]}@example.com")
    first = await callback(
        api_client, provider, *oauth.authorize(await start(api_client, provider), user)
    )
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True
    again = await callback(
        api_client, provider, *oauth.authorize(await start(api_client, provider), user)
    )
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["user_id"] == first.json()["user_id"]
    # The session works: the new owner lists the members of their new organization.
    members = await api_client.get(
        "/v1/members", headers={"Authorization": f"Bearer {again.json()['token']}"}
    )
    assert members.status_code == 200, members.text


async def test_state_code_and_verifier_are_checked(api_client, oauth_api, oauth) -> None:
    user = forge_user()
    code, state = oauth.authorize(await start(api_client), user)
    # A state this server never issued.
    assert (await callback(api_client, "github", code, "x" * 43)).status_code == 400
    # The state of another provider's request.
    assert (await callback(api_client, "gitlab", code, state)).status_code == 400
    ok = await callback(api_client, "github", code, state)
    assert ok.status_code == 200, ok.text
    # Replayed callback: the state is spent.
    assert (await callback(api_client, "github", code, state)).status_code == 400
    # The spent code with a fresh state: the forge refuses it.
    url = await start(api_client)
    _, fresh_state = oauth.authorize(url, user)
    r = await callback(api_client, "github", code, fresh_state)
    assert r.status_code == 400 and "refused" in r.json()["detail"]
    # A code bound to another PKCE challenge (an attacker's injected code): the verifier fails.
    url = await start(api_client)
    tampered = url.replace("code_challenge=", "code_challenge=AAAA")
    bad_code, _ = oauth.authorize(tampered, user)
    _, state2 = oauth.authorize(url, user)
    assert (await callback(api_client, "github", bad_code, state2)).status_code == 400


async def test_email_match_never_takes_an_account_over(
    api_client, oauth_api, oauth, session_maker
) -> None:
    victim = await make_org(session_maker)
    attacker = forge_user(victim.email)  # the forge account claims the victim's address
    r = await callback(api_client, "github", *oauth.authorize(await start(api_client), attacker))
    assert r.status_code == 409, r.text
    assert "token" not in r.json()
    assert await links_of(session_maker, victim.user_id) == 0
    # The owner proves the account (signed in), then links the forge account.
    login = await api_client.post(
        "/v1/auth/login", json={"email": victim.email, "password": victim.password}
    )
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['token']}"}
    owner = forge_user(victim.email)
    link = await api_client.post(
        "/v1/auth/oauth/github/link", headers=auth, json={"password": victim.password}
    )
    assert link.status_code == 200, link.text
    linked = await callback(
        api_client, "github", *oauth.authorize(link.json()["authorization_url"], owner)
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["linked"] is True and linked.json()["user_id"] == str(victim.user_id)
    signed = await callback(api_client, "github", *oauth.authorize(await start(api_client), owner))
    assert signed.json()["user_id"] == str(victim.user_id)
    # That forge account cannot be linked to a second user.
    other = await make_org(session_maker)
    login = await api_client.post(
        "/v1/auth/login", json={"email": other.email, "password": other.password}
    )
    link = await api_client.post(
        "/v1/auth/oauth/github/link",
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        json={"password": other.password},
    )
    r = await callback(
        api_client, "github", *oauth.authorize(link.json()["authorization_url"], owner)
    )
    assert r.status_code == 409
    assert await links_of(session_maker, other.user_id) == 0


async def test_concurrent_callbacks_with_one_code_sign_in_once(
    api_client, oauth_api, oauth, session_maker
) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    code, state = oauth.authorize(await start(api_client), forge_user(email))
    answers = await asyncio.gather(
        *(callback(api_client, "github", code, state) for _ in range(10))
    )
    assert sorted(r.status_code for r in answers) == [200] + [400] * 9
    async with session_maker() as session:
        assert await session.scalar(select(func.count()).where(User.email == email)) == 1


async def test_organization_requires_forge_sign_in(
    api_client, oauth_api, oauth, session_maker
) -> None:
    org = await make_org(session_maker)
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Organization)
            .where(Organization.id == org.org_id)
            .values(settings={"sign_in_providers": ["github"]})
        )
    r = await api_client.post("/v1/auth/login", json={"email": org.email, "password": org.password})
    assert r.status_code == 403, r.text
    assert "github" in r.json()["detail"]
    # Unknown providers are a 422 (path), unconfigured ones never reach a forge.
    assert (await api_client.get("/v1/auth/oauth/bitbucket/start")).status_code == 422
