"""Members of an organization: inviting (an offer the person accepts, see invitations.py),
changing roles and removing members, with the owner and role-rank rules."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts.context import AccountContext, utcnow
from core.accounts.organizations import current_organization
from core.accounts.passwords import issue_reset_token
from core.accounts.repository import (
    InvitationRepository,
    MemberRepository,
    PasswordResetRepository,
    SessionRepository,
    UserRepository,
)
from core.accounts.scopes import ROLE_RANK
from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing.limits import enforce_limit
from core.principal import Principal
from db.models.accounts import (
    Notification,
    OrganizationInvitation,
    OrganizationMember,
    User,
)
from forgeline.errors import Conflict, Forbidden, NotFound
from forgeline.statuses.accounts import InvitationStatus, OrgRole
from infra.mail import AccountMail

INVITATION_TTL = timedelta(days=7)


async def list_members(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> list[tuple[OrganizationMember, User]]:
    """A page (limit + 1 rows, newest first) of the organization's members and their users."""
    return await MemberRepository(session).page(
        principal.organization_id, cursor=cursor, limit=limit
    )


def _check_role_change_allowed(principal: Principal, *roles: str) -> None:
    """Only owners grant or take away ownership; nobody grants more than they hold."""
    for role in roles:
        if role == OrgRole.OWNER and principal.role != OrgRole.OWNER:
            raise Forbidden("Only an owner can grant or change the owner role")
        if ROLE_RANK[role] > ROLE_RANK.get(principal.role, -1):
            raise Forbidden("Cannot grant a role above your own")


async def _ensure_not_last_owner(session: AsyncSession, member: OrganizationMember) -> None:
    owners = await MemberRepository(session).lock_owners(member.organization_id)
    if member.role == OrgRole.OWNER and owners == [member.id]:
        raise Conflict("An organization must keep at least one owner")


async def invite_member(
    session: AsyncSession,
    ctx: AccountContext,
    principal: Principal,
    *,
    email: str,
    role: str,
    invite_name: str | None = None,
    create_account: bool = False,
) -> tuple[OrganizationInvitation, User]:
    """Offer membership; it exists only once the invited user accepts (see invitations.py).

    An unknown e-mail (with `create_account`) gets an account without a password; it and any
    existing account that never set one receive a set-password link that also accepts.
    """
    _check_role_change_allowed(principal, role)
    # Before any write: an invitation over the plan's member limit creates no user either.
    await enforce_limit(session, principal.organization_id, "team_members")
    users = UserRepository(session)
    user = await users.get_by_email(email)
    if user is None:
        if not create_account:
            raise NotFound("No user with that email; send an invitation instead")
        user = User(
            id=uuid.uuid4(),
            email=email,
            name=invite_name or email.split("@", 1)[0],
            password_hash=None,
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError as exc:  # the same e-mail signed up or was invited concurrently
            raise Conflict("That e-mail was registered concurrently; retry") from exc
    if await MemberRepository(session).get_by_user(principal.organization_id, user.id):
        raise Conflict("That user is already a member of this organization")
    now = utcnow()
    invitations_repo = InvitationRepository(session)
    await invitations_repo.expire_stale(principal.organization_id, user.id, now)
    if await invitations_repo.pending_for(principal.organization_id, user.id, now):
        raise Conflict("That user already has a pending invitation to this organization")
    invitation = OrganizationInvitation(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        user_id=user.id,
        role=role,
        invited_by_user_id=principal.user_id,
        expires_at=now + INVITATION_TTL,
        created_at=now,
    )
    session.add(invitation)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent invitation of the same person
        raise Conflict("That user already has a pending invitation to this organization") from exc
    org = await current_organization(session, principal)
    # Without a password, or without any organization to sign in to, the person could not
    # accept through the API: their mail carries a set-password link that also accepts.
    needs_link = user.password_hash is None or (
        await MemberRepository(session).first_organization_of(user.id) is None
    )
    if needs_link:
        raw, _ = await issue_reset_token(session, ctx, user, INVITATION_TTL, invitation=invitation)
        action = f"Set your password at {ctx.reset_url(raw)} to join"
    else:
        action = "Sign in and accept it (POST /v1/me/invitations/{id}/accept) to join".replace(
            "{id}", str(invitation.id)
        )
    await ctx.send(
        AccountMail(
            to=user.email,
            subject=f"You are invited to {org.name} on Forgeline",
            body=f"You were invited to {org.name} as {role}. {action}; the invitation expires "
            f"on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
        ),
    )
    session.add(
        Notification(
            user_id=user.id,
            organization_id=org.id,
            type="organization_invitation",
            title=f"You are invited to {org.name}",
            body=f"Invited as {role}; accept or decline the invitation.",
            data={
                "organization_id": str(org.id),
                "invitation_id": str(invitation.id),
                "role": role,
                "expires_at": invitation.expires_at.isoformat(),
            },
        )
    )
    await write_audit(
        session, principal, ctx.origin, "member.invited", "organization_invitation", invitation.id,
        new={"user_id": user.id, "email": user.email, "role": role},
    )  # fmt: skip
    return invitation, user


async def list_invitations(
    session: AsyncSession, principal: Principal
) -> list[tuple[OrganizationInvitation, User]]:
    return await InvitationRepository(session).live_for_organization(
        principal.organization_id, utcnow()
    )


async def revoke_invitation(
    session: AsyncSession, origin: Origin, principal: Principal, invitation_id: uuid.UUID
) -> None:
    now = utcnow()
    invitation = await InvitationRepository(session).respond(
        invitation_id, now, InvitationStatus.REVOKED, organization_id=principal.organization_id
    )
    if invitation is None:
        raise NotFound("No pending invitation with that ID")
    await PasswordResetRepository(session).revoke_outstanding(now, invitation_id=invitation.id)
    await write_audit(
        session, principal, origin, "member.invitation_revoked", "organization_invitation",
        invitation.id, old={"user_id": invitation.user_id, "role": invitation.role},
    )  # fmt: skip


async def change_member_role(
    session: AsyncSession, origin: Origin, principal: Principal, member_id: uuid.UUID, role: str
) -> tuple[OrganizationMember, User]:
    members = MemberRepository(session)
    member = await members.get(principal.organization_id, member_id)
    if member is None:
        raise NotFound("Member not found")
    user = await UserRepository(session).get(member.user_id)
    assert user is not None
    if member.role == role:
        return member, user
    _check_role_change_allowed(principal, member.role, role)
    if role != OrgRole.OWNER:
        await _ensure_not_last_owner(session, member)
    old_role = member.role
    member.role = role
    await write_audit(
        session, principal, origin, "member.role_changed", "organization_member", member.id,
        old={"role": old_role}, new={"role": role},
    )  # fmt: skip
    return member, user


async def remove_member(
    session: AsyncSession, origin: Origin, principal: Principal, member_id: uuid.UUID
) -> None:
    members = MemberRepository(session)
    member = await members.get(principal.organization_id, member_id)
    if member is None:
        raise NotFound("Member not found")
    _check_role_change_allowed(principal, member.role)
    await _ensure_not_last_owner(session, member)
    now = utcnow()
    # Their sessions in this organization end now; their API keys stop resolving (see
    # authentication.py), without being deleted, so the audit trail keeps its references.
    await SessionRepository(session).revoke_in_organization(
        member.user_id, member.organization_id, now
    )
    await session.delete(member)
    await write_audit(
        session, principal, origin, "member.removed", "organization_member", member.id,
        old={"user_id": member.user_id, "role": member.role},
    )  # fmt: skip
