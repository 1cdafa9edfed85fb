"""Password reset and set-password links (also sent with invitations): only a token's SHA-256
is stored, the raw token goes out by mail."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import invitations, security, throttle
from core.accounts.context import AccountContext, utcnow
from core.accounts.errors import InvalidToken
from core.accounts.repository import (
    InvitationRepository,
    MemberRepository,
    PasswordResetRepository,
    SessionRepository,
    UserRepository,
)
from core.audit.service import write_audit
from db.models.accounts import Notification, OrganizationInvitation, PasswordResetToken, User
from forgeline.statuses.accounts import InvitationStatus, TokenPurpose
from infra.mail import AccountMail

PASSWORD_RESET_TTL = timedelta(hours=1)


async def issue_reset_token(
    session: AsyncSession,
    ctx: AccountContext,
    user: User,
    ttl: timedelta,
    *,
    invitation: OrganizationInvitation | None = None,
) -> tuple[str, datetime]:
    """A set-password token: the raw value goes out by mail, only its SHA-256 is stored."""
    raw, token_hash = security.new_opaque_token(security.RESET_TOKEN_PREFIX)
    expires_at = invitation.expires_at if invitation is not None else utcnow() + ttl
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=token_hash,
            purpose=TokenPurpose.INVITATION
            if invitation is not None
            else TokenPurpose.PASSWORD_RESET,
            invitation_id=invitation.id if invitation is not None else None,
            expires_at=expires_at,
            requested_ip=ctx.origin.ip,
        )
    )
    await session.flush()
    return raw, expires_at


async def request_password_reset(session: AsyncSession, ctx: AccountContext, email: str) -> None:
    """Always succeeds from the caller's view, so it cannot be used to probe for accounts."""
    if ctx.throttles is not None:
        account, address = email.strip().lower(), ctx.address_key
        counts = await ctx.throttles.hit(
            (throttle.RESET_PER_ACCOUNT_ADDRESS, throttle.subject_digest(account, address)),
            (throttle.RESET_PER_ADDRESS, throttle.subject_digest(address)),
            (throttle.RESET_PER_ACCOUNT, throttle.subject_digest(account)),
        )
        throttle.raise_if_exceeded(counts, "Too many reset requests; retry later")
    user = await UserRepository(session).get_by_email(email)
    if user is None or not user.is_active:
        return
    raw, expires_at = await issue_reset_token(session, ctx, user, PASSWORD_RESET_TTL)
    await ctx.send(
        AccountMail(
            to=user.email,
            subject="Reset your Forgeline password",
            body=f"Open {ctx.reset_url(raw)} within one hour to choose a new password.\n"
            "If you did not ask for this, ignore this message.",
        ),
    )
    # The in-app notice says a link was sent; it holds no token.
    session.add(
        Notification(
            user_id=user.id,
            type="password_reset",
            title="Password reset requested",
            body="A link to choose a new password was sent to your e-mail address.",
            data={"expires_at": expires_at.isoformat()},
        )
    )
    organization_id = await MemberRepository(session).first_organization_of(user.id)
    await write_audit(
        session, None, ctx.origin, "user.password_reset_requested", "user", user.id,
        organization_id=organization_id, actor_user_id=user.id, severity="notice",
    )  # fmt: skip


async def confirm_password_reset(
    session: AsyncSession, ctx: AccountContext, token: str, new_password: str
) -> None:
    """Set the password, then withdraw every other outstanding link of the user and end their
    sessions. A link sent with an invitation also accepts that invitation."""
    now = utcnow()
    tokens = PasswordResetRepository(session)
    token_hash = security.sha256_hex(token)
    found = await tokens.find(token_hash)
    invalid = InvalidToken("The reset token is invalid, expired or already used")
    if found is None or not security.constant_time_equal(found.token_hash, token_hash):
        raise invalid
    # The user row lock orders concurrent confirmations of two links of one user: the second
    # finds its link withdrawn by the first (no deadlock on each other's token rows).
    user = await UserRepository(session).get_for_update(found.user_id)
    if user is None or not user.is_active or not await tokens.consume(found.id, now):
        raise invalid
    user.password_hash = security.hash_password(new_password)
    revoked = await tokens.revoke_outstanding(now, user_id=user.id)
    # Whoever knew the old password loses every session with it.
    await SessionRepository(session).revoke_all_for_user(user.id, now)
    joined: uuid.UUID | None = None
    if found.invitation_id is not None:
        invitation = await InvitationRepository(session).respond(
            found.invitation_id, now, InvitationStatus.ACCEPTED, user_id=user.id
        )
        if invitation is not None:
            joined = (await invitations.join(session, ctx.origin, invitation, now)).organization_id
    organization_id = joined or await MemberRepository(session).first_organization_of(user.id)
    await write_audit(
        session, None, ctx.origin, "user.password_reset", "user", user.id,
        new={"sessions_revoked": True, "links_revoked": revoked},
        organization_id=organization_id, actor_user_id=user.id, severity="notice",
    )  # fmt: skip
