"""Accounts under attack, against real Postgres: set-password links at rest, sign-in throttles
shared by API processes (and their bound), and memberships that need the invitee's consent."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.accounts import throttle
from db.models.accounts import (
    AuthThrottle,
    Notification,
    OrganizationInvitation,
    OrganizationMember,
    PasswordResetToken,
    User,
)
from db.models.operations import AuditLog
from tests.api.mailbox import latest_token, messages_to, tokens_sent_to
from tests.conftest import _with_lifespan_state, loopback_client_address

Maker = async_sessionmaker[AsyncSession]
PASSWORD = "a long enough password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_at(app: Any, address: str | None = None) -> httpx.AsyncClient:
    """A client of `app` whose requests come from `address` (a loopback address; the ASGI
    transport sends nothing over the network)."""
    state = getattr(app.state, "forgeline_lifespan_state", {})
    transport = httpx.ASGITransport(
        app=_with_lifespan_state(app, state),
        client=(address or loopback_client_address(), 50000),
    )
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_at(app) as api:
        yield api


async def signup(api: httpx.AsyncClient) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    response = await api.post(
        "/v1/auth/signup",
        json={
            "email": f"hard-{suffix}@example.com",
            "password": PASSWORD,
            "name": "Hard",
            "organization_name": f"Hard {suffix}",
        },
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.post("/v1/auth/login", json={"email": email, "password": password})


# ---------------------------------------------------------------- 7: tokens at rest


async def _stored_text(session_maker: Maker, user_id: uuid.UUID) -> str:
    """Everything the database holds for the user's notifications and links, as text."""
    async with session_maker() as session:
        notes = (
            await session.execute(
                select(Notification.title, Notification.body, Notification.data).where(
                    Notification.user_id == user_id
                )
            )
        ).all()
        links = (
            await session.execute(
                select(PasswordResetToken.token_hash).where(PasswordResetToken.user_id == user_id)
            )
        ).all()
    return repr(notes) + repr(links)


async def test_reset_links_are_mailed_never_stored_and_a_reset_kills_the_others(
    app, client, session_maker
):
    owner = await signup(client)
    email, user_id = owner["user"]["email"], uuid.UUID(owner["user"]["id"])
    for _ in range(2):
        assert (
            await client.post("/v1/auth/password-reset/request", json={"email": email})
        ).status_code == 202
    first, second = tokens_sent_to(app, email)[-2:]
    assert first != second and first.startswith("flr_")
    stored = await _stored_text(session_maker, user_id)
    assert first not in stored and second not in stored and "token=" not in stored
    mail_file = sorted(app.state.mailer.directory.glob("*.eml"))[-1]
    assert mail_file.stat().st_mode & 0o077 == 0  # the outbox is private to its owner

    done = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": second, "new_password": "new pass 123"}
    )
    assert done.status_code == 204
    # The earlier link died with the reset, although it was never used and has not expired.
    stale = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": first, "new_password": "hijacked 1234"}
    )
    assert stale.status_code == 400 and stale.json()["type"].endswith("/invalid-token")
    assert (await login(client, email, "new pass 123")).status_code == 200
    assert (await login(client, email, "hijacked 1234")).status_code == 401

    # Hostile tokens: unknown, another prefix, a hash of a real token sent as the token.
    async with session_maker() as session:
        a_hash = (
            (
                await session.execute(
                    select(PasswordResetToken.token_hash).where(
                        PasswordResetToken.user_id == user_id
                    )
                )
            )
            .scalars()
            .first()
        )
    for bogus in ("flr_" + "A" * 43, "fls_" + second[4:], str(a_hash), "' OR 1=1 --xxxxx"):
        response = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": bogus, "new_password": "x" * 12}
        )
        assert response.status_code == 400, (bogus, response.text)


async def test_two_links_confirmed_concurrently_set_one_password(app, client, session_maker):
    owner = await signup(client)
    email = owner["user"]["email"]
    for _ in range(2):
        await client.post("/v1/auth/password-reset/request", json={"email": email})
    first, second = tokens_sent_to(app, email)[-2:]
    results = await asyncio.gather(
        *(
            client.post(
                "/v1/auth/password-reset/confirm",
                json={"token": token, "new_password": f"password of {token[:8]}"},
            )
            for token in (first, second)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [204, 400], [r.text for r in results]
    winner = (first, second)[[r.status_code for r in results].index(204)]
    assert (await login(client, email, f"password of {winner[:8]}")).status_code == 200
    async with session_maker() as session:
        live = await session.scalar(
            select(func.count()).where(
                PasswordResetToken.user_id == uuid.UUID(owner["user"]["id"]),
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.revoked_at.is_(None),
            )
        )
    assert live == 0


async def test_a_failed_confirmation_leaves_the_link_usable(app, client, session_maker):
    """A crash between using the link and committing the new password (here: the new password
    is refused after the link was looked up) rolls the use back; the link still works."""
    owner = await signup(client)
    email = owner["user"]["email"]
    await client.post("/v1/auth/password-reset/request", json={"email": email})
    token = latest_token(app, email)
    too_short = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"}
    )
    assert too_short.status_code == 422
    async with session_maker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(owner["user"]["id"])).values(is_active=False)
        )
        await session.commit()
    inactive = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "long enough 1"}
    )
    assert inactive.status_code == 400  # refused after the link was consumed: rolled back
    async with session_maker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(owner["user"]["id"])).values(is_active=True)
        )
        await session.commit()
    ok = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "long enough 1"}
    )
    assert ok.status_code == 204


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


# ---------------------------------------------------------------- 9: consent


async def _invite(
    api: httpx.AsyncClient, headers: dict[str, str], email: str, role: str = "member"
):
    return await api.post("/v1/members", headers=headers, json={"email": email, "role": role})


async def _members(session_maker: Maker, org_id: str) -> list[uuid.UUID]:
    async with session_maker() as session:
        rows = await session.execute(
            select(OrganizationMember.user_id).where(
                OrganizationMember.organization_id == uuid.UUID(org_id)
            )
        )
    return list(rows.scalars())


async def test_an_existing_user_joins_only_by_accepting(app, client, session_maker):
    admin = await signup(client)
    admin_headers = bearer(admin["session"]["token"])
    invitee = await signup(client)
    invitee_headers = bearer(invitee["session"]["token"])
    org_id, slug = admin["organization"]["id"], admin["organization"]["slug"]

    offered = await _invite(client, admin_headers, invitee["user"]["email"], "admin")
    assert offered.status_code == 202, offered.text
    invitation_id = offered.json()["id"]
    # Not a member yet: cannot sign in to it, and the membership list does not show them.
    assert uuid.UUID(invitee["user"]["id"]) not in await _members(session_maker, org_id)
    refused = await client.post(
        "/v1/auth/login",
        json={"email": invitee["user"]["email"], "password": PASSWORD, "organization_slug": slug},
    )
    assert refused.status_code == 403
    # The mail tells them; it holds no token (accepting needs their own session).
    assert "accept" in str(messages_to(app, invitee["user"]["email"])[-1].get_body())

    listed = await client.get("/v1/members/invitations", headers=admin_headers)
    assert [i["id"] for i in listed.json()] == [invitation_id]
    mine = await client.get("/v1/me/invitations", headers=invitee_headers)
    assert mine.status_code == 200
    assert [(i["id"], i["organization_slug"], i["role"]) for i in mine.json()] == [
        (invitation_id, slug, "admin")
    ]

    # Hostile: someone else cannot answer it; the admin's key cannot; junk IDs are 404/422.
    stranger = await signup(client)
    for headers in (bearer(stranger["session"]["token"]), admin_headers):
        other = await client.post(f"/v1/me/invitations/{invitation_id}/accept", headers=headers)
        assert other.status_code == 404, other.text
    assert (
        await client.post(f"/v1/me/invitations/{uuid.uuid4()}/accept", headers=invitee_headers)
    ).status_code == 404
    assert (
        await client.post("/v1/me/invitations/not-a-uuid/accept", headers=invitee_headers)
    ).status_code == 422

    accepted = await client.post(
        f"/v1/me/invitations/{invitation_id}/accept", headers=invitee_headers
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["organization"]["slug"] == slug
    assert accepted.json()["member"]["role"] == "admin"
    signed_in = await client.post(
        "/v1/auth/login",
        json={"email": invitee["user"]["email"], "password": PASSWORD, "organization_slug": slug},
    )
    assert signed_in.status_code == 200
    assert (await client.get("/v1/me/invitations", headers=invitee_headers)).json() == []


async def test_declined_revoked_and_expired_invitations_cannot_be_accepted(client, session_maker):
    admin = await signup(client)
    admin_headers = bearer(admin["session"]["token"])
    invitee = await signup(client)
    invitee_headers = bearer(invitee["session"]["token"])
    email = invitee["user"]["email"]

    declined = (await _invite(client, admin_headers, email)).json()["id"]
    assert (
        await client.post(f"/v1/me/invitations/{declined}/decline", headers=invitee_headers)
    ).status_code == 204
    late = await client.post(f"/v1/me/invitations/{declined}/accept", headers=invitee_headers)
    assert late.status_code == 409 and late.json()["invitation_status"] == "declined"

    revoked = (await _invite(client, admin_headers, email)).json()["id"]
    assert (
        await client.delete(f"/v1/members/invitations/{revoked}", headers=admin_headers)
    ).status_code == 204
    late = await client.post(f"/v1/me/invitations/{revoked}/accept", headers=invitee_headers)
    assert late.status_code == 409 and late.json()["invitation_status"] == "revoked"

    expiring = (await _invite(client, admin_headers, email)).json()["id"]
    async with session_maker() as session:
        await session.execute(
            update(OrganizationInvitation)
            .where(OrganizationInvitation.id == uuid.UUID(expiring))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    assert (await client.get("/v1/me/invitations", headers=invitee_headers)).json() == []
    late = await client.post(f"/v1/me/invitations/{expiring}/accept", headers=invitee_headers)
    assert late.status_code == 409 and late.json()["invitation_status"] == "expired"
    # An expired invitation does not block a new one.
    assert (await _invite(client, admin_headers, email)).status_code == 202
    assert uuid.UUID(invitee["user"]["id"]) not in await _members(
        session_maker, admin["organization"]["id"]
    )


async def test_concurrent_accepts_make_one_membership(client, session_maker):
    admin = await signup(client)
    admin_headers = bearer(admin["session"]["token"])
    invitee = await signup(client)
    email = invitee["user"]["email"]

    # Two admins' clicks at once: one invitation.
    offers = await asyncio.gather(*(_invite(client, admin_headers, email) for _ in range(2)))
    assert sorted(r.status_code for r in offers) == [202, 409], [r.text for r in offers]
    invitation_id = next(r.json()["id"] for r in offers if r.status_code == 202)

    # Two devices of the invitee accept at once: one membership, one 409.
    second = await login(client, email)
    tokens = [invitee["session"]["token"], second.json()["token"]]
    answers = await asyncio.gather(
        *(
            client.post(f"/v1/me/invitations/{invitation_id}/accept", headers=bearer(token))
            for token in tokens
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    members = await _members(session_maker, admin["organization"]["id"])
    assert members.count(uuid.UUID(invitee["user"]["id"])) == 1
    async with session_maker() as session:
        joined = await session.scalar(
            select(func.count()).where(
                AuditLog.organization_id == uuid.UUID(admin["organization"]["id"]),
                AuditLog.action == "member.joined",
            )
        )
    assert joined == 1


async def test_set_password_link_of_an_invitation_accepts_it(app, client, session_maker):
    admin = await signup(client)
    admin_headers = bearer(admin["session"]["token"])
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    invited = await client.post(
        "/v1/members/invitations", headers=admin_headers, json={"email": email}
    )
    assert invited.status_code == 201, invited.text
    assert uuid.UUID(invited.json()["user_id"]) not in await _members(
        session_maker, admin["organization"]["id"]
    )
    token = latest_token(app, email)
    assert token not in await _stored_text(session_maker, uuid.UUID(invited.json()["user_id"]))
    # Revoked before use: the link dies with it.
    assert (
        await client.delete(
            f"/v1/members/invitations/{invited.json()['id']}", headers=admin_headers
        )
    ).status_code == 204
    dead = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "invitee pass 1"}
    )
    assert dead.status_code == 400
    # Invited again (an account without a password gets a new link), and this one works.
    again = await client.post(
        "/v1/members/invitations", headers=admin_headers, json={"email": email}
    )
    assert again.status_code == 201, again.text
    fresh = latest_token(app, email)
    assert fresh != token
    done = await client.post(
        "/v1/auth/password-reset/confirm", json={"token": fresh, "new_password": "invitee pass 1"}
    )
    assert done.status_code == 204
    assert uuid.UUID(again.json()["user_id"]) in await _members(
        session_maker, admin["organization"]["id"]
    )
    assert (await login(client, email, "invitee pass 1")).json()["organization_id"] == admin[
        "organization"
    ]["id"]


async def test_someone_with_no_organization_is_invited_with_a_link(app, client, session_maker):
    """Removed from their only organization, a person cannot sign in to accept through the API:
    the invitation mails them a link that accepts (after choosing a password again)."""
    admin = await signup(client)
    admin_headers = bearer(admin["session"]["token"])
    loner = await signup(client)
    email = loner["user"]["email"]
    async with session_maker() as session:
        await session.execute(
            delete(OrganizationMember).where(
                OrganizationMember.user_id == uuid.UUID(loner["user"]["id"])
            )
        )
        await session.commit()
    before = len(tokens_sent_to(app, email))
    offered = await _invite(client, admin_headers, email)
    assert offered.status_code == 202, offered.text
    assert len(tokens_sent_to(app, email)) == before + 1
    done = await client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": latest_token(app, email), "new_password": "back again 123"},
    )
    assert done.status_code == 204
    signed_in = await login(client, email, "back again 123")
    assert signed_in.json()["organization_id"] == admin["organization"]["id"]
