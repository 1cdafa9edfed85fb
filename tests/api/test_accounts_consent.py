"""Memberships need the invitee's consent: an existing user joins only by accepting; declined,
revoked and expired invitations cannot be accepted; concurrent accepts make one membership."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, func, select, update

from db.models.accounts import (
    OrganizationInvitation,
    OrganizationMember,
)
from db.models.operations import AuditLog
from tests.api.mailbox import latest_token, messages_to, tokens_sent_to
from tests.api.support import (
    PASSWORD,
    Maker,
    bearer,
    login,
    signup,
    stored_text,
)

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
    assert token not in await stored_text(session_maker, uuid.UUID(invited.json()["user_id"]))
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
