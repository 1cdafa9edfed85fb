"""Console sign-in with TOTP, and the organization switch."""

from __future__ import annotations

import asyncio

import httpx
import pyotp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.console.auth import SESSION_COOKIE
from db.models.accounts import OrganizationMember, User
from db.session import session_scope
from forgeline.crypto import encrypt_str
from forgeline.settings import Settings
from tests.console.helpers import csrf_of, make_run, sign_in
from tests.factories import make_org


async def test_totp_is_asked_for_and_a_code_works_once(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org = await make_org(session_maker)
    secret = pyotp.random_base32()
    async with session_scope(session_maker) as session:
        await session.execute(
            update(User)
            .where(User.id == org.user_id)
            .values(totp_enabled=True, totp_secret_encrypted=encrypt_str(secret, settings))
        )
    asked = await sign_in(api_client, org)
    assert asked.status_code == 401 and 'name="totp_code"' in asked.text
    assert SESSION_COOKIE not in asked.headers.get("set-cookie", "")
    wrong = await sign_in(api_client, org, totp_code="000000x")
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    code = pyotp.TOTP(secret).now()
    # The same code sent twice at once: one sign-in, the replay refused.
    first, second = await asyncio.gather(
        sign_in(api_client, org, totp_code=code), sign_in(api_client, org, totp_code=code)
    )
    assert sorted([first.status_code, second.status_code]) == [303, 401]


async def test_switching_organization_needs_membership_and_scopes_the_pages(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    home, elsewhere, stranger = [await make_org(session_maker) for _ in range(3)]
    home_run = await make_run(session_maker, home, project_name="Home project")
    away_run = await make_run(session_maker, elsewhere, project_name="Away project")
    async with session_scope(session_maker) as session:
        session.add(
            OrganizationMember(organization_id=elsewhere.org_id, user_id=home.user_id, role="admin")
        )
    await sign_in(api_client, home, organization=home.slug)
    page = await api_client.get("/projects")
    assert "Home project" in page.text and "Away project" not in page.text
    token = csrf_of(page.text)
    refused = await api_client.post(
        "/organization", data={"csrf": token, "organization": stranger.slug}
    )
    assert refused.status_code == 404
    no_csrf = await api_client.post("/organization", data={"organization": elsewhere.slug})
    assert no_csrf.status_code == 403
    old_cookie = api_client.cookies.get(SESSION_COOKIE)
    switched = await api_client.post(
        "/organization", data={"csrf": token, "organization": elsewhere.slug}
    )
    assert switched.status_code == 303
    page = await api_client.get("/projects")
    assert "Away project" in page.text and "Home project" not in page.text
    assert (await api_client.get(f"/runs/{away_run.run_id}")).status_code == 200
    assert (await api_client.get(f"/runs/{home_run.run_id}")).status_code == 404
    # The session of the first organization is revoked by the switch.
    assert old_cookie is not None
    api_client.cookies.set(SESSION_COOKIE, old_cookie)
    assert (await api_client.get("/projects")).status_code == 303
