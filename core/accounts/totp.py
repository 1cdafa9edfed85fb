"""Time-based one-time codes as a second factor: enroll, confirm, disable, and checking a code
so that it can be used once only."""

from __future__ import annotations

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import security, throttle
from core.accounts.context import AccountContext
from core.accounts.repository import SessionRepository, UserRepository
from core.audit.service import write_audit
from core.principal import Principal
from db.models.accounts import User
from forgeline.crypto import decrypt_str, encrypt_str
from forgeline.errors import Conflict, Unauthorized, ValidationFailed


async def session_user(session: AsyncSession, principal: Principal) -> User:
    assert principal.user_id is not None
    user = await UserRepository(session).get(principal.user_id)
    if user is None:
        raise Unauthorized("Invalid session")
    return user


async def accept_code(session: AsyncSession, user: User, secret: str, code: str) -> bool:
    """Check the code and burn its time step in one conditional UPDATE, so the same code
    cannot be replayed (not even by a concurrent request on another API process)."""
    step = security.verify_totp(secret, code)
    if step is None:
        return False
    burned = await session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    if burned.first() is None:
        return False
    user.totp_last_step = step
    return True


async def _check_code(
    session: AsyncSession, ctx: AccountContext, user: User, secret: str, code: str
) -> None:
    """A session holder gets 10 codes per 15 minutes (shared by every API process): a stolen
    session cannot walk the million codes to switch the second factor off."""
    key = (throttle.TOTP_PER_USER, throttle.subject_digest(str(user.id)))
    if ctx.throttles is not None:
        # End the request's read-only transaction first, so the counter's own transaction
        # never waits for a second pooled connection while this one is held.
        await session.commit()
        counts = await ctx.throttles.hit(key)
        throttle.raise_if_exceeded(counts, "Too many TOTP codes tried; retry later")
    if not await accept_code(session, user, secret, code):
        raise ValidationFailed("The TOTP code does not match", field="code")
    if ctx.throttles is not None:
        await ctx.throttles.clear(session, key)


async def enroll(
    session: AsyncSession, ctx: AccountContext, principal: Principal
) -> tuple[str, str]:
    """A new secret (stored encrypted) and its otpauth:// URI; enabled once a code confirms."""
    user = await session_user(session, principal)
    if user.totp_enabled:
        raise Conflict("TOTP is already enabled for this account")
    secret = security.new_totp_secret()
    user.totp_secret_encrypted = encrypt_str(secret, ctx.settings)
    await write_audit(session, principal, ctx.origin, "user.totp_enrolled", "user", user.id)
    return secret, security.totp_uri(secret, user.email)


async def confirm(
    session: AsyncSession, ctx: AccountContext, principal: Principal, code: str
) -> None:
    user = await session_user(session, principal)
    if user.totp_enabled:
        raise Conflict("TOTP is already enabled for this account")
    if not user.totp_secret_encrypted:
        raise Conflict("Enroll first: POST /v1/auth/totp/enroll")
    secret = decrypt_str(user.totp_secret_encrypted, ctx.settings)
    await _check_code(session, ctx, user, secret, code)
    user.totp_enabled = True
    assert principal.session_id is not None
    current = await SessionRepository(session).get(principal.session_id)
    if current is None:
        raise Unauthorized("Invalid or revoked session")
    current.mfa_verified = True
    await write_audit(
        session, principal, ctx.origin, "user.totp_enabled", "user", user.id,
        old={"totp_enabled": False}, new={"totp_enabled": True}, severity="notice",
    )  # fmt: skip


async def disable(
    session: AsyncSession, ctx: AccountContext, principal: Principal, code: str
) -> None:
    user = await session_user(session, principal)
    if not user.totp_enabled or not user.totp_secret_encrypted:
        raise Conflict("TOTP is not enabled for this account")
    secret = decrypt_str(user.totp_secret_encrypted, ctx.settings)
    await _check_code(session, ctx, user, secret, code)
    user.totp_enabled = False
    user.totp_secret_encrypted = None
    await write_audit(
        session, principal, ctx.origin, "user.totp_disabled", "user", user.id,
        old={"totp_enabled": True}, new={"totp_enabled": False}, severity="warning",
    )  # fmt: skip
