"""Queries for the accounts domain; services call these, endpoints never build SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.driver import ReadSource
from core.queries import core_execute, paginate
from db.models.accounts import (
    ApiKey,
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    PasswordResetToken,
    User,
    UserSession,
)
from forgeline.statuses.accounts import InvitationStatus, OrgRole


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_for_update(self, user_id: UUID) -> User | None:
        stmt = (
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_email(self, email: str) -> User | None:
        # Matches the functional unique index uq_users_email_lower.
        stmt = select(User).where(func.lower(User.email) == email.strip().lower())
        return (await self.session.execute(stmt)).scalar_one_or_none()


class OrganizationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, organization_id: UUID) -> Organization | None:
        return await self.session.get(Organization, organization_id)

    async def slug_taken(self, slug: str) -> bool:
        stmt = select(Organization.id).where(Organization.slug == slug)
        return (await self.session.execute(stmt)).first() is not None


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def role_of(self, organization_id: UUID, user_id: UUID) -> str | None:
        stmt = select(OrganizationMember.role).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.user_id == user_id,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, organization_id: UUID, member_id: UUID) -> OrganizationMember | None:
        stmt = select(OrganizationMember).where(
            OrganizationMember.id == member_id,
            OrganizationMember.organization_id == organization_id,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_user(self, organization_id: UUID, user_id: UUID) -> OrganizationMember | None:
        stmt = select(OrganizationMember).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.user_id == user_id,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def first_organization_of(self, user_id: UUID) -> UUID | None:
        stmt = (
            select(OrganizationMember.organization_id)
            .where(OrganizationMember.user_id == user_id)
            .order_by(OrganizationMember.created_at, OrganizationMember.id)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def organization_by_slug_for_user(self, slug: str, user_id: UUID) -> UUID | None:
        stmt = (
            select(Organization.id)
            .join(OrganizationMember, OrganizationMember.organization_id == Organization.id)
            .where(Organization.slug == slug, OrganizationMember.user_id == user_id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_owners(self, organization_id: UUID) -> list[UUID]:
        """Owner member IDs, row-locked so two concurrent demotions cannot both pass the
        last-owner check."""
        stmt = (
            select(OrganizationMember.id)
            .where(
                OrganizationMember.organization_id == organization_id,
                OrganizationMember.role == OrgRole.OWNER,
            )
            .order_by(OrganizationMember.id)
            .with_for_update()
        )
        return list((await self.session.execute(stmt)).scalars())

    async def page(
        self, organization_id: UUID, *, cursor: str | None, limit: int
    ) -> list[tuple[OrganizationMember, User]]:
        """One page (limit + 1 rows, newest first) of the members with their users."""
        members: Select[Any] = (
            select(OrganizationMember, User)  # type: ignore[assignment]
            .join(User, User.id == OrganizationMember.user_id)
            .where(OrganizationMember.organization_id == organization_id)
        )
        stmt = paginate(
            members,
            OrganizationMember.created_at,
            OrganizationMember.id,
            cursor=cursor,
            limit=limit,
        )
        return [(row[0], row[1]) for row in (await self.session.execute(stmt)).all()]


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_hash(self, token_hash: str) -> UserSession | None:
        stmt = select(UserSession).where(UserSession.token_hash == token_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, session_id: UUID) -> UserSession | None:
        return await self.session.get(UserSession, session_id)

    async def used_address(self, user_id: UUID, ip_address: str, since: datetime) -> bool:
        """Whether the user signed in from this address since `since` (a "known" address)."""
        stmt = (
            select(UserSession.id)
            .where(
                UserSession.user_id == user_id,
                UserSession.ip_address == ip_address,
                UserSession.created_at >= since,
            )
            .limit(1)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def revoke_all_for_user(self, user_id: UUID, now: datetime) -> None:
        await self.session.execute(
            update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_in_organization(
        self, user_id: UUID, organization_id: UUID, now: datetime
    ) -> None:
        await self.session.execute(
            update(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.organization_id == organization_id,
                UserSession.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )


class PasswordResetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, token_hash: str) -> PasswordResetToken | None:
        stmt = select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def consume(self, token_id: UUID, now: datetime) -> bool:
        """Mark the token used if it is still live; atomic, so a token works once."""
        stmt = (
            update(PasswordResetToken)
            .where(
                PasswordResetToken.id == token_id,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.revoked_at.is_(None),
                PasswordResetToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(PasswordResetToken.id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def revoke_outstanding(
        self, now: datetime, *, user_id: UUID | None = None, invitation_id: UUID | None = None
    ) -> int:
        stmt = update(PasswordResetToken).where(
            PasswordResetToken.used_at.is_(None), PasswordResetToken.revoked_at.is_(None)
        )
        if user_id is not None:
            stmt = stmt.where(PasswordResetToken.user_id == user_id)
        if invitation_id is not None:
            stmt = stmt.where(PasswordResetToken.invitation_id == invitation_id)
        result = await self.session.execute(stmt.values(revoked_at=now))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class InvitationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, invitation_id: UUID) -> OrganizationInvitation | None:
        return await self.session.get(OrganizationInvitation, invitation_id)

    async def pending_for(
        self, organization_id: UUID, user_id: UUID, now: datetime
    ) -> OrganizationInvitation | None:
        stmt = select(OrganizationInvitation).where(
            OrganizationInvitation.organization_id == organization_id,
            OrganizationInvitation.user_id == user_id,
            OrganizationInvitation.status == InvitationStatus.PENDING,
            OrganizationInvitation.expires_at > now,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def expire_stale(self, organization_id: UUID, user_id: UUID, now: datetime) -> None:
        """Close pending invitations past their expiry, so the person can be invited again."""
        await self.session.execute(
            update(OrganizationInvitation)
            .where(
                OrganizationInvitation.organization_id == organization_id,
                OrganizationInvitation.user_id == user_id,
                OrganizationInvitation.status == InvitationStatus.PENDING,
                OrganizationInvitation.expires_at <= now,
            )
            .values(status=InvitationStatus.EXPIRED, responded_at=now)
        )

    async def respond(
        self,
        invitation_id: UUID,
        now: datetime,
        status: str,
        *,
        user_id: UUID | None = None,
        organization_id: UUID | None = None,
    ) -> OrganizationInvitation | None:
        """Move a live pending invitation to `status`; None when it is not (or no longer) live.
        The row lock makes a concurrent second answer wait, then find it answered."""
        stmt = update(OrganizationInvitation).where(
            OrganizationInvitation.id == invitation_id,
            OrganizationInvitation.status == InvitationStatus.PENDING,
            OrganizationInvitation.expires_at > now,
        )
        if user_id is not None:
            stmt = stmt.where(OrganizationInvitation.user_id == user_id)
        if organization_id is not None:
            stmt = stmt.where(OrganizationInvitation.organization_id == organization_id)
        stmt = (
            stmt.values(status=status, responded_at=now)
            .returning(OrganizationInvitation)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def live_for_user(
        self, user_id: UUID, now: datetime
    ) -> list[tuple[OrganizationInvitation, Organization]]:
        stmt = (
            select(OrganizationInvitation, Organization)
            .join(Organization, Organization.id == OrganizationInvitation.organization_id)
            .where(
                OrganizationInvitation.user_id == user_id,
                OrganizationInvitation.status == InvitationStatus.PENDING,
                OrganizationInvitation.expires_at > now,
            )
            .order_by(OrganizationInvitation.created_at, OrganizationInvitation.id)
        )
        return [(i, o) for i, o in (await self.session.execute(stmt)).all()]

    async def live_for_organization(
        self, organization_id: UUID, now: datetime
    ) -> list[tuple[OrganizationInvitation, User]]:
        stmt = (
            select(OrganizationInvitation, User)
            .join(User, User.id == OrganizationInvitation.user_id)
            .where(
                OrganizationInvitation.organization_id == organization_id,
                OrganizationInvitation.status == InvitationStatus.PENDING,
                OrganizationInvitation.expires_at > now,
            )
            .order_by(OrganizationInvitation.created_at, OrganizationInvitation.id)
        )
        return [(i, u) for i, u in (await self.session.execute(stmt)).all()]


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.key_prefix == prefix)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, organization_id: UUID, key_id: UUID) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == organization_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(self, organization_id: UUID, *, cursor: str | None, limit: int) -> list[ApiKey]:
        """One page (limit + 1 rows, newest first) of the organization's keys."""
        stmt = paginate(
            select(ApiKey).where(ApiKey.organization_id == organization_id),
            ApiKey.created_at,
            ApiKey.id,
            cursor=cursor,
            limit=limit,
        )
        return list((await self.session.execute(stmt)).scalars())


# ---------------------------------------------------------------- hot path: bearer resolution
# One Core round trip per request (no ORM objects): the credential row, the holder's current
# membership role (NULL once they left) and the organization, joined so a deleted organization
# simply finds no row. Indexed lookups: uq key_prefix / uq token_hash, uq (organization, user).

_keys = ApiKey.__table__
_members = OrganizationMember.__table__
_orgs = Organization.__table__
_sessions = UserSession.__table__
_users = User.__table__

_KEY_AUTH_STMT = (
    select(
        _keys.c.id,
        _keys.c.organization_id,
        _keys.c.created_by_user_id,
        _keys.c.key_hash,
        _keys.c.scopes,
        _keys.c.rate_limit_per_minute,
        _keys.c.expires_at,
        _keys.c.revoked_at,
        _members.c.role.label("creator_role"),
    )
    .join(_orgs, _orgs.c.id == _keys.c.organization_id)
    .outerjoin(
        _members,
        (_members.c.organization_id == _keys.c.organization_id)
        & (_members.c.user_id == _keys.c.created_by_user_id),
    )
    .where(_keys.c.key_prefix == bindparam("prefix"))
)

_SESSION_AUTH_STMT = (
    select(
        _sessions.c.id,
        _sessions.c.user_id,
        _sessions.c.organization_id,
        _sessions.c.expires_at,
        _sessions.c.revoked_at,
        _users.c.is_active,
        _members.c.role,
    )
    .join(_users, _users.c.id == _sessions.c.user_id)
    .outerjoin(_orgs, _orgs.c.id == _sessions.c.organization_id)
    .outerjoin(
        _members,
        (_members.c.organization_id == _orgs.c.id) & (_members.c.user_id == _sessions.c.user_id),
    )
    .where(_sessions.c.token_hash == bindparam("token_hash"))
)


async def api_key_auth_row(connection: AsyncConnection, prefix: str) -> RowMapping | None:
    result = await connection.execute(_KEY_AUTH_STMT, {"prefix": prefix})
    return result.mappings().first()


async def session_auth_row(session: ReadSource, token_hash: str) -> RowMapping | None:
    result = await core_execute(session, _SESSION_AUTH_STMT, {"token_hash": token_hash})
    return result.mappings().first()
