"""Response models of the accounts API built from stored rows."""

from __future__ import annotations

from api.accounts.schemas import InvitationOut, MemberOut, MyInvitationOut, SessionOut
from db.models.accounts import (
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    User,
    UserSession,
)


def session_out(row: UserSession, raw: str) -> SessionOut:
    assert row.organization_id is not None
    return SessionOut(
        token=raw,
        expires_at=row.expires_at,
        user_id=row.user_id,
        organization_id=row.organization_id,
    )


def member_out(member: OrganizationMember, user: User) -> MemberOut:
    return MemberOut(
        id=member.id,
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=member.role,  # CHECK constraint keeps it in OrgRole
        created_at=member.created_at,
    )


def invitation_out(invitation: OrganizationInvitation, user: User) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        user_id=user.id,
        email=user.email,
        role=invitation.role,
        status=invitation.status,
        expires_at=invitation.expires_at,
        created_at=invitation.created_at,
    )


def my_invitation_out(invitation: OrganizationInvitation, org: Organization) -> MyInvitationOut:
    return MyInvitationOut(
        id=invitation.id,
        organization_id=org.id,
        organization_name=org.name,
        organization_slug=org.slug,
        role=invitation.role,
        expires_at=invitation.expires_at,
        created_at=invitation.created_at,
    )
