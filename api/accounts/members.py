"""/v1/members and /v1/me/invitations: listing members, inviting, answering an invitation,
changing roles, removing members."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api.accounts import render
from api.accounts.schemas import (
    InvitationAccepted,
    InvitationOut,
    MemberAdd,
    MemberInvite,
    MemberOut,
    MemberRoleUpdate,
    MyInvitationOut,
    OrganizationOut,
)
from api.deps import (
    AccountContextDep,
    Admin,
    OriginDep,
    ProjectsReader,
    SessionDep,
    SessionPrincipalDep,
)
from api.pagination import Page, PageDep, build_page
from core.accounts import invitations, members

router = APIRouter()


@router.get("/members", tags=["members"], response_model=Page[MemberOut])
async def list_members(
    session: SessionDep,
    principal: ProjectsReader,
    page: PageDep,
) -> Page[MemberOut]:
    rows = await members.list_members(session, principal, cursor=page.cursor, limit=page.limit)
    return build_page(
        rows,
        limit=page.limit,
        key=lambda row: (row[0].created_at, row[0].id),
        to_item=lambda row: render.member_out(row[0], row[1]),
    )


@router.post("/members", tags=["members"], status_code=202, response_model=InvitationOut)
async def add_member(
    body: MemberAdd, session: SessionDep, ctx: AccountContextDep, principal: Admin
) -> InvitationOut:
    """Invite an existing user: they become a member when they accept
    (`POST /v1/me/invitations/{id}/accept`)."""
    invitation, user = await members.invite_member(
        session, ctx, principal, email=body.email, role=body.role
    )
    return render.invitation_out(invitation, user)


@router.post(
    "/members/invitations", tags=["members"], status_code=201, response_model=InvitationOut
)
async def invite_member(
    body: MemberInvite, session: SessionDep, ctx: AccountContextDep, principal: Admin
) -> InvitationOut:
    """Invite by email. An unknown email gets an account without a password and, by e-mail, a
    set-password link that also accepts; an existing user accepts after signing in."""
    invitation, user = await members.invite_member(
        session,
        ctx,
        principal,
        email=body.email,
        role=body.role,
        invite_name=body.name,
        create_account=True,
    )
    return render.invitation_out(invitation, user)


@router.get("/members/invitations", tags=["members"], response_model=list[InvitationOut])
async def list_invitations(session: SessionDep, principal: Admin) -> list[InvitationOut]:
    """Pending, unexpired invitations of the organization."""
    rows = await members.list_invitations(session, principal)
    return [render.invitation_out(invitation, user) for invitation, user in rows]


@router.delete("/members/invitations/{invitation_id}", tags=["members"], status_code=204)
async def revoke_invitation(
    invitation_id: UUID, session: SessionDep, origin: OriginDep, principal: Admin
) -> Response:
    await members.revoke_invitation(session, origin, principal, invitation_id)
    return Response(status_code=204)


@router.get("/me/invitations", tags=["members"], response_model=list[MyInvitationOut])
async def my_invitations(
    session: SessionDep, principal: SessionPrincipalDep
) -> list[MyInvitationOut]:
    """Invitations waiting for my answer (pending and unexpired)."""
    rows = await invitations.list_mine(session, principal)
    return [render.my_invitation_out(invitation, org) for invitation, org in rows]


@router.post(
    "/me/invitations/{invitation_id}/accept",
    tags=["members"],
    response_model=InvitationAccepted,
)
async def accept_invitation(
    invitation_id: UUID, session: SessionDep, origin: OriginDep, principal: SessionPrincipalDep
) -> InvitationAccepted:
    """Join the organization; sign in to it with `organization_slug` at login."""
    joined = await invitations.accept(session, origin, principal, invitation_id)
    return InvitationAccepted(
        organization=OrganizationOut.model_validate(joined.organization),
        member=render.member_out(joined.member, joined.user),
    )


@router.post("/me/invitations/{invitation_id}/decline", tags=["members"], status_code=204)
async def decline_invitation(
    invitation_id: UUID, session: SessionDep, origin: OriginDep, principal: SessionPrincipalDep
) -> Response:
    await invitations.decline(session, origin, principal, invitation_id)
    return Response(status_code=204)


@router.patch("/members/{member_id}", tags=["members"], response_model=MemberOut)
async def change_member_role(
    member_id: UUID,
    body: MemberRoleUpdate,
    session: SessionDep,
    origin: OriginDep,
    principal: Admin,
) -> MemberOut:
    member, user = await members.change_member_role(
        session, origin, principal, member_id, body.role
    )
    return render.member_out(member, user)


@router.delete("/members/{member_id}", tags=["members"], status_code=204)
async def remove_member(
    member_id: UUID, session: SessionDep, origin: OriginDep, principal: Admin
) -> Response:
    await members.remove_member(session, origin, principal, member_id)
    return Response(status_code=204)
