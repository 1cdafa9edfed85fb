"""Members and their roles against real Postgres: add, invite, change and remove, the last owner
kept, roles that cannot grant more than they hold, audited organization changes."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from db.models.accounts import Notification
from db.models.operations import AuditLog
from tests.api.mailbox import latest_token
from tests.api.support import (
    audit_actions,
    bearer,
    signup,
)
from tests.factories import DEFAULT_PASSWORD, make_org


async def test_members_add_invite_role_change_remove(app, api_client, session_maker):
    owner = await signup(api_client)
    headers = bearer(owner["session"]["token"])
    org_id = owner["organization"]["id"]
    other = await signup(api_client)

    added = await api_client.post(
        "/v1/members", headers=headers, json={"email": other["user"]["email"], "role": "admin"}
    )
    assert added.status_code == 202, added.text
    assert added.json()["role"] == "admin" and added.json()["status"] == "pending"
    duplicate = await api_client.post(
        "/v1/members", headers=headers, json={"email": other["user"]["email"]}
    )
    assert duplicate.status_code == 409
    accepted = await api_client.post(
        f"/v1/me/invitations/{added.json()['id']}/accept",
        headers=bearer(other["session"]["token"]),
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["member"]["role"] == "admin"
    again = await api_client.post(
        "/v1/members", headers=headers, json={"email": other["user"]["email"]}
    )
    assert again.status_code == 409 and "already a member" in again.json()["detail"]

    missing = await api_client.post(
        "/v1/members", headers=headers, json={"email": "ghost-x@example.com"}
    )
    assert missing.status_code == 404
    invite_email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    invited = await api_client.post(
        "/v1/members/invitations", headers=headers, json={"email": invite_email, "role": "viewer"}
    )
    assert invited.status_code == 201, invited.text
    async with session_maker() as session:
        note = (
            await session.execute(
                select(Notification).where(
                    Notification.user_id == uuid.UUID(invited.json()["user_id"])
                )
            )
        ).scalar_one()
        assert note.type == "organization_invitation"
        assert note.data["invitation_id"] == invited.json()["id"]
    # The invitee sets a password through the mailed link, which also accepts the invitation.
    confirm = await api_client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": latest_token(app, invite_email), "new_password": "invitee password"},
    )
    assert confirm.status_code == 204, confirm.text

    listed = await api_client.get("/v1/members", headers=headers, params={"limit": 2})
    assert listed.status_code == 200
    page = listed.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await api_client.get(
        "/v1/members", headers=headers, params={"limit": 2, "cursor": page["next_cursor"]}
    )
    assert len(rest.json()["items"]) == 1

    member_id = next(
        item["id"]
        for item in (await api_client.get("/v1/members", headers=headers)).json()["items"]
        if item["email"] == invite_email
    )
    changed = await api_client.patch(
        f"/v1/members/{member_id}", headers=headers, json={"role": "member"}
    )
    assert changed.status_code == 200 and changed.json()["role"] == "member"
    assert (await api_client.delete(f"/v1/members/{member_id}", headers=headers)).status_code == 204
    actions = await audit_actions(session_maker, org_id)
    # One transaction's rows share a timestamp: the reset and the join are in either order.
    assert actions[1:3] == ["member.invited", "member.joined"]
    assert actions[3] == "member.invited"
    assert sorted(actions[4:6]) == ["member.joined", "user.password_reset"]
    assert actions[6:] == ["member.role_changed", "member.removed"]

    # Another tenant's member ID is a 404, never a 403.
    foreign = await make_org(session_maker)
    async with session_maker() as session:
        from db.models.accounts import OrganizationMember

        foreign_member = (
            await session.execute(
                select(OrganizationMember.id).where(
                    OrganizationMember.organization_id == foreign.org_id
                )
            )
        ).scalar_one()
    cross = await api_client.patch(
        f"/v1/members/{foreign_member}", headers=headers, json={"role": "viewer"}
    )
    assert cross.status_code == 404


async def test_last_owner_cannot_be_removed_or_demoted(api_client, session_maker):
    owner = await signup(api_client)
    headers = bearer(owner["session"]["token"])
    listed = (await api_client.get("/v1/members", headers=headers)).json()["items"]
    me = listed[0]["id"]
    before = await audit_actions(session_maker, owner["organization"]["id"])

    demote = await api_client.patch(f"/v1/members/{me}", headers=headers, json={"role": "admin"})
    assert demote.status_code == 409
    remove = await api_client.delete(f"/v1/members/{me}", headers=headers)
    assert remove.status_code == 409
    # Failed requests leave no audit rows.
    assert await audit_actions(session_maker, owner["organization"]["id"]) == before

    second = await signup(api_client)
    added = await api_client.post(
        "/v1/members", headers=headers, json={"email": second["user"]["email"], "role": "owner"}
    )
    assert added.status_code == 202
    # Not an owner until they accept: the last-owner rule still holds.
    demote = await api_client.patch(f"/v1/members/{me}", headers=headers, json={"role": "admin"})
    assert demote.status_code == 409
    accept = await api_client.post(
        f"/v1/me/invitations/{added.json()['id']}/accept",
        headers=bearer(second["session"]["token"]),
    )
    assert accept.status_code == 200, accept.text
    demote = await api_client.patch(f"/v1/members/{me}", headers=headers, json={"role": "admin"})
    assert demote.status_code == 200


async def test_admin_cannot_grant_owner_and_viewer_cannot_manage(api_client, session_maker):
    admin = await make_org(session_maker, role="admin")
    someone = await signup(api_client)
    response = await api_client.post(
        "/v1/members",
        headers=admin.headers,
        json={"email": someone["user"]["email"], "role": "owner"},
    )
    assert response.status_code == 403
    viewer = await make_org(session_maker, role="viewer")
    response = await api_client.post(
        "/v1/members", headers=viewer.headers, json={"email": someone["user"]["email"]}
    )
    assert response.status_code == 403
    assert (await api_client.get("/v1/members", headers=viewer.headers)).status_code == 200


async def test_organization_update_is_audited_with_changed_fields(api_client, session_maker):
    org = await make_org(session_maker)
    response = await api_client.patch(
        "/v1/organizations/current", headers=org.headers, json={"name": "Renamed Inc"}
    )
    assert response.status_code == 200 and response.json()["name"] == "Renamed Inc"
    async with session_maker() as session:
        row = (
            await session.execute(select(AuditLog).where(AuditLog.organization_id == org.org_id))
        ).scalar_one()
    assert row.action == "organization.updated" and row.changed_fields == ["name"]
    assert row.actor_type == "api_key" and row.actor_api_key_id == org.api_key_id
    assert row.request_id and row.old_values == {"name": row.old_values["name"]}
    refused = await api_client.patch(
        "/v1/organizations/current", headers=org.headers, json={"slug": "hijack"}
    )
    assert refused.status_code == 422


async def test_make_org_owner_can_log_in(api_client, session_maker):
    org = await make_org(session_maker)
    response = await api_client.post(
        "/v1/auth/login", json={"email": org.email, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 200
    assert response.json()["organization_id"] == str(org.org_id)


async def test_invited_user_sets_password_and_signs_in(app, api_client, session_maker):
    owner = await signup(api_client)
    email = f"invitee-{uuid.uuid4().hex[:8]}@example.com"
    invited = await api_client.post(
        "/v1/members/invitations",
        headers=bearer(owner["session"]["token"]),
        json={"email": email, "name": "Invitee", "role": "member"},
    )
    assert invited.status_code == 201
    token = latest_token(app, email)
    no_password = await api_client.post(
        "/v1/auth/login", json={"email": email, "password": "anything at all"}
    )
    assert no_password.status_code == 401
    confirm = await api_client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "invitee password"}
    )
    assert confirm.status_code == 204
    login = await api_client.post(
        "/v1/auth/login", json={"email": email, "password": "invitee password"}
    )
    assert login.status_code == 200
    assert login.json()["organization_id"] == owner["organization"]["id"]
