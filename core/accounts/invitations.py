"""The invited person's side of an invitation: list mine, accept, decline.

A membership of an existing user is created only here, by the user it is for: an administrator
offers (see members.invite_member), the person accepts. Accepting is one conditional UPDATE of a
live pending row, so two concurrent accepts make one membership and the second answer is 409.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts.context import utcnow
from core.accounts.repository import InvitationRepository, PasswordResetRepository
from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing.limits import enforce_limit
from core.principal import Principal
from db.models.accounts import Organization, OrganizationInvitation, OrganizationMember, User
from forgeline.errors import Conflict, NotFound
from forgeline.statuses.accounts import InvitationStatus


async def list_mine(
    session: AsyncSession, principal: Principal
) -> list[tuple[OrganizationInvitation, Organization]]:
    assert principal.user_id is not None
    return await InvitationRepository(session).live_for_user(principal.user_id, utcnow())


async def _not_answerable(
    session: AsyncSession, invitation_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> Exception:
    row = await InvitationRepository(session).get(invitation_id)
    if row is None or row.user_id != user_id:
        return NotFound("Invitation not found")
    if row.status == InvitationStatus.PENDING:  # pending but past its expiry
        return Conflict(
            "This invitation has expired; ask for a new one",
            invitation_status=InvitationStatus.EXPIRED,
        )
    return Conflict(f"This invitation was already {row.status}", invitation_status=row.status)


async def join(
    session: AsyncSession,
    origin: Origin | None,
    invitation: OrganizationInvitation,
    now: datetime,
) -> OrganizationMember:
    """Make the membership an accepted invitation stands for (the caller answered it)."""
    # The plan may have filled up since the offer: refused here, the answer rolls back with it.
    await enforce_limit(session, invitation.organization_id, "team_members")
    inserted = await session.execute(
        insert(OrganizationMember)
        .values(
            id=uuid.uuid4(),
            organization_id=invitation.organization_id,
            user_id=invitation.user_id,
            role=invitation.role,
            invited_by_user_id=invitation.invited_by_user_id,
        )
        .on_conflict_do_nothing(index_elements=["organization_id", "user_id"])
        .returning(OrganizationMember.id)
    )
    if inserted.first() is None:
        raise Conflict("You are already a member of this organization")
    member = (
        await session.execute(
            select(OrganizationMember).where(
                OrganizationMember.organization_id == invitation.organization_id,
                OrganizationMember.user_id == invitation.user_id,
            )
        )
    ).scalar_one()
    await write_audit(
        session, None, origin, "member.joined", "organization_member", member.id,
        new={"user_id": invitation.user_id, "role": invitation.role,
             "invitation_id": invitation.id},
        organization_id=invitation.organization_id, actor_user_id=invitation.user_id,
    )  # fmt: skip
    return member


@dataclass(frozen=True)
class Joined:
    member: OrganizationMember
    user: User
    organization: Organization


async def _answer(
    session: AsyncSession,
    principal: Principal,
    invitation_id: uuid.UUID,
    answer: InvitationStatus,
    now: datetime,
) -> OrganizationInvitation:
    """Record the invitee's answer on a live pending invitation (one conditional UPDATE); a
    set-password link sent with it has nothing left to do."""
    assert principal.user_id is not None
    invitation = await InvitationRepository(session).respond(
        invitation_id, now, answer, user_id=principal.user_id
    )
    if invitation is None:
        raise await _not_answerable(session, invitation_id, principal.user_id, now)
    await PasswordResetRepository(session).revoke_outstanding(now, invitation_id=invitation.id)
    return invitation


async def accept(
    session: AsyncSession, origin: Origin, principal: Principal, invitation_id: uuid.UUID
) -> Joined:
    now = utcnow()
    invitation = await _answer(session, principal, invitation_id, InvitationStatus.ACCEPTED, now)
    member = await join(session, origin, invitation, now)
    organization = await session.get(Organization, invitation.organization_id)
    user = await session.get(User, member.user_id)
    assert organization is not None and user is not None
    return Joined(member, user, organization)


async def decline(
    session: AsyncSession, origin: Origin, principal: Principal, invitation_id: uuid.UUID
) -> None:
    now = utcnow()
    invitation = await _answer(session, principal, invitation_id, InvitationStatus.DECLINED, now)
    await write_audit(
        session, None, origin, "member.invitation_declined", "organization_invitation",
        invitation.id, organization_id=invitation.organization_id,
        actor_user_id=principal.user_id,
    )  # fmt: skip
